"""The one typed configuration of a training run: a frozen dataclass per component.

Defaults are the embedded laptop run: SmolLM2-135M-Instruct, the project's own prompt
set, the offline reward, local Ray, a few minutes on 2 cores. Values come from a YAML
file (same nesting as these classes) and ``--set section.field=value`` overrides; every
value is checked in ``__post_init__`` and a bad one raises, it is never rewritten.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from envs.mdp import KLConfig, SamplingConfig
from envs.upstream import DTYPES
from envs.vllm_backend import BACKENDS, VllmEngineConfig
from learner.config import LearnerConfig, SACConfig
from mara.rewards.base import ScorerSpec
from replay.config import ReplayConfig

DEFAULT_PROMPTS = str(Path(__file__).resolve().parent / "data" / "default_prompts.json")


def _default_scorers() -> tuple[ScorerSpec, ...]:
    from mara.rewards import DEFAULT_REWARD

    return tuple(DEFAULT_REWARD)


@dataclass(frozen=True)
class ModelConfig:
    """The frozen upstream LLM each rollout worker hosts."""

    name: str = "smollm2"  # "smollm2" (embedded), a hub id, a local folder or a .gguf file (transformers only)
    dtype: str = "float32"  # float32 | bfloat16 | float16
    device: str = "auto"  # auto = cuda when the worker was given a GPU, else cpu (vllm: where the output head runs)
    mode: str = "lazy"  # candidate states: lazy (as far as the agent goes) | eager (all at once)
    backend: str = "transformers"  # what runs the LLM: transformers (KV-cache loop) | vllm (docs/VLLM.md)
    vllm: VllmEngineConfig = VllmEngineConfig()  # engine settings, used with backend vllm

    def __post_init__(self) -> None:
        if self.mode not in ("lazy", "eager"):
            raise ValueError(f"model.mode must be lazy or eager, got {self.mode!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"model.dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"model.backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.backend == "vllm" and self.name.endswith(".gguf"):
            raise ValueError(f"model.backend vllm needs a safetensors checkpoint (folder or hub id), not {self.name!r}")


@dataclass(frozen=True)
class PromptSet:
    """One prompt source with its own field, filter and size (an entry of ``prompts.mix``)."""

    source: str  # JSON/JSONL/parquet/txt file, dataset id or folder
    column: str = "instruction"  # field holding the prompt
    split: str = "train"  # dataset split, for dataset sources
    where: dict[str, str] = field(default_factory=dict)  # keep rows with these field values, e.g. {source: helpful-base}
    limit: int = 0  # only the first N prompts (after ``where``; 0 = all)


@dataclass(frozen=True)
class PromptConfig:
    """Where training prompts come from (see mara/prompts.py for the accepted formats)."""

    source: str | tuple[str, ...] = DEFAULT_PROMPTS  # JSON/JSONL/parquet/txt file, dataset id or folder; or several, mixed
    column: str = "instruction"  # field holding the prompt
    split: str = "train"  # dataset split, for dataset sources
    limit: int = 0  # use only the first N prompts of each source (0 = all)
    mix: tuple[PromptSet, ...] = ()  # several sets, each with its own column / where / limit; replaces the four above
    exclude: tuple[PromptSet, ...] = ()  # prompts never trained on (evaluation sets): removed from the training prompts
    shuffle_seed: int = 0  # prompts are shuffled once with this seed


@dataclass(frozen=True)
class RewardConfig:
    """The sentence reward r(x, y) = scale * (sum_i w_i * s_i(x, y) - baseline) (Eq. 13)."""

    scorers: tuple[ScorerSpec, ...] = field(default_factory=_default_scorers)
    baseline: float | str = 0.0  # a number, or "upstream-greedy": the score of the upstream's greedy answer
    scale: float = 1.0
    num_actors: int = 1  # reward actors scoring finished answers in batches
    num_cpus: float = 0.5  # Ray CPUs per reward actor
    num_gpus: float = 0.0  # Ray GPUs per reward actor (7B reward models want one)

    def __post_init__(self) -> None:
        if not self.scorers:
            raise ValueError("reward.scorers must name at least one scorer")
        if isinstance(self.baseline, str) and self.baseline != "upstream-greedy":
            raise ValueError(f"reward.baseline must be a number or 'upstream-greedy', got {self.baseline!r}")
        if self.num_actors < 1:
            raise ValueError("reward.num_actors must be >= 1")


@dataclass(frozen=True)
class RolloutConfig:
    """Rollout workers: each hosts an upstream LLM and runs episodes with the current actor."""

    num_workers: int = 1  # scale collection by raising this
    num_cpus: float = 1.0  # Ray CPUs per worker
    num_gpus: float = 0.0  # Ray GPUs per worker; below 1 several workers share a GPU
    resource: str = ""  # custom Ray resource each worker needs one unit of (cluster.yaml: rollout_slot)
    torch_threads: int = 1  # intra-op threads per worker
    episodes_per_call: int = 4  # prompts decoded together in one batched call
    max_inflight_rewards: int = 2  # scoring calls a worker lets run ahead before it waits
    max_restarts: int = -1  # Ray restarts of a dead worker (-1 = always)
    agent_hidden_size: int = 1024  # must equal sac.hidden_size
    decision_delay_s: float = 0.0  # testing knob: sleep per decision to simulate a slow LLM

    def __post_init__(self) -> None:
        if self.num_workers < 1 or self.episodes_per_call < 1 or self.max_inflight_rewards < 1:
            raise ValueError("rollout.num_workers, episodes_per_call and max_inflight_rewards must be >= 1")


@dataclass(frozen=True)
class BudgetConfig:
    """When the run stops: the first limit reached (0 = no limit on that count)."""

    episodes: int = 48
    updates: int = 0
    seconds: float = 600.0

    def __post_init__(self) -> None:
        if not (self.episodes or self.updates or self.seconds):
            raise ValueError("budget: set at least one of episodes, updates, seconds")


@dataclass(frozen=True)
class RunConfig:
    """A whole training run."""

    model: ModelConfig = ModelConfig()
    sampling: SamplingConfig = SamplingConfig(max_new_tokens=48)
    kl: KLConfig = KLConfig()
    prompts: PromptConfig = PromptConfig()
    reward: RewardConfig = field(default_factory=RewardConfig)
    rollout: RolloutConfig = RolloutConfig()
    replay: ReplayConfig = ReplayConfig(capacity=200_000, min_size_to_sample=512,
                                        samples_per_insert=4.0, error_buffer=4096.0)
    sac: SACConfig = SACConfig(batch_size=256)
    learner: LearnerConfig = LearnerConfig(publish_every=5, checkpoint_every=200)
    learner_num_cpus: float = 1.0  # Ray CPUs of the learner (it takes a GPU when there is one)
    budget: BudgetConfig = BudgetConfig()
    output_dir: str = "runs"  # run folders are created inside
    run_name: str = ""  # default: a time stamp
    seed: int = 0
    address: str = ""  # Ray cluster to join ("auto", "ray://..."); empty = $RAY_ADDRESS or a local cluster
    metrics_port: int = 0  # Prometheus endpoint of the driver (0 = pick a free port, -1 = off)
    metrics_host: str = "127.0.0.1"
    dashboard: bool = True  # start Ray's dashboard with a local cluster
    progress_every_s: float = 5.0

    def __post_init__(self) -> None:
        if self.rollout.agent_hidden_size != self.sac.hidden_size:
            raise ValueError(f"rollout.agent_hidden_size ({self.rollout.agent_hidden_size}) must equal "
                             f"sac.hidden_size ({self.sac.hidden_size})")


# ---------------------------------------------------------------------------- YAML I/O
def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(cls, data: dict | None):
    """Build dataclass ``cls`` from nested dicts, refusing unknown keys."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} setting(s) {unknown}; known: {sorted(names)}")
    kwargs = {name: _convert(hints[name], value, f"{cls.__name__}.{name}") for name, value in data.items()}
    return cls(**kwargs)


def _convert(hint, value, where: str):
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be a mapping, got {value!r}")
        return from_dict(hint, value)
    if origin is tuple:  # tuple[ScorerSpec, ...]
        (inner, _) = typing.get_args(hint)
        return tuple(_convert(inner, v, where) for v in value)
    if origin is dict:  # dict[str, str]
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if origin in (typing.Union, types.UnionType):  # float | str
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not isinstance(value, hint):
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
        node = data
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    return from_dict(RunConfig, data)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    from mara.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
