"""The configuration of every component: one frozen section each (core/sections.py).

These are the leaves of a run's configuration tree (``driver.config.RunConfig`` holds one
of each); a component takes the objects of the sections it needs (its own, and for the
actors that host the upstream LLM also ``model``, ``sampling`` and ``kl``), never the tree. Every field
carries its constraint and its description (``mara config`` prints them); a bad value raises
a ``ConfigError`` (a ValueError) naming the field; a value is never rewritten.

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
from pathlib import Path

from pydantic import Field

from core.sections import Choice, Flag, Int, Number, Text, check, checked, section
from core.state_features import STATE_FEATURES

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_PROMPTS = str(DATA_DIR / "default_prompts.json")  # the project's own prompt set

# "auto", a setting's value where MARA chooses: model.dtype (bfloat16 where the hardware multiplies it
# natively, else float32: envs/upstream.py: resolve_dtype), model.mode (hybrid on a GPU, where a tree of
# candidates costs about one token's forward, lazy on a CPU: envs/decoder.py: resolve_mode),
# rollout.num_workers (one per unit of a custom resource: driver/scaling.py).
AUTO = "auto"
DTYPES = ("float32", "bfloat16", "float16")  # upstream LLM weights and activations
BACKENDS = ("transformers", "vllm")  # what runs the upstream LLM (envs/decoder.py or envs/vllm_backend.py)
DECODE_MODES = ("hybrid", "lazy", "eager")  # how candidate states are computed (envs/decoder.py)
KL_ESTIMATORS = ("kl", "abs", "mse", "full")
STATE_DTYPES = ("float16", "float32")  # replay storage of hidden states
# Scorer kinds of rewards/ (rewards.SCORER_KINDS maps each to its backend).
SCORER_KINDS = ("function", "score-model", "seq-cls", "embedding-bt", "http", "vllm-reward", "response-class",
                "answer-reader")
BASELINE_UPSTREAM_GREEDY = "upstream-greedy"


def Device(doc: str = ""):  # noqa: N802 - a field type
    """A torch device name MARA accepts."""
    return Text(doc, pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$", rule="'auto', 'cpu', 'cuda' or 'cuda:N'")


def check_sources(name: str, value):
    """One prompt source or several, each named."""
    sources = [value] if isinstance(value, str) else value
    if not isinstance(sources, (list, tuple)) or not sources or not all(isinstance(s, str) and s.strip()
                                                                        for s in sources):
        raise ValueError(f"{name} must name one or more prompt files or datasets, got {value!r}")
    return value


# ------------------------------------------------------------------------ the upstream LLM
@section
class VllmEngineConfig:
    """How the vLLM engines are built (envs/vllm_backend.py: one pooling engine for states,
    one generation engine for baselines, built on first use). The model and its dtype are
    ``ModelConfig``'s."""

    max_model_len: Int(ge=16, doc="context limit of each request; bounds the KV cache needed") = 2048
    gpu_memory_utilization: Number(gt=0, le=1, doc="per engine: share of GPU memory (CPU: of RAM, for its "
                                                   "process and KV cache)") = 0.2
    kv_cache_memory_bytes: Int(ge=1, also=(None,), doc="per engine: KV cache size, set explicitly (overrides "
                                                      "the share)") = None
    block_size: Int(ge=1, also=(None,), doc="KV block, a power of two; a request recomputes its tokens after the "
                                           "last full cached block. None: 32 on CPU (the smallest its attention "
                                           "accepts), vLLM's default on GPU") = None
    enforce_eager: Flag("no torch.compile / CUDA graphs: faster start-up, slower steps") = False
    enable_prefix_caching: Flag("what makes candidate requests cheap; keep on") = True
    max_num_seqs: Int(ge=1, also=(None,), doc="requests per engine step; None: vLLM's default") = None
    seed: Int(ge=0, doc="the engines' seed") = 0

    def __post_init__(self) -> None:
        if self.block_size is not None and self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size must be a power of two, got {self.block_size}")

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


