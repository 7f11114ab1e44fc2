"""The one typed configuration of a training run: the root of the component configs.

``RunConfig`` holds one section per component (core/config.py) and the run's own settings.
Its defaults are the embedded laptop run: SmolLM2-135M-Instruct, the project's own prompt
set, the offline reward, local Ray, a few minutes on 2 cores. ``load_config`` reads a YAML
file (same nesting as these classes) and ``--set section.field=value`` overrides over those
defaults: a section the file names in part keeps the run's other values of it. Every value
is checked by its field's constraint, and a bad one is refused naming the field.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import TypeAdapter, ValidationError

from core.atomic import atomic_path
from core.config import (
    BudgetConfig,
    KLConfig,
    LearnerConfig,
    ModelConfig,
    PromptConfig,
    ReplayConfig,
    RewardConfig,
    RolloutConfig,
    SACConfig,
    SamplingConfig,
)
from core.sections import Choice, ConfigError, Flag, Int, Number, Text, readable, section

RUN_MODES = ("async", "sync")
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a run folder's name: never a path


@section
class RunConfig:
    """A whole training run."""

    model: ModelConfig = ModelConfig()
    sampling: SamplingConfig = SamplingConfig(max_new_tokens=48)
    kl: KLConfig = KLConfig()
    prompts: PromptConfig = PromptConfig()
    reward: RewardConfig = RewardConfig()
    rollout: RolloutConfig = RolloutConfig()
    replay: ReplayConfig = ReplayConfig(capacity=200_000, min_size_to_sample=512,
                                        samples_per_insert=4.0, error_buffer=4096.0)
    sac: SACConfig = SACConfig(batch_size=256)
    learner: LearnerConfig = LearnerConfig(publish_every=5, checkpoint_every=200)
    budget: BudgetConfig = BudgetConfig()
    output_dir: Text("run folders are created inside") = "runs"
    run_name: Text("the run folder's name (letters, digits, '.', '_', '-'); empty: a time stamp") = ""
    seed: Int(ge=0, doc="seeds the learner, the workers and the prompt order") = 0
    address: Text("Ray cluster to join (auto, ray://...); empty: $RAY_ADDRESS or a local cluster") = ""
    metrics_port: Int(ge=-1, le=65535, doc="Prometheus endpoint of the driver (0: a free port, -1: off)") = 0
    metrics_host: Text("address the driver's Prometheus endpoint binds") = "127.0.0.1"
    dashboard: Flag("start Ray's dashboard with a local cluster") = True
    progress_every_s: Number(gt=0, doc="seconds between two progress lines") = 5.0
    mode: Choice(RUN_MODES, "async: collection and learning never wait for each other (the design); sync: the "
                            "reference's loop (rounds of rollouts, then updates), kept to measure what async "
                            "buys") = "async"
    sync_updates_per_episode: Int(ge=1, doc="sync mode: learner updates per finished episode (the "
                                            "reference: 10)") = 10

    def __post_init__(self) -> None:
        if self.run_name and not RUN_NAME.fullmatch(self.run_name):
            raise ValueError(f"run_name must be a plain folder name (letters, digits, '.', '_', '-'; "
                             f"no path), got {self.run_name!r}")


# ---------------------------------------------------------------------------- YAML I/O
def to_dict(cfg) -> dict:
    """A section as plain YAML/JSON data (lists for tuples)."""
    return TypeAdapter(type(cfg)).dump_python(cfg, mode="json")


def from_dict(cls, data: dict | None, base=None):
    """Section ``cls`` from nested dicts: ``data``'s values over those of ``base`` (an
    instance of ``cls``; default: the class's defaults), a nested mapping merged into the
    section it names, so ``{"replay": {"capacity": 100000}}`` keeps the run's other replay
    settings (``RunConfig.replay``), not ``ReplayConfig``'s. Refusals name the field by its
    path (``budget.episodes``) in a ``ConfigError``."""
    merged = _merged(to_dict(base if base is not None else cls()), dict(data or {}))
    try:
        return TypeAdapter(cls).validate_python(merged)
    except ValidationError as err:
        raise ConfigError(readable(err, cls)) from None


def _merged(defaults: dict, data: dict) -> dict:
    """``data`` over ``defaults``; mappings merge, anything else (lists included) replaces."""
    out = dict(defaults)
    for key, value in data.items():
        inner = out.get(key)
        out[key] = _merged(inner, value) if isinstance(inner, dict) and isinstance(value, dict) else value
    return out


class _Loader(yaml.SafeLoader):
    """YAML as people write numbers: 1e-3 and 3E-4 are floats (YAML 1.1 reads them as strings
    unless they have a dot)."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


def yaml_value(text: str):
    """One value or document as YAML reads it (with ``_Loader``'s numbers)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> RunConfig:
    """A RunConfig from an optional YAML file plus ``section.field=value`` overrides."""
    data: dict = {}
    if path:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        data = yaml_value(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a YAML mapping")
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like section.field=value")
        _set_path(data, key.strip(), yaml_value(raw))
    return from_dict(RunConfig, _without_retired(data))


def _without_retired(data: dict) -> dict:
    """``data`` without the settings a run folder's config.yaml may hold from an earlier
    version: ``rollout.agent_hidden_size`` repeated ``sac.hidden_size``, which now sizes the
    rollout workers' agent too; dropped where the two agree, refused where they do not."""
    rollout = data.get("rollout")
    if isinstance(rollout, dict) and "agent_hidden_size" in rollout:
        sac = data.get("sac") if isinstance(data.get("sac"), dict) else {}
        if rollout["agent_hidden_size"] != sac.get("hidden_size", RunConfig().sac.hidden_size):
            raise ConfigError("rollout.agent_hidden_size is retired: sac.hidden_size sizes the agent everywhere")
        data = {**data, "rollout": {k: v for k, v in rollout.items() if k != "agent_hidden_size"}}
    return data


def _set_path(data: dict, key: str, value) -> None:
    """``section.field=value`` into the YAML data; a number picks an entry of a list, so that
    ``prompts.mix.2.limit=12000`` changes the third prompt source's limit and keeps the rest
    (a resume that changes the prompt mix, docs/RESULTS.md)."""
    *parents, leaf = key.split(".")
    node = data
    for depth, part in enumerate([*parents, leaf]):
        where = ".".join(parents[:depth]) or "the config"
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ValueError(f"{where} is a list of {len(node)}: {key!r} needs an index 0..{len(node) - 1}")
            part = int(part)
        elif not isinstance(node, dict):
            raise ValueError(f"{where} is {node!r}, not a section: cannot set {key!r}")
        if depth == len(parents):
            node[part] = value
        else:
            node = node.setdefault(part, {}) if isinstance(node, dict) else node[part]


def save_config(cfg: RunConfig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
