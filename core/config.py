"""The configuration of every component: one frozen dataclass each.

These are the leaves of a run's configuration tree (``driver.config.RunConfig`` holds one
of each); a component takes the objects of the sections it needs (its own, and for the
actors that host the upstream LLM also ``model``, ``sampling`` and ``kl``), never the tree. Every value
is checked in ``__post_init__`` and a bad one raises a ValueError naming the field; a
value is never rewritten.

    model     ModelConfig          the frozen upstream LLM (and VllmEngineConfig for vLLM)
    sampling  SamplingConfig       how a position's candidate set is built (paper §3.1)
    kl        KLConfig             the per-decision KL penalty (Eq. 8)
    prompts   PromptConfig         where training prompts come from (PromptSet entries)
    reward    RewardConfig         the sentence reward (Eq. 13; ScorerSpec entries)
    rollout   RolloutConfig        rollout workers
    replay    ReplayConfig         replay buffer and Reverb-style rate limiter
    sac       SACConfig            discrete SAC maths (Eq. 9-11)
    learner   LearnerConfig        the learner process around it
    budget    BudgetConfig         when a run stops
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from core.state_features import STATE_FEATURES

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_PROMPTS = str(DATA_DIR / "default_prompts.json")  # the project's own prompt set

DTYPES = ("float32", "bfloat16", "float16")  # upstream LLM weights and activations
# "auto": bfloat16 where the hardware multiplies it natively (a GPU that supports it, a CPU with
# AVX-512 BF16 or AMX), else float32 (envs/upstream.py: resolve_dtype).
AUTO_DTYPE = "auto"
BACKENDS = ("transformers", "vllm")  # what runs the upstream LLM (envs/decoder.py or envs/vllm_backend.py)
DECODE_MODES = ("hybrid", "lazy", "eager")  # how candidate states are computed (envs/decoder.py)
# "auto": hybrid on a GPU, where a tree of candidates costs about one token's forward; lazy on a CPU,
# where each token fed costs compute (envs/decoder.py: resolve_mode).
AUTO_MODE = "auto"
KL_ESTIMATORS = ("kl", "abs", "mse", "full")
STATE_DTYPES = ("float16", "float32")  # replay storage of hidden states
# Scorer kinds of rewards/ (rewards.SCORER_KINDS maps each to its backend).
SCORER_KINDS = ("function", "score-model", "seq-cls", "embedding-bt", "http", "vllm-reward", "response-class")
BASELINE_UPSTREAM_GREEDY = "upstream-greedy"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# Field checks: each raises a ValueError that starts with the field's name (the run
# configuration's reader puts the section in front: "budget.episodes must be ...").
def check_int(name: str, value, minimum: int = 0, maximum: int | None = None) -> None:
    if not (_is_int(value) and value >= minimum and (maximum is None or value <= maximum)):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an int {bounds}, got {value!r}")


def check_number(name: str, value, minimum: float | None = None, *, above: float | None = None,
                 maximum: float | None = None) -> None:
    """A finite number (no NaN, no infinity) within the bounds given."""
    bounds = {">=": minimum, ">": above, "<=": maximum}
    rule = " and ".join(f"{op} {bound}" for op, bound in bounds.items() if bound is not None)
    ok = _is_number(value) and math.isfinite(value) and (minimum is None or value >= minimum) \
        and (above is None or value > above) and (maximum is None or value <= maximum)
    if not ok:
        raise ValueError(f"{name} must be a finite number{' ' + rule if rule else ''}, got {value!r}")


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")


# ------------------------------------------------------------------------ the upstream LLM
@dataclass(frozen=True)
class VllmEngineConfig:
    """How the vLLM engines are built (envs/vllm_backend.py: one pooling engine for states,
    one generation engine for baselines, built on first use). The model and its dtype are
    ``ModelConfig``'s."""

    max_model_len: int = 2048  # context limit of each request; bounds the KV cache needed
    gpu_memory_utilization: float = 0.2  # per engine: share of GPU memory (CPU: of RAM, for its process + KV cache)
    kv_cache_memory_bytes: int | None = None  # per engine: KV cache size, set explicitly (overrides the share)
    block_size: int | None = None  # KV block; a request recomputes its tokens after the last full cached
    # block. None: 32 on CPU (the smallest its attention accepts; vLLM's CPU default is 128), vLLM's default on GPU
    enforce_eager: bool = False  # no torch.compile / CUDA graphs: faster start-up, slower steps
    enable_prefix_caching: bool = True  # what makes candidate requests cheap; keep on
    max_num_seqs: int | None = None  # requests per engine step; None = vLLM's default
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("max_model_len", self.max_model_len, 16)
        check_number("gpu_memory_utilization", self.gpu_memory_utilization, above=0, maximum=1)
        if self.block_size is not None:
            check_int("block_size", self.block_size, 1)
            if self.block_size & (self.block_size - 1):
                raise ValueError(f"block_size must be a power of two, got {self.block_size}")
        if self.max_num_seqs is not None:
            check_int("max_num_seqs", self.max_num_seqs, 1)
        if self.kv_cache_memory_bytes is not None:
            check_int("kv_cache_memory_bytes", self.kv_cache_memory_bytes, 1)
        check_int("seed", self.seed)

    def engine_kwargs(self) -> dict:
        """Keyword arguments of ``vllm.LLM`` (all but the model and its dtype)."""
        import torch

        kwargs = dict(max_model_len=self.max_model_len, seed=self.seed,
                      gpu_memory_utilization=self.gpu_memory_utilization,
                      enforce_eager=self.enforce_eager, enable_prefix_caching=self.enable_prefix_caching)
        block_size = self.block_size
        if block_size is None and not torch.cuda.is_available():
            block_size = 32
        optional = {"block_size": block_size, "max_num_seqs": self.max_num_seqs,
                    "kv_cache_memory_bytes": self.kv_cache_memory_bytes}
        return {**kwargs, **{k: v for k, v in optional.items() if v is not None}}