@section
class ModelConfig:
    """The frozen upstream LLM that rollout workers host (and reward actors, for the
    upstream-greedy baseline)."""

    name: Text("'smollm2' (embedded), a hub id, a local folder or a .gguf file (transformers only)",
               nonblank=True) = "smollm2"
    dtype: Choice((*DTYPES, AUTO), "weights and activations; auto: bfloat16 where the hardware computes it "
                                         "natively (a CPU with AVX-512 BF16, most GPUs), else float32") = AUTO
    device: Device("auto: cuda when the worker was given a GPU, else cpu (vllm: where the output head runs)") = "auto"
    mode: Choice((*DECODE_MODES, AUTO), "candidate states: lazy (one at a time, as far as the agent goes), "
                                             "hybrid (the first alone, the rest together at the first rejection), "
                                             "eager (all at once); auto: hybrid on a GPU, lazy on a CPU "
                                             "(benchmarks/bench_generation.py)") = AUTO
    backend: Choice(BACKENDS, "what runs the LLM: transformers (KV-cache loop) or vllm (docs/VLLM.md)") \
        = "transformers"
    vllm: VllmEngineConfig = Field(default=VllmEngineConfig(), description="engine settings, with backend vllm")

    def __post_init__(self) -> None:
        if self.backend == "vllm" and self.name.endswith(".gguf"):
            raise ValueError(f"backend vllm needs a safetensors checkpoint (folder or hub id), not {self.name!r}")


# ------------------------------------------------------------------------ the MDP
@section
class SamplingConfig:
    """How the candidate set of a position is built, and how long answers may be."""

    temperature: Number(gt=0, doc="divides the logits before truncation") = 0.8
    top_k: Int(ge=1, doc="at most this many candidates") = 40
    top_p: Number(gt=0, le=1, doc="then the smallest prefix whose probability reaches top_p") = 0.95
    max_new_tokens: Int(ge=1, doc="episode length limit (paper: 512 training, 2048 eval)") = 512


@section
class KLConfig:
    """The per-decision KL penalty of Eq. 8: reward -= coef * estimator."""

    coef: Number(ge=0, doc="lambda (the reference's kl_ctl)") = 0.1
    estimator: Choice(KL_ESTIMATORS, "kl | abs | mse | full (the exact binary KL)") = "full"


# ------------------------------------------------------------------------ prompts
@section
class PromptSet:
    """One prompt source with its own field, filter and size (an entry of ``prompts.mix``)."""

    source: Text("JSON/JSONL/parquet/txt file, dataset id or folder", nonblank=True)
    column: Text("field holding the prompt", nonblank=True) = "instruction"
    split: Text("dataset split, for dataset sources") = "train"
    where: dict[str, str] = Field(default_factory=dict, description="keep rows with these field values, "
                                                                    "e.g. {source: helpful-base}")
    limit: Int(ge=0, doc="only the first N prompts (after where; 0 = all)") = 0


@section
class PromptConfig:
    """Where training prompts come from (see core/prompts.py for the accepted formats)."""

    source: checked(str | tuple[str, ...], check_sources, "JSON/JSONL/parquet/txt file, dataset id or folder; "
                                                          "or several, mixed") = DEFAULT_PROMPTS
    column: Text("field holding the prompt", nonblank=True) = "instruction"
    split: Text("dataset split, for dataset sources") = "train"
    limit: Int(ge=0, doc="use only the first N prompts of each source (0 = all)") = 0
    mix: tuple[PromptSet, ...] = Field(default=(), description="several sets, each with its own column / where / "
                                                               "limit; replaces the four above")
    exclude: tuple[PromptSet, ...] = Field(default=(), description="prompts never trained on (evaluation sets): "
                                                                   "removed from the training prompts")
    shuffle_seed: Int(ge=0, doc="prompts are shuffled once with this seed") = 0


