"""The one typed configuration of a training run: the root of the component configs.

``RunConfig`` holds one frozen dataclass per component (core/config.py) and the run's own
settings. Its defaults are the embedded laptop run: SmolLM2-135M-Instruct, the project's
own prompt set, the offline reward, local Ray, a few minutes on 2 cores. Values come from
a YAML file (same nesting as these classes) and ``--set section.field=value`` overrides;
every value is checked in ``__post_init__`` and a bad one raises, it is never rewritten.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import yaml

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
    check_choice,
    check_int,
    check_number,
)

RUN_MODES = ("async", "sync")
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a run folder's name: never a path


@dataclass(frozen=True)
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
    output_dir: str = "runs"  # run folders are created inside
    run_name: str = ""  # default: a time stamp
    seed: int = 0
    address: str = ""  # Ray cluster to join ("auto", "ray://..."); empty = $RAY_ADDRESS or a local cluster
    metrics_port: int = 0  # Prometheus endpoint of the driver (0 = pick a free port, -1 = off)
    metrics_host: str = "127.0.0.1"
    dashboard: bool = True  # start Ray's dashboard with a local cluster
    progress_every_s: float = 5.0
    # async: collection and learning never wait for each other (the design). sync: the
    # reference's loop, kept to measure what async buys: a round of one rollout call per
    # worker, every episode scored and inserted, then sync_updates_per_episode learner
    # updates per episode while no rollout runs, then the next round.
    mode: str = "async"
    sync_updates_per_episode: int = 10  # the reference: 10 updates per finished episode

    def __post_init__(self) -> None:
        if self.rollout.agent_hidden_size != self.sac.hidden_size:
            raise ValueError(f"rollout.agent_hidden_size ({self.rollout.agent_hidden_size}) must equal "
                             f"sac.hidden_size ({self.sac.hidden_size})")
        if not isinstance(self.run_name, str) or (self.run_name and not RUN_NAME.fullmatch(self.run_name)):
            raise ValueError(f"run_name must be a plain folder name (letters, digits, '.', '_', '-'; "
                             f"no path), got {self.run_name!r}")
        check_int("seed", self.seed)
        check_int("metrics_port", self.metrics_port, -1, 65535)
        check_number("progress_every_s", self.progress_every_s, above=0)
        check_choice("mode", self.mode, RUN_MODES)
        check_int("sync_updates_per_episode", self.sync_updates_per_episode, 1)


# ---------------------------------------------------------------------------- YAML I/O
def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(cls, data: dict | None, base=None, where: str = ""):
    """Build dataclass ``cls`` from nested dicts, refusing unknown keys.

    Fields that ``data`` leaves out keep their value in ``base`` (an instance of ``cls``),
    or else the class default. A nested section starts from the enclosing default's value
    of that field: ``{"replay": {"capacity": 100000}}`` changes the run's replay capacity
    and keeps the run's other replay settings (``RunConfig.replay``), not ``ReplayConfig``'s.
    A bad value raises a ValueError naming the field with its section (``budget.episodes``).
    """
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown {where or cls.__name__} setting(s) {unknown}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        default = getattr(base, name) if base is not None else _field_default(fields[name])
        kwargs[name] = _convert(hints[name], value, f"{where}.{name}" if where else name, default)
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{where}.{err}" if where else str(err)) from None


def _field_default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _convert(hint, value, where: str, default=None):
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be a mapping, got {value!r}")
        return from_dict(hint, value, base=default if isinstance(default, hint) else None, where=where)
    if origin is tuple:  # tuple[ScorerSpec, ...]
        (inner, _) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be a list, got {value!r}")
        return tuple(_convert(inner, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:  # dict[str, str]
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if origin in (typing.Union, types.UnionType):  # float | str, int | None, str | tuple[str, ...]
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None and len(options) < len(typing.get_args(hint)):
            return None
        for option in options:  # the first type the value converts to
            try:
                return _convert(option, value, where)
            except ValueError:
                continue
        raise ValueError(f"{where} must be {' or '.join(getattr(o, '__name__', str(o)) for o in options)}, "
                         f"got {value!r}")
    if hint is float and isinstance(value, str):
        # YAML 1.1 reads 1e-3 (no dot) as a string: a float field takes it as the number it is.
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{where} must be a number, got {value!r}") from None
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        raise ValueError(f"{where} must be {hint.__name__}, got {value!r}")
    return value


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> RunConfig:
    """A RunConfig from an optional YAML file plus ``section.field=value`` overrides."""
    data: dict = {}
    if path:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a YAML mapping")
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like section.field=value")
        _set_path(data, key.strip(), yaml.safe_load(raw))
    return from_dict(RunConfig, data)


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