@dataclass(frozen=True)
class ModelConfig:
    """The frozen upstream LLM that rollout workers host (and reward actors, for the
    upstream-greedy baseline)."""

    name: str = "smollm2"  # "smollm2" (embedded), a hub id, a local folder or a .gguf file (transformers only)
    # float32 | bfloat16 | float16 | auto. auto: bfloat16 where the hardware computes it natively, else
    # float32: a CPU with AVX-512 BF16 multiplies bfloat16 several times faster, and its states differ from
    # float32 ones by about a percent (docs/BENCHMARKS.md, benchmarks/bench_worker.py).
    dtype: str = AUTO_DTYPE
    device: str = "auto"  # auto = cuda when the worker was given a GPU, else cpu (vllm: where the output head runs)
    # candidate states: lazy (one at a time, as far as the agent goes) | hybrid (first candidate alone,
    # the rest together at the first rejection: at most 2 forward steps a position) | eager (all at once)
    # | auto: hybrid on a GPU, lazy on a CPU: a CPU's forward costs grow with the candidate tokens fed,
    # a GPU's barely do (benchmarks/bench_generation.py).
    mode: str = AUTO_MODE
    backend: str = "transformers"  # what runs the LLM: transformers (KV-cache loop) | vllm (docs/VLLM.md)
    vllm: VllmEngineConfig = VllmEngineConfig()  # engine settings, used with backend vllm

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"name must name a model, got {self.name!r}")
        check_choice("mode", self.mode, (*DECODE_MODES, AUTO_MODE))
        check_choice("dtype", self.dtype, (*DTYPES, AUTO_DTYPE))
        check_choice("backend", self.backend, BACKENDS)
        if self.device != "auto":
            check_device_name(self.device)
        if self.backend == "vllm" and self.name.endswith(".gguf"):
            raise ValueError(f"backend vllm needs a safetensors checkpoint (folder or hub id), not {self.name!r}")