# ------------------------------------------------------------------------ the reward
@section
class ScorerSpec:
    """One scorer in a reward configuration (rewards/ builds it)."""

    kind: Text("one of the scorer kinds: function, embedding-bt, score-model, seq-cls, http, vllm-reward, "
               "response-class")
    path: Text("model path / hub id / URL / module:function, depending on the kind") = ""
    weight: Number(doc="w_i in r = sum_i w_i * s_i - baseline") = 1.0
    options: dict = Field(default_factory=dict, description="kind-specific keyword arguments")
    num_gpus: Number(ge=0, also=(None,), doc="None: scored inside the reward actor (on its GPUs); a number: in "
                                             "an actor of its own with that many GPUs (actors/scorer_actor.py), for "
                                             "models that do not fit one GPU together") = None

    def __post_init__(self) -> None:
        if self.kind not in SCORER_KINDS:
            raise ValueError(f"kind {self.kind!r} is an unknown scorer kind; known: {sorted(SCORER_KINDS)}")


# The embedded offline reward head (rewards/data/reward_head.safetensors; docs/REWARD.md).
EMBEDDED_REWARD = ScorerSpec(kind="answer-reader", path="embedded")  # rewards/data/reader_reward.safetensors


@section
class RewardConfig:
    """The sentence reward r(x, y) = scale * (sum_i w_i * s_i(x, y) - baseline) (Eq. 13)."""

    scorers: tuple[ScorerSpec, ...] = Field(default=(EMBEDDED_REWARD,), description="the scorers s_i with their "
                                                                                   "weights (at least one)")
    baseline: Number(also=(BASELINE_UPSTREAM_GREEDY,), doc="a number, or upstream-greedy: the score of the "
                                                           "upstream's greedy answer") = 0.0
    scale: Number(gt=0, doc="multiplies the reward") = 1.0
    num_actors: Int(ge=1, doc="reward actors scoring finished answers in batches") = 1
    num_cpus: Number(ge=0, doc="Ray CPUs per reward actor") = 0.5
    num_gpus: Number(ge=0, doc="Ray GPUs per reward actor (7B reward models want one; so does the upstream LLM "
                               "it hosts for the upstream-greedy baseline, on a GPU cluster)") = 0.0
    max_failed_batches: Int(ge=1, doc="the run stops when this many scored batches in a row could not be "
                                      "scored") = 5
    fluency_weight: Number(ge=0, doc="w_f: r -= w_f * max(0, fluency_floor - mean log p_upstream(y | x)) "
                                     "(0 = off)") = 0.0
    fluency_floor: Number(doc="mean log-probability per token under the upstream below which an answer "
                              "pays") = -3.0
    postback: Number(ge=0, le=1, doc="g > 0: earlier accepted decisions also get g^n r(x, y) (the reference's "
                                     "postback_reward)") = 0.0
    score_tokens: Int(ge=0, doc="score the answer a user reads: the upstream continues each unfinished episode "
                                "greedily to this many tokens (the served length; the upstream-greedy baseline "
                                "is as long) before it is scored; 0 = score the episode as it is") = 0
    decline_sentences: Int(ge=0, doc="score an answer as it is served with `decline_sentences` N (an agent file's "
                                      "recommendation): an episode the agent stepped into (rejected a candidate) "
                                      "ends with its N-th sentence, after the continuation; 0 = off") = 0

    def __post_init__(self) -> None:
        if not self.scorers:
            raise ValueError("scorers must hold at least one scorer")

    @property
    def needs_greedy_baseline(self) -> bool:
        """The reward is relative to the upstream model's own greedy answer."""
        return self.baseline == BASELINE_UPSTREAM_GREEDY

    @property
    def needs_upstream(self) -> bool:
        """Scoring runs the upstream LLM (the greedy baseline, the continuation or the fluency term)."""
        return self.needs_greedy_baseline or self.fluency_weight > 0 or self.score_tokens > 0


