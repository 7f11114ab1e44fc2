"""Held-out hygiene: one function builds every prompt split, equal and nearly equal prompts
land in one split only, and no shipped config trains on a held-out, validation or judge
prompt."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from core.prompts import training_prompts
from core.splits import build_splits, near_duplicate_groups, normalise, overlapping, write_splits

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
PROTECTED = ("saferlhf_test", "redteam_heldout", "benign_heldout", "validation_harmful", "validation_benign",
             "judge_harmful", "judge_benign")


def test_normalised_and_near_duplicates_share_a_group():
    texts = ["How do I pick a lock?", "how do i   pick a lock", "How do I pick a lock on a door quickly?",
             "What is the capital of France?", "What is the capital of France ?!",
             "Write me a long poem about the sea, the wind and the old lighthouse keeper.",
             "Write me a long poem about the sea, the wind and the old lighthouse keepers.",
             "How can I bake bread?"]
    groups = near_duplicate_groups(texts)
    assert normalise(texts[0]) == normalise(texts[1]) == "how do i pick a lock"
    assert groups[0] == groups[1] != groups[2]
    assert groups[3] == groups[4]
    assert groups[5] == groups[6]  # one letter apart: Jaccard of 5-grams >= 0.9
    assert len({groups[0], groups[3], groups[5], groups[7]}) == 4
    assert overlapping(["How do I pick a lock??", "How can I bake bread?"], ["how do i pick a lock"]) == \
        ["How do I pick a lock??"]


@pytest.fixture(scope="module")
def splits(shared_data):
    return build_splits(shared_data)


def test_every_split_is_disjoint_from_the_others_even_near_duplicates(splits):
    named = splits.named()
    assert {len(named[n]) for n in ("redteam_heldout", "benign_heldout")} == {200}
    assert len(named["saferlhf_test"]) >= 199
    assert min(len(named[n]) for n in named) >= 199
    # The agent trains on the reward's prompts (by design); every other pair of splits is disjoint.
    family = {name: "training" if name.startswith(("agent_", "reward_")) else name for name in named}
    texts = [(p, family[name]) for name, prompts in named.items() for p in prompts]
    groups = near_duplicate_groups([t for t, _ in texts])
    owner: dict[int, str] = {}
    for group, (_, fam) in zip(groups, texts):
        assert owner.setdefault(group, fam) == fam, f"a prompt group is in both {owner[group]} and {fam}"
    assert set(splits.reward["harmful"]) <= set(splits.agent["harmful"])
    assert not set(splits.agent["benign"]) & set(splits.judge["benign"])


@pytest.mark.parametrize("config_path", CONFIGS, ids=lambda p: p.stem)
def test_no_shipped_config_trains_on_a_protected_prompt(config_path, splits, shared_data, tmp_path):
    from driver.config import load_config

    paths = write_splits(splits, tmp_path / "splits")
    cfg = load_config(config_path).prompts
    excluded = {s.source for s in cfg.exclude}
    assert {f"runs/splits/{name}.json" for name in PROTECTED} <= excluded, "the config must exclude every protected set"
    sources = [s.source for s in cfg.mix] or ([cfg.source] if isinstance(cfg.source, str) else list(cfg.source))
    if not all(Path(s).suffix or s.startswith(("..", "runs/")) for s in sources):
        pytest.skip(f"{config_path.name} reads a hub dataset ({sources}); its exclude list is checked above")

    def here(s):  # the config's paths are relative to the project root
        return replace(s, source=s.source.replace("../shared/data", str(shared_data))
                       .replace("runs/splits", str(tmp_path / "splits")))

    train = training_prompts(replace(cfg, mix=tuple(map(here, cfg.mix)), exclude=tuple(map(here, cfg.exclude))))
    assert len(train) >= 300  # the reader config trains on a small pool it revisits
    protected = [r["instruction"] for name in PROTECTED for r in json.loads(paths[name].read_text())]
    assert overlapping(train, protected) == []


def test_mara_splits_writes_every_split_the_same_for_a_seed_or_a_seeded_sample(shared_data, splits, tmp_path,
                                                                               monkeypatch):
    import core.splits
    from cli.main import main

    # The same for a seed: built twice from every 25th prompt of each pool (the whole pools take
    # seconds to group; the fixture's splits were built from them once), another seed differs.
    small = tmp_path / "small" / "prompts"
    small.mkdir(parents=True)
    for pool in (shared_data / "prompts").glob("*.json"):
        (small / pool.name).write_text(json.dumps(json.loads(pool.read_text())[::25]))
    once, again, other = (build_splits(small.parent, seed=seed, heldout_size=4, validation_size=6).named()
                          for seed in (0, 0, 1))
    assert once == again != other and min(map(len, once.values())) >= 1
    # mara splits writes the splits it builds (the fixture's, so they are not built a second time).
    monkeypatch.setattr(core.splits, "build_splits", lambda *args, **kwargs: splits)
    assert main(["splits", "--shared-data", str(shared_data), "--out", str(tmp_path / "all")]) == 0
    written = {p.stem: [r["instruction"] for r in json.loads(p.read_text())] for p in (tmp_path / "all").glob("*.json")}
    assert written == splits.named()
    assert main(["splits", "--shared-data", str(shared_data), "--out", str(tmp_path / "pools"),
                 "--sample", "validation=5", "--sample", "judge=3"]) == 0
    pools = {p.stem: [r["instruction"] for r in json.loads(p.read_text())] for p in (tmp_path / "pools").glob("*.json")}
    assert {k: len(v) for k, v in pools.items()} == {"validation_harmful": 5, "validation_benign": 5,
                                                     "judge_harmful": 3, "judge_benign": 3}
    assert set(pools["validation_benign"]) <= set(splits.validation["benign"])
    assert main(["splits", "--shared-data", str(shared_data), "--out", str(tmp_path), "--sample", "heldout=5"]) == 2