# ------------------------------------------------------------------------ the MDP
@dataclass(frozen=True)
class SamplingConfig:
    """How the candidate set of a position is built, and how long answers may be."""

    temperature: float = 0.8  # divides the logits before truncation
    top_k: int = 40  # at most this many candidates
    top_p: float = 0.95  # then the smallest prefix whose probability reaches top_p
    max_new_tokens: int = 512  # episode length limit (paper: 512 training, 2048 eval)

    def __post_init__(self) -> None:
        check_number("temperature", self.temperature, above=0)
        check_int("top_k", self.top_k, 1)
        check_number("top_p", self.top_p, above=0, maximum=1)
        check_int("max_new_tokens", self.max_new_tokens, 1)


@dataclass(frozen=True)
class KLConfig:
    """The per-decision KL penalty of Eq. 8: reward -= coef * estimator."""

    coef: float = 0.1  # lambda (the reference's kl_ctl)
    estimator: str = "full"  # kl | abs | mse | full

    def __post_init__(self) -> None:
        check_choice("estimator", self.estimator, KL_ESTIMATORS)
        check_number("coef", self.coef, 0)


# ------------------------------------------------------------------------ prompts
@dataclass(frozen=True)
class PromptSet:
    """One prompt source with its own field, filter and size (an entry of ``prompts.mix``)."""

    source: str  # JSON/JSONL/parquet/txt file, dataset id or folder
    column: str = "instruction"  # field holding the prompt
    split: str = "train"  # dataset split, for dataset sources
    where: dict[str, str] = field(default_factory=dict)  # keep rows with these field values, e.g. {source: helpful-base}
    limit: int = 0  # only the first N prompts (after ``where``; 0 = all)

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source.strip():
            raise ValueError(f"source must name a prompt file or dataset, got {self.source!r}")
        _check_column(self.column)
        check_int("limit", self.limit)


@dataclass(frozen=True)
class PromptConfig:
    """Where training prompts come from (see core/prompts.py for the accepted formats)."""

    source: str | tuple[str, ...] = DEFAULT_PROMPTS  # JSON/JSONL/parquet/txt file, dataset id or folder; or several, mixed
    column: str = "instruction"  # field holding the prompt
    split: str = "train"  # dataset split, for dataset sources
    limit: int = 0  # use only the first N prompts of each source (0 = all)
    mix: tuple[PromptSet, ...] = ()  # several sets, each with its own column / where / limit; replaces the four above
    exclude: tuple[PromptSet, ...] = ()  # prompts never trained on (evaluation sets): removed from the training prompts
    shuffle_seed: int = 0  # prompts are shuffled once with this seed

    def __post_init__(self) -> None:
        sources = [self.source] if isinstance(self.source, str) else list(self.source)
        if not sources or not all(isinstance(s, str) and s.strip() for s in sources):
            raise ValueError(f"source must name one or more prompt files or datasets, got {self.source!r}")
        _check_column(self.column)
        check_int("limit", self.limit)
        check_int("shuffle_seed", self.shuffle_seed)


def _check_column(column) -> None:
    if not isinstance(column, str) or not column:
        raise ValueError(f"column must name the field holding the prompt, got {column!r}")


# ------------------------------------------------------------------------ the reward
@dataclass(frozen=True)
class ScorerSpec:
    """One scorer in a reward configuration (rewards/ builds it)."""

    kind: str  # one of SCORER_KINDS, e.g. "function", "embedding-bt", "score-model", "seq-cls", "http"
    path: str = ""  # model path / hub id / URL / "module:function", depending on the kind
    weight: float = 1.0  # w_i in r = sum_i w_i * s_i - baseline
    options: dict = field(default_factory=dict)  # kind-specific keyword arguments
    # None: scored inside the reward actor (on its GPUs, reward.num_gpus); a number: in an actor of
    # its own with that many GPUs (actors/scorer_actor.py), for models that do not fit one GPU together
    num_gpus: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in SCORER_KINDS:
            raise ValueError(f"kind {self.kind!r} is an unknown scorer kind; known: {sorted(SCORER_KINDS)}")
        check_number("weight", self.weight)
        if self.num_gpus is not None:
            check_number("num_gpus", self.num_gpus, 0)