# ------------------------------------------------------------------------ collection
@section
class RolloutConfig:
    """Rollout workers: each hosts an upstream LLM and runs episodes with the current actor."""

    num_workers: Int(ge=1, also=(AUTO,), doc="a number, or auto: one worker per unit of `resource` on the "
                                             "cluster's live nodes, followed as nodes join and leave; `mara scale "
                                             "RUN --workers N` changes it live") = 1
    num_cpus: Number(ge=0, doc="Ray CPUs per worker") = 1.0
    num_gpus: Number(ge=0, doc="Ray GPUs per worker; below 1 several workers share a GPU") = 0.0
    resource: Text("custom Ray resource each worker needs one unit of (cluster.yaml: rollout_slot)") = ""
    torch_threads: Int(ge=1, doc="intra-op threads per worker") = 1
    episodes_per_call: Int(ge=1, doc="prompts decoded in one call") = 4
    batch_rows: Int(ge=0, doc="episodes in the decoder's batch at once (0 = all of a call's); with fewer, the "
                              "others join as episodes end (continuous batching)") = 0
    max_unscored_calls: Int(ge=1, doc="per worker: decoded calls awaiting their reward before no new call is "
                                      "handed out") = 2
    max_failed_calls: Int(ge=1, doc="the run stops when this many rollout calls in a row raised") = 5
    max_restarts: Int(ge=-1, doc="Ray restarts of a dead worker (-1 = always)") = -1
    state_features: Choice(STATE_FEATURES, "what the agent reads at each decision: candidate (the paper's "
                                           "state, Eq. 4), then optionally the prompt's last hidden state, the "
                                           "candidate's rank and its log-probabilities (core/state_features.py)"
                           ) = "candidate"

    def __post_init__(self) -> None:
        if self.num_workers == AUTO and not self.resource:
            raise ValueError("num_workers 'auto' places one worker per unit of a custom resource: set resource "
                             "too (cluster.yaml's is rollout_slot)")


# ------------------------------------------------------------------------ replay
@section
class ReplayConfig:
    """Replay buffer and rate-limiter settings (DeepMind Reverb's SampleToInsertRatio).

    Units: one *insert* is one transition (one accept/reject decision), one *sample* is one
    transition drawn for the learner (a batch of 1024 counts 1024). ``error_buffer``: the
    tolerance, in sampled transitions, around the target ratio: inserts block when
    (inserts - min_size) * spi - samples > +error_buffer, samples block below -error_buffer.
    Reverb requires >= 2 * max(1, spi) (smaller deadlocks). Our inserts (whole episodes) and
    samples (whole batches) are chunks, so a buffer of at least (episode_len * spi + batch) / 2
    also lets one episode and one batch never block each other.
    """

    capacity: Int(ge=1, doc="ring-buffer size in transitions (reference: 1e6); the oldest are overwritten "
                            "first") = 1_000_000
    state_dtype: Choice(STATE_DTYPES, "storage of hidden states: float16 (2 bytes/feature) or float32 "
                                      "(bit-exact); batches are always float32") = "float16"
    min_size_to_sample: Int(ge=1, doc="no sampling until the buffer holds this many transitions (reference: 64 "
                                      "x batch 1024)") = 65_536
    samples_per_insert: Number(gt=0, doc="target sampled transitions per inserted one (the reference: 10 updates "
                                         "of batch 1024 per episode of ~300 decisions, ~34)") = 32.0
    error_buffer: Number(doc="tolerance around the target ratio, in sampled transitions (see above)") = 131_072.0
    seed: Int(ge=0, doc="seed of the sampling random generator") = 0
    num_cpus: Number(ge=0, doc="Ray CPUs of the replay actor (it mostly waits on asyncio; give it one on a "
                               "cluster with large states)") = 0.0
    in_learner: Flag("keep the buffer in the learner's process: the learner samples with a local call, a batch "
                     "is never serialised (large states, a fast learner; benchmarks/bench_learner.py)") = False
    on_learner_device: Flag("with in_learner: also keep the buffer on the learner's device and sample there "
                            "(replay/device_buffer.py); a GPU's memory, as much again as the host ring") = False
    snapshot_every_s: Number(ge=0, doc="seconds between two snapshots of the run (replay, checkpoint, prompt "
                                       "position, counters); 0: only when the run stops") = 60.0

    def __post_init__(self) -> None:
        if self.min_size_to_sample > self.capacity:
            raise ValueError(f"min_size_to_sample ({self.min_size_to_sample}) exceeds capacity "
                             f"({self.capacity}): sampling could never start")
        validate_ratio(self.samples_per_insert, self.error_buffer)
        if self.on_learner_device and not self.in_learner:
            raise ValueError("on_learner_device needs in_learner: true (only the learner's own process "
                             "can sample on its device)")


