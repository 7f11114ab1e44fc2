"""The run configuration (driver/config.py over core/config.py): one definition of the
defaults, partial sections that keep the run's other values, numbers as YAML writes them,
and every field checked with its name."""

from __future__ import annotations

import re

import pytest

from core.config import Device, ReplayConfig, SACConfig, SamplingConfig
from core.sections import Choice, Int, Number, Text, check
from driver.config import RunConfig, load_config

RUN = RunConfig()  # the run's defaults


@pytest.mark.parametrize("override, changed, kept", [
    ("sampling.temperature=0.9", ("sampling", "temperature", 0.9), ("sampling", "max_new_tokens", 48)),
    ("replay.capacity=100000", ("replay", "capacity", 100_000), ("replay", "min_size_to_sample", 512)),
    ("replay.capacity=100000", ("replay", "capacity", 100_000), ("replay", "samples_per_insert", 4.0)),
    ("sac.actor_lr=0.001", ("sac", "actor_lr", 0.001), ("sac", "batch_size", 256)),
    ("learner.device=cpu", ("learner", "device", "cpu"), ("learner", "checkpoint_every", 200)),
])
def test_one_override_keeps_the_rest_of_the_runs_section(tmp_path, override, changed, kept):
    section, field, value = changed
    yaml_file = tmp_path / "partial.yaml"
    key, _, raw = override.partition("=")
    yaml_file.write_text(f"{section}:\n  {field}: {raw}\n")
    for cfg in (load_config(None, [override]), load_config(yaml_file)):  # --set and YAML alike
        assert getattr(getattr(cfg, section), field) == value
        section_kept, field_kept, value_kept = kept
        assert getattr(getattr(cfg, section_kept), field_kept) == value_kept
        assert getattr(getattr(RUN, section_kept), field_kept) == value_kept  # the run's default, not the class's
    # The component classes keep the reference defaults for use outside a run.
    assert SamplingConfig().max_new_tokens == 512 and ReplayConfig().min_size_to_sample == 65_536
    assert SACConfig().batch_size == 1024


def test_numbers_parse_as_yaml_writes_them():
    cfg = load_config(None, ["kl.coef=1e-3", "sac.critic_lr=3E-4", "reward.baseline=-1e1", "budget.seconds=90"])
    assert cfg.kl.coef == 0.001 and cfg.sac.critic_lr == 0.0003 and cfg.reward.baseline == -10.0
    assert isinstance(cfg.budget.seconds, float)
    assert load_config(None, ["reward.baseline=upstream-greedy"]).reward.baseline == "upstream-greedy"