# The embedded offline reward head (rewards/data/reward_head.safetensors; docs/REWARD.md).
EMBEDDED_REWARD = ScorerSpec(kind="embedding-bt", path="embedded")


@dataclass(frozen=True)
class RewardConfig:
    """The sentence reward r(x, y) = scale * (sum_i w_i * s_i(x, y) - baseline) (Eq. 13)."""

    scorers: tuple[ScorerSpec, ...] = (EMBEDDED_REWARD,)
    baseline: float | str = 0.0  # a number, or "upstream-greedy": the score of the upstream's greedy answer
    scale: float = 1.0
    num_actors: int = 1  # reward actors scoring finished answers in batches
    num_cpus: float = 0.5  # Ray CPUs per reward actor
    num_gpus: float = 0.0  # Ray GPUs per reward actor (7B reward models want one; so does the upstream
    # LLM each reward actor hosts for the upstream-greedy baseline, on a GPU cluster)
    max_failed_batches: int = 5  # the run stops when this many scored batches in a row could not be scored
    fluency_weight: float = 0.0  # w_f: r -= w_f * max(0, fluency_floor - mean log p_upstream(y | x)) (0 = off)
    fluency_floor: float = -3.0  # mean log-probability per token under the upstream below which an answer pays
    postback: float = 0.0  # g > 0: earlier accepted decisions also get g^n r(x, y) (the reference's postback_reward)

    def __post_init__(self) -> None:
        if not self.scorers:
            raise ValueError("scorers must name at least one scorer")
        if isinstance(self.baseline, str):
            if self.baseline != BASELINE_UPSTREAM_GREEDY:
                raise ValueError(f"baseline must be a number or {BASELINE_UPSTREAM_GREEDY!r}, got {self.baseline!r}")
        else:
            check_number("baseline", self.baseline)
        check_number("scale", self.scale, above=0)
        check_int("num_actors", self.num_actors, 1)
        check_number("num_cpus", self.num_cpus, 0)
        check_number("num_gpus", self.num_gpus, 0)
        check_int("max_failed_batches", self.max_failed_batches, 1)
        check_number("fluency_weight", self.fluency_weight, 0)
        check_number("fluency_floor", self.fluency_floor)
        check_number("postback", self.postback, 0, maximum=1)

    @property
    def needs_greedy_baseline(self) -> bool:
        """The reward is relative to the upstream model's own greedy answer."""
        return self.baseline == BASELINE_UPSTREAM_GREEDY

    @property
    def needs_upstream(self) -> bool:
        """Scoring runs the upstream LLM (for the greedy baseline or the fluency term)."""
        return self.needs_greedy_baseline or self.fluency_weight > 0