def validate_ratio(samples_per_insert: float, error_buffer: float) -> None:
    """Reverb's checks on SampleToInsertRatio arguments (shared with replay's limiter)."""
    check("samples_per_insert", samples_per_insert, Number(gt=0))
    check("error_buffer", error_buffer, Number())
    minimum = 2.0 * max(1.0, float(samples_per_insert))
    if error_buffer < minimum:
        raise ValueError(
            f"error_buffer ({error_buffer}) must be >= 2 * max(1, samples_per_insert) = "
            f"{minimum}; a smaller buffer can block inserts and samples at the same time "
            "(Reverb refuses it for the same reason)"
        )


# ------------------------------------------------------------------------ learning
@section
class SACConfig:
    """Discrete soft actor-critic hyper-parameters (reference defaults; MARA.md, "Learning")."""

    gamma: Number(ge=0, le=1, doc="discount factor of the critic target (Eq. 10)") = 0.99
    tau: Number(ge=0, le=1, doc="Polyak coefficient: target <- tau * online + (1 - tau) * target") = 0.005
    actor_lr: Number(gt=0, doc="Adam learning rate of the actor (alignment MLP)") = 3e-3
    critic_lr: Number(gt=0, doc="Adam learning rate of both critic heads") = 3e-3
    alpha_lr: Number(gt=0, doc="Adam learning rate of log(alpha)") = 3e-3
    grad_clip: Number(gt=0, doc="max global gradient norm per optimiser step") = 0.5
    init_alpha: Number(gt=0, doc="initial entropy temperature alpha (a warm start takes the agent file's)") = 0.01
    # The entropy of 2 actions is at most log 2, so the target's factor is at most 1.
    target_entropy_factor: Number(gt=0, le=1, doc="target entropy = factor * log(2)") = 0.6
    batch_size: Int(ge=1, doc="transitions per gradient update") = 1024
    hidden_size: Int(ge=1, doc="width of the first hidden layer of actor and critic heads") = 1024
    actor_warmup_updates: Int(ge=0, doc="with learner.init_agent: updates during which only the critics learn "
                                        "the loaded actor's values before the actor follows them") = 0

    @property
    def target_entropy(self) -> float:
        """Target policy entropy in nats: factor * log(|A|) with |A| = 2."""
        return self.target_entropy_factor * math.log(2.0)


@section
class LearnerConfig:
    """The learner process around the SAC maths."""

    publish_every: Int(ge=1, doc="gradient updates between weight publications to rollout workers") = 10
    checkpoint_every: Int(ge=1, doc="gradient updates between checkpoints in the run folder") = 1000
    keep_checkpoints: Int(ge=1, doc="how many most recent checkpoints to keep") = 2
    device: Device("auto (cuda if available, else cpu), cpu, cuda or cuda:N") = "auto"
    sample_timeout_s: Number(ge=0, doc="how long one replay.sample call may wait for data") = 1.0
    metrics_window: Int(ge=1, doc="number of recent updates averaged by metrics()") = 100
    num_cpus: Number(gt=0, doc="Ray CPUs of the learner (also its torch threads); it takes a GPU when there "
                               "is one") = 1.0
    init_agent: Text("an agent file the actor starts from (a warm start; its alpha too, the critics fresh: "
                     "sac.actor_warmup_updates); empty: random weights. A resumed run starts from its "
                     "checkpoint instead") = ""


# ------------------------------------------------------------------------ the run's end
@section
class BudgetConfig:
    """When the run stops: the first limit reached (0 = no limit on that count)."""

    episodes: Int(ge=0, doc="scored episodes") = 48
    updates: Int(ge=0, doc="learner updates") = 0
    seconds: Number(ge=0, doc="wall-clock seconds of training") = 600.0

    def __post_init__(self) -> None:
        if not (self.episodes or self.updates or self.seconds):
            raise ValueError("episodes, updates, seconds: set at least one of them (0 = no limit on that count)")