@pytest.mark.parametrize("override, message", [
    ("budget.episodes=-3", "budget.episodes must be an int >= 0"),
    ("budget.seconds=-1", "budget.seconds must be a finite number >= 0"),
    ("budget.seconds=.nan", "budget.seconds must be a finite number"),
    ("budget.updates=-5", "budget.updates must be an int >= 0"),
    ("rollout.num_cpus=-1", "rollout.num_cpus must be a finite number >= 0"),
    ("rollout.torch_threads=-4", "rollout.torch_threads must be an int >= 1"),
    ("rollout.batch_rows=-1", "rollout.batch_rows must be an int >= 0"),
    ("rollout.state_features=prompt", "rollout.state_features must be one of"),
    ("reward.scale=.nan", "reward.scale must be a finite number > 0"),
    ("kl.coef=.nan", "kl.coef must be a finite number >= 0"),
    ("kl.coef=abc", "kl.coef must be a finite number >= 0, got 'abc'"),
    ("metrics_port=99999", "metrics_port must be an int in \\[-1, 65535\\]"),
    ("prompts.limit=-5", "prompts.limit must be an int >= 0"),
    ("run_name=../../../somewhere", "run_name must be a plain folder name"),
    ("run_name=.hidden", "run_name must be a plain folder name"),
    ("sampling.top_k=2.5", "sampling.top_k must be an int >= 1, got 2.5"),
    ("rollout.num_workers=0", "rollout.num_workers must be an int >= 1, got 0; also accepted: 'auto'"),
    ("model.vllm.kv_cache_memory_bytes=-1", "model.vllm.kv_cache_memory_bytes must be an int >= 1, got -1"),
    ("reward.baseline=abc", "reward.baseline must be a finite number, got 'abc'; also accepted: 'upstream-greedy'"),
    ("prompts.source=5", "prompts.source must name one or more prompt files or datasets, got 5"),
    ("model.name=' '", "model.name must be a non-empty string"),
    ("reward.scorers=[]", "reward.scorers must hold at least one scorer"),
    ("replay=3", "replay must be a mapping, got 3"),
    ("sampling.top_p=1.5", "sampling.top_p must be a finite number > 0 and <= 1"),
    ("replay.snapshot_every_s=-1", "replay.snapshot_every_s must be a finite number >= 0"),
    ("model.vllm.block_size=24", "model.vllm.block_size must be a power of two"),
    ("model.dtype=int8", "model.dtype must be one of"),
    ("reward.scorers=[{kind: magic}]", "reward.scorers\\[0\\].kind 'magic' is an unknown scorer kind"),
    ("budget={episodes: 0, updates: 0, seconds: 0}", "budget.episodes, updates, seconds: set at least one"),
    ("sac.batchsize=3", "unknown sac setting\\(s\\) \\['batchsize'\\]"),
    ("progress_every_s=0", "progress_every_s must be a finite number > 0"),
])
def test_invalid_values_are_refused_with_the_fields_name(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_the_config_round_trips(tmp_path):
    from driver.config import save_config

    cfg = load_config(None, ["kl.coef=1e-3", "run_name=x", "replay.capacity=1000"])
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


def test_a_number_in_an_override_picks_an_entry_of_a_list(tmp_path):
    """``--set prompts.mix.2.limit=12000`` changes one prompt source and keeps the others (how the
    shipped agent's training resumed with a new prompt mix, docs/RESULTS.md)."""
    yaml_file = tmp_path / "mix.yaml"
    yaml_file.write_text("prompts:\n  mix:\n    - {source: a.json, limit: 10}\n"
                         "    - {source: b.json, where: {source: x}, limit: 20}\n")
    cfg = load_config(yaml_file, ["prompts.mix.1.limit=30"])
    assert [(p.source, p.limit) for p in cfg.prompts.mix] == [("a.json", 10), ("b.json", 30)]
    assert cfg.prompts.mix[1].where == {"source": "x"}
    for bad, message in [("prompts.mix.2.limit=1", "prompts.mix is a list of 2: 'prompts.mix.2.limit' needs an "
                                                   "index 0..1"),
                         ("prompts.mix.first.limit=1", "needs an index 0..1"),
                         ("budget.seconds.x=1", "budget.seconds is 5, not a section")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            load_config(yaml_file, ["budget.seconds=5", bad])


def test_the_shipped_agents_training_chain_parses_and_ends_at_its_config():
    """scripts/reproduce_safety.sh trains the shipped agent in parts, each a ``launch.py`` with
    ``--set`` overrides; every part's settings load, and the last part's are the config's."""
    import shlex
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = (root / "scripts" / "reproduce_safety.sh").read_text().replace("\\\n", " ").replace("$RUN", "run")
    config = root / "configs" / "safety_smollm2.yaml"
    parts = [shlex.split(line) for line in script.splitlines() if line.startswith("python launch.py")]
    assert len(parts) == 4, "the shipped agent was trained in four parts (docs/RESULTS.md)"
    settings = []
    for words in parts:
        overrides = [words[i + 1] for i, word in enumerate(words) if word == "--set"]
        # A resume loads the run folder's config.yaml, which the first part wrote from the config file
        # with its overrides; the later parts' overrides then go on from the settings before them.
        keys = {o.split("=")[0] for o in overrides}
        settings = [o for o in settings if o.split("=")[0] not in keys] + overrides
        cfg = load_config(config, settings)
    assert cfg == load_config(config, [o for o in settings if o.startswith("run_name=")])
    assert cfg.budget.seconds == 7000 and cfg.prompts.mix[2].limit == 12000


def test_mara_config_prints_the_resolved_settings_with_their_descriptions(tmp_path, capsys):
    from cli.main import main
    from driver.config import save_config

    assert main(["config", "configs/safety_smollm2.yaml", "--set", "budget.seconds=60"]) == 0
    out = capsys.readouterr().out
    assert "budget:  # When the run stops" in out and "  seconds: 60.0  # wall-clock seconds of training" in out
    assert "  top_k: 40  # at most this many candidates" in out
    assert "  num_workers: 1  # a number, or auto: one worker per unit of `resource`" in out  # an "also" field
    run = tmp_path / "run"
    run.mkdir()
    save_config(load_config(None, ["run_name=x", "replay.capacity=1000"]), run / "config.yaml")
    assert main(["config", str(run)]) == 0  # a run folder: the settings it goes on with
    assert "  capacity: 1000  # ring-buffer size" in capsys.readouterr().out
    assert main(["config", "--set", "budget.episodes=-3"]) == 2
    assert "budget.episodes must be an int >= 0, got -3" in capsys.readouterr().err


@pytest.mark.parametrize("value, field_type, message", [
    (True, Int(ge=1), "n must be an int >= 1, got True"),  # a boolean is not a number
    (2.0, Int(ge=1), "n must be an int >= 1, got 2.0"),
    ("0.5", Number(gt=0, le=1), "n must be a finite number > 0 and <= 1, got '0.5'"),
    (float("inf"), Number(), "n must be a finite number, got inf"),
    (0, Int(ge=1, also=("auto",)), "n must be an int >= 1, got 0; also accepted: 'auto'"),
    ("gpu", Device(), "n must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
    (" ", Text(nonblank=True), "n must be a non-empty string, got ' '"),
    ("x", Choice(("a", "b")), "n must be one of ['a', 'b'], got 'x'"),
], ids=range(8))
def test_a_functions_arguments_are_checked_by_the_fields_own_types(value, field_type, message):
    """``check`` reads an argument as a section's field would: pydantic's strict constraints,
    refused in the same words."""
    with pytest.raises(ValueError, match=re.escape(message)):
        check("n", value, field_type)
    assert check("n", "auto", Int(ge=1, also=("auto",))) == "auto" and check("n", 1, Number()) == 1.0
    assert check("n", "cuda:1", Device()) == "cuda:1"