# ------------------------------------------------------------------------ collection
@dataclass(frozen=True)
class RolloutConfig:
    """Rollout workers: each hosts an upstream LLM and runs episodes with the current actor."""

    # A number, or "auto": one worker per unit of `resource` on the cluster's live nodes,
    # followed as nodes join and leave (driver/scaling.py); `mara scale RUN_DIR --workers N`
    # changes it while the run goes on.
    num_workers: int | str = 1
    num_cpus: float = 1.0  # Ray CPUs per worker
    num_gpus: float = 0.0  # Ray GPUs per worker; below 1 several workers share a GPU
    resource: str = ""  # custom Ray resource each worker needs one unit of (cluster.yaml: rollout_slot)
    torch_threads: int = 1  # intra-op threads per worker
    episodes_per_call: int = 4  # prompts decoded in one call
    # episodes in the decoder's batch at once (0 = all of a call's); with fewer, the others
    # join as episodes end (continuous batching), so the batch stays full until the call's
    # prompts run out (transformers backend)
    batch_rows: int = 0
    max_unscored_calls: int = 2  # per worker: decoded calls awaiting their reward before no new call is handed out
    max_failed_calls: int = 5  # the run stops when this many rollout calls in a row raised
    max_restarts: int = -1  # Ray restarts of a dead worker (-1 = always)
    agent_hidden_size: int = 1024  # must equal sac.hidden_size
    # What the agent reads at each decision: "candidate" (the paper's state, Eq. 4) or
    # "candidate+prompt" (followed by the prompt's last hidden state; core/state_features.py)
    state_features: str = "candidate"
    decision_delay_s: float = 0.0  # testing knob: sleep per decision to simulate a slow LLM

    def __post_init__(self) -> None:
        check_worker_count("num_workers", self.num_workers)
        if self.num_workers == AUTO and not self.resource:
            raise ValueError("num_workers 'auto' places one worker per unit of a custom resource: set resource "
                             "too (cluster.yaml's is rollout_slot)")
        for name in ("torch_threads", "episodes_per_call", "max_unscored_calls", "max_failed_calls",
                     "agent_hidden_size"):
            check_int(name, getattr(self, name), 1)
        check_number("num_cpus", self.num_cpus, 0)
        check_number("num_gpus", self.num_gpus, 0)
        check_int("max_restarts", self.max_restarts, -1)
        check_int("batch_rows", self.batch_rows, 0)
        check_number("decision_delay_s", self.decision_delay_s, 0)
        check_choice("state_features", self.state_features, STATE_FEATURES)


# ------------------------------------------------------------------------ replay
@dataclass(frozen=True)
class ReplayConfig:
    """Replay buffer and rate-limiter settings.

    Units: one *insert* is one transition (one accept/reject decision), one *sample* is one
    transition drawn for the learner (a batch of 1024 counts 1024).
    """

    # --- storage -------------------------------------------------------------------
    capacity: int = 1_000_000
    """Ring-buffer size in transitions (reference: 1e6). The oldest transitions are
    overwritten first."""

    state_dtype: str = "float16"
    """Storage dtype of hidden states: "float16" (2 bytes/feature, the default) or
    "float32" (bit-exact). Batches handed to the learner are always float32."""

    # --- rate limiter (DeepMind Reverb's SampleToInsertRatio) ------------------------
    min_size_to_sample: int = 65_536
    """No sampling until the buffer holds this many transitions (reference: 64 x batch
    1024)."""

    samples_per_insert: float = 32.0
    """Target sampled transitions per inserted transition. The reference runs 10
    updates of batch 1024 per finished episode of roughly 300 decisions: ~34."""

    error_buffer: float = 131_072.0
    """Tolerance, in sampled transitions, around the target ratio: inserts block when
    (inserts - min_size) * spi - samples > +error_buffer, samples block below
    -error_buffer. Reverb requires >= 2 * max(1, spi) (smaller deadlocks). Our inserts
    (whole episodes) and samples (whole batches) are chunks, so a buffer of at least
    (episode_len * spi + batch) / 2 also lets one episode and one batch never block each
    other; the default (4096 transitions' worth at spi 32, i.e. 128 batches of 1024)
    covers episodes up to ~4000 decisions."""

    seed: int = 0
    """Seed of the sampling random generator."""

    num_cpus: float = 0.0
    """Ray CPUs of the replay actor. 0 by default: it mostly waits (asyncio), and its copies
    are short; give it one on a cluster with large states."""

    in_learner: bool = False
    """Keep the buffer in the learner's process (an actor that is both, on the head node):
    inserts still arrive through Ray, but the learner samples with a local call, so a batch
    is not serialised, copied through the object store and deserialised. For large states
    (d = 4096: 16 MiB a batch of 1024 in fp16) with a fast (GPU) learner; measured in
    benchmarks/bench_learner.py."""

    on_learner_device: bool = False
    """With ``in_learner``: also keep the buffer on the learner's device (a GPU's memory, as
    much again as the host ring: capacity x d x 2 bytes in fp16) and sample there, so only the
    sampled indices cross to the device, not the batch (replay/device_buffer.py). On a CPU
    learner no memory is added: torch gathers from views of the host ring."""

    snapshot_every_s: float = 60.0
    """Seconds between two snapshots of the run (this replay, the learner's checkpoint, the
    prompt position and the counters), so that a killed run resumes from at most this long
    ago. 0: only when the run stops."""

    def __post_init__(self) -> None:
        if not _is_int(self.capacity) or self.capacity < 1:
            raise ValueError(f"capacity must be a positive int, got {self.capacity!r}")
        if self.state_dtype not in STATE_DTYPES:
            raise ValueError(f"state_dtype must be one of {STATE_DTYPES}, got {self.state_dtype!r}")
        if not _is_int(self.min_size_to_sample) or self.min_size_to_sample < 1:
            raise ValueError(
                f"min_size_to_sample must be a positive int, got {self.min_size_to_sample!r}"
            )
        if self.min_size_to_sample > self.capacity:
            raise ValueError(
                f"min_size_to_sample ({self.min_size_to_sample}) exceeds capacity "
                f"({self.capacity}): sampling could never start"
            )
        validate_ratio(self.samples_per_insert, self.error_buffer)
        check_int("seed", self.seed)
        check_number("num_cpus", self.num_cpus, 0)
        check_number("snapshot_every_s", self.snapshot_every_s, 0)
        if not isinstance(self.in_learner, bool):
            raise ValueError(f"in_learner must be true or false, got {self.in_learner!r}")
        if not isinstance(self.on_learner_device, bool):
            raise ValueError(f"on_learner_device must be true or false, got {self.on_learner_device!r}")
        if self.on_learner_device and not self.in_learner:
            raise ValueError("on_learner_device needs in_learner: true (only the learner's own process "
                             "can sample on its device)")


def validate_ratio(samples_per_insert: float, error_buffer: float) -> None:
    """Reverb's checks on SampleToInsertRatio arguments (shared with replay's limiter)."""
    if not _is_number(samples_per_insert):
        raise ValueError(f"samples_per_insert must be a number, got {samples_per_insert!r}")
    if not math.isfinite(samples_per_insert) or samples_per_insert <= 0:
        raise ValueError(f"samples_per_insert must be finite and > 0, got {samples_per_insert}")
    if not _is_number(error_buffer):
        raise ValueError(f"error_buffer must be a number, got {error_buffer!r}")
    if not math.isfinite(error_buffer):
        raise ValueError(f"error_buffer must be finite, got {error_buffer}")
    minimum = 2.0 * max(1.0, float(samples_per_insert))
    if error_buffer < minimum:
        raise ValueError(
            f"error_buffer ({error_buffer}) must be >= 2 * max(1, samples_per_insert) = "
            f"{minimum}; a smaller buffer can block inserts and samples at the same time "
            "(Reverb refuses it for the same reason)"
        )


# ------------------------------------------------------------------------ learning
@dataclass(frozen=True)
class SACConfig:
    """Discrete soft actor-critic hyper-parameters (reference defaults; MARA.md, "Learning")."""

    # --- returns and target network ---
    gamma: float = 0.99  # discount factor gamma of the critic target (Eq. 10)
    tau: float = 0.005  # Polyak coefficient: target <- tau * online + (1 - tau) * target

    # --- optimisers (Adam) ---
    actor_lr: float = 3e-3  # learning rate of the actor (alignment MLP)
    critic_lr: float = 3e-3  # learning rate of both critic heads
    alpha_lr: float = 3e-3  # learning rate of log(alpha)
    grad_clip: float = 0.5  # max global gradient norm per optimiser step

    # --- temperature ---
    # initial entropy temperature alpha (a warm start takes the agent file's, when it records one)
    init_alpha: float = 0.01
    target_entropy_factor: float = 0.6  # target entropy = factor * log(2) (2 actions)

    # --- shapes ---
    batch_size: int = 1024  # transitions per gradient update
    hidden_size: int = 1024  # width of the first hidden layer of actor and critic heads
    # --- warm starts (learner.init_agent) ---
    # gradient updates during which only the critics learn: the values of a loaded actor are
    # learnt before the actor follows them (fresh critics would otherwise pull it anywhere)
    actor_warmup_updates: int = 0

    def __post_init__(self) -> None:
        check_number("gamma", self.gamma, 0, maximum=1)
        check_number("tau", self.tau, 0, maximum=1)
        for name in ("actor_lr", "critic_lr", "alpha_lr", "grad_clip", "init_alpha"):
            check_number(name, getattr(self, name), above=0)
        # The entropy of 2 actions is at most log 2, so the target's factor is at most 1.
        check_number("target_entropy_factor", self.target_entropy_factor, above=0, maximum=1)
        for name in ("batch_size", "hidden_size"):
            check_int(name, getattr(self, name), 1)
        check_int("actor_warmup_updates", self.actor_warmup_updates, 0)

    @property
    def target_entropy(self) -> float:
        """Target policy entropy in nats: factor * log(|A|) with |A| = 2."""
        return self.target_entropy_factor * math.log(2.0)


@dataclass(frozen=True)
class LearnerConfig:
    """The learner process around the SAC maths."""

    publish_every: int = 10  # gradient updates between weight publications to rollout workers
    checkpoint_every: int = 1000  # gradient updates between checkpoints in the run folder
    keep_checkpoints: int = 2  # how many most recent checkpoints to keep in the run folder
    device: str = "auto"  # "auto" (cuda if available, else cpu), "cpu", "cuda" or "cuda:N"
    sample_timeout_s: float = 1.0  # how long one replay.sample call may wait for data
    metrics_window: int = 100  # number of recent updates averaged by metrics()
    num_cpus: float = 1.0  # Ray CPUs of the learner (also its torch threads); it takes a GPU when there is one
    # An agent file (core/agent_file.py) whose weights the actor starts from: a warm start, e.g. from the
    # shipped agent; the temperature starts at the one the file records (else sac.init_alpha), the
    # critics start fresh (see sac.actor_warmup_updates). "" = random weights. A
    # resumed run starts from its checkpoint instead.
    init_agent: str = ""

    def __post_init__(self) -> None:
        for name in ("publish_every", "checkpoint_every", "keep_checkpoints", "metrics_window"):
            check_int(name, getattr(self, name), 1)
        check_number("sample_timeout_s", self.sample_timeout_s, 0)
        check_device_name(self.device)
        check_number("num_cpus", self.num_cpus, above=0)


AUTO = "auto"


def check_worker_count(name: str, value) -> None:
    """A number of workers: an int >= 1, or "auto"."""
    if value != AUTO and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise ValueError(f"{name} must be an int >= 1 or 'auto', got {value!r}")


def check_device_name(device: str) -> None:
    """A torch device name MARA accepts: auto, cpu, cuda or cuda:N."""
    ok = isinstance(device, str) and (device in ("auto", "cpu", "cuda")
                                      or (device.startswith("cuda:") and device[5:].isdigit()))
    if not ok:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")


# ------------------------------------------------------------------------ the run's end
@dataclass(frozen=True)
class BudgetConfig:
    """When the run stops: the first limit reached (0 = no limit on that count)."""

    episodes: int = 48
    updates: int = 0
    seconds: float = 600.0

    def __post_init__(self) -> None:
        check_int("episodes", self.episodes)
        check_int("updates", self.updates)
        check_number("seconds", self.seconds, 0)
        if not (self.episodes or self.updates or self.seconds):
            raise ValueError("episodes, updates, seconds: set at least one of them (0 = no limit on that count)")
