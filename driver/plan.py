"""``python launch.py --dry-run``: what a run would start, where, and with how much memory.

Resolves the configuration, describes the cluster it would run on, and prints one line
per kind of actor: how many, which node (type) can take it, its CPUs / GPUs / custom
resources, and an estimate of its GPU memory and of the host memory it needs to load its
models; then the replay's memory at capacity. An actor lands only on a node whose GPU
memory and host memory hold it, so a plan whose reward models do not fit any GPU they
may land on is refused with what would fit. No model is loaded and no Ray actor is
started: model sizes come from each model's config (a local folder or the hub cache,
never the network), or, for a few well-known hub models that are not cached, from
``KNOWN_MODELS`` (said so in the plan).

The cluster is, in this order: the node types of a cluster launcher file (``--cluster
cluster.yaml``: each type up to its ``max_workers``), the running cluster named by
``--address`` / ``$RAY_ADDRESS`` (its live nodes), or this machine. A node's memory comes
from the machine itself (a connected cluster: each node reports its RAM and, through
``nvidia-smi``, its GPUs'; this machine: the same), or for a cluster file from its node
type's ``labels`` (``gpu_memory_gib``, ``memory_gib``), else from ``INSTANCE_TYPES`` by its
``node_config.InstanceType``; a node whose memory is unknown is not checked (said so).

Estimates (GiB = 2^30 bytes): an LLM's weights are parameters x bytes of its dtype; its KV
cache is rows x (prompt + new tokens) x layers x 2 x KV heads x head size x bytes, with
rows = the episodes a worker decodes at once and 512 prompt tokens; the learner holds the
actor, the twin critic and its target with gradients and Adam's two moments in float32,
plus two batches of states. The replay stores one state per transition in its dtype plus
14 bytes (replay/buffer.py). A GPU actor also holds a CUDA context (``CUDA_CONTEXT``); loading
a model takes host memory of its weights' size (``HOST_OVERHEAD`` more for the process).
"""

from __future__ import annotations

import math
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from core.config import AUTO
from core.state_features import state_size
from driver.components import local_cpus
from driver.config import RunConfig
from replay.buffer import transition_bytes

GIB = 2**30
MODEL_SCORERS = ("score-model", "seq-cls")  # scorer kinds that load a model of their own
PROMPT_TOKENS = 512  # prompt length assumed by the KV-cache estimate
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2,
               "auto": 4}  # resolved where the actor runs (envs/upstream.py): sized for the largest
CUDA_CONTEXT = 0.5 * GIB  # what a process's CUDA context and allocator hold besides its tensors
HOST_OVERHEAD = 1.0 * GIB  # a Python process with torch and transformers, before any model

# GPU memory as nvidia-smi reports it (memory.total), GiB.
GPU_MODELS = {"T4": 15.0, "V100": 16.0, "A10G": 22.49, "L4": 22.49, "L40S": 44.99, "A100-40GB": 40.0,
              "A100-80GB": 80.0, "H100": 79.65}
# AWS instance types: (GPU model or None, host memory GiB). On-demand prices per hour in us-west-2
# are in docs/CLUSTER.md.
INSTANCE_TYPES = {
    "g4dn.xlarge": ("T4", 16), "g4dn.2xlarge": ("T4", 32), "g4dn.12xlarge": ("T4", 192),
    "g5.xlarge": ("A10G", 16), "g5.2xlarge": ("A10G", 32), "g5.4xlarge": ("A10G", 64),
    "g5.8xlarge": ("A10G", 128), "g5.12xlarge": ("A10G", 192), "g5.48xlarge": ("A10G", 768),
    "g6.xlarge": ("L4", 16), "g6.2xlarge": ("L4", 32), "g6.12xlarge": ("L4", 192),
    "g6e.xlarge": ("L40S", 32), "g6e.2xlarge": ("L40S", 64), "g6e.12xlarge": ("L40S", 384),
    "p3.2xlarge": ("V100", 61), "p4d.24xlarge": ("A100-40GB", 1152), "p4de.24xlarge": ("A100-80GB", 1152),
    "p5.48xlarge": ("H100", 2048),
    "m5.2xlarge": (None, 32), "m5.4xlarge": (None, 64), "c5.4xlarge": (None, 32), "r5.2xlarge": (None, 64),
}

# (hidden size, parameters, layers, KV heads, head size) of hub models too big to expect in a
# cache: the paper's upstream models and its reward and cost models (their published configs).
KNOWN_MODELS = {
    "meta-llama/Meta-Llama-3-8B-Instruct": (4096, 8.03e9, 32, 8, 128),
    "meta-llama/Llama-3.1-8B-Instruct": (4096, 8.03e9, 32, 8, 128),
    "mistralai/Mistral-7B-Instruct-v0.2": (4096, 7.24e9, 32, 8, 128),
    "PKU-Alignment/beaver-7b-v1.0-reward": (4096, 6.74e9, 32, 32, 128),
    "PKU-Alignment/beaver-7b-v1.0-cost": (4096, 6.74e9, 32, 32, 128),
}


@dataclass(frozen=True)
class ModelFacts:
    name: str
    hidden_size: int
    parameters: float
    layers: int
    kv_heads: int
    head_size: int
    source: str  # "its config" or "MARA's table of known models"

    def weight_bytes(self, dtype: str) -> float:
        return self.parameters * DTYPE_BYTES[dtype]

    def kv_bytes(self, rows: int, tokens: int, dtype: str) -> float:
        return rows * tokens * self.layers * 2 * self.kv_heads * self.head_size * DTYPE_BYTES[dtype]


def model_facts(name: str) -> ModelFacts:
    """Sizes of a model from its config (folder or hub cache), else from ``KNOWN_MODELS``."""
    from envs.upstream import model_config

    try:
        c = model_config(name, local_files_only=True)
    except (OSError, ValueError) as err:
        if name in KNOWN_MODELS:
            return ModelFacts(name, *KNOWN_MODELS[name], source="MARA's table of known models")
        raise FileNotFoundError(f"model {name!r}: its config is neither local nor in the hub cache, and it is "
                                f"not one of the models the dry run knows ({', '.join(KNOWN_MODELS)}): {err}") from None
    d, layers = int(c.hidden_size), int(c.num_hidden_layers)
    heads = int(getattr(c, "num_attention_heads", 1))
    kv_heads = int(getattr(c, "num_key_value_heads", None) or heads)
    head_size = int(getattr(c, "head_dim", None) or d // heads)
    ff = int(getattr(c, "intermediate_size", 4 * d))
    vocab = int(getattr(c, "vocab_size", 32000))
    per_layer = d * heads * head_size * 2 + d * kv_heads * head_size * 2 + 3 * d * ff  # attention + gated MLP
    embeddings = vocab * d * (1 if getattr(c, "tie_word_embeddings", False) else 2)
    return ModelFacts(name, d, float(layers * per_layer + embeddings), layers, kv_heads, head_size, "its config")


# --------------------------------------------------------------------------- the cluster
@dataclass
class NodeKind:
    """A node of the running cluster, a node type of a cluster file (up to ``count``), or this machine."""

    name: str
    resources: dict[str, float]
    count: int = 1
    is_head: bool = False
    gpu_memory: float | None = None  # bytes of each of its GPUs (None: unknown, or no GPU)
    host_memory: float | None = None  # bytes of its RAM (None: unknown)
    memory_source: str = "unknown"  # where the two figures come from

    @property
    def gpu_name(self) -> str:
        """How the plan names this node's GPU: its memory and where that came from."""
        if self.gpu_memory is None:
            return f"the GPU of {self.name} (memory unknown)"
        return f"the {self.gpu_memory / GIB:.1f} GiB GPU of {self.name} ({self.memory_source})"


@dataclass
class Cluster:
    source: str
    kinds: list[NodeKind] = field(default_factory=list)


def describe_cluster(cfg: RunConfig, cluster_file: str | None = None) -> Cluster:
    import ray

    if cluster_file:
        return _cluster_from_file(Path(cluster_file))
    address = cfg.address or os.environ.get("RAY_ADDRESS", "")
    if ray.is_initialized():  # this process is connected already (a notebook, a test)
        return _cluster_from_nodes("the connected Ray cluster", ray.nodes())
    if address:
        ray.init(address=address, logging_level="ERROR")
        try:
            return _cluster_from_nodes(f"the running Ray cluster at {address}", ray.nodes())
        finally:
            ray.shutdown()
    gpu_memory, host_memory = machine_memory()
    return Cluster("this machine (a local Ray, as launch.py starts it)", [
        NodeKind("local", {"CPU": float(local_cpus(cfg)), "GPU": float(_local_gpus())}, is_head=True,
                 gpu_memory=gpu_memory, host_memory=host_memory, memory_source="this machine's")])


def machine_memory() -> tuple[float | None, float]:
    """(bytes of this machine's smallest GPU, or None without one; bytes of its RAM): the
    GPUs as ``nvidia-smi`` lists them, whichever of them this process may use."""
    import psutil

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
        gpus = [float(line) * 2**20 for line in out.split() if line.strip()]  # MiB
    except (OSError, subprocess.SubprocessError, ValueError):
        gpus = []
    return (min(gpus) if gpus else None), float(psutil.virtual_memory().total)


def _cluster_from_nodes(source: str, nodes: list[dict]) -> Cluster:
    """The live nodes, each with the memory it reports (a task on each node asks it)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    alive = [n for n in nodes if n.get("Alive")]
    ask = ray.remote(num_cpus=0)(machine_memory)
    memory = ray.get([ask.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
                      for n in alive])
    return Cluster(source, [NodeKind(n.get("NodeManagerAddress", "node"), dict(n["Resources"]),
                                     is_head="node:__internal_head__" in n["Resources"], gpu_memory=gpu,
                                     host_memory=host, memory_source="as the node reports it")
                            for n, (gpu, host) in zip(alive, memory)])


def _local_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0


def _cluster_from_file(path: Path) -> Cluster:
    if not path.is_file():
        raise FileNotFoundError(f"cluster file not found: {path}")
    spec = yaml.safe_load(path.read_text()) or {}
    types = spec.get("available_node_types")
    if not isinstance(types, dict) or spec.get("head_node_type") not in types:
        raise ValueError(f"{path}: needs available_node_types and a head_node_type among them")
    kinds = []
    for name, t in types.items():
        head = name == spec["head_node_type"]
        count = 1 if head else int(t.get("max_workers", spec.get("max_workers", 0)))
        resources = {k: float(v) for k, v in (t.get("resources") or {}).items()}
        kinds.append(NodeKind(name, resources, count, head, *_node_type_memory(name, t, resources.get("GPU", 0))))
    return Cluster(f"the node types of {path} (workers up to their max_workers)", kinds)


def _node_type_memory(name: str, node_type: dict, gpus: float) -> tuple[float | None, float | None, str]:
    """(GPU memory each, host memory, where from) of a cluster file's node type: its labels
    ``gpu_memory_gib`` / ``memory_gib``, else its instance type's row of ``INSTANCE_TYPES``."""
    labels = node_type.get("labels") or {}
    instance = (node_type.get("node_config") or {}).get("InstanceType", "")
    gpu_model, host_gib = INSTANCE_TYPES.get(instance, (None, None))
    try:
        gpu_gib = float(labels["gpu_memory_gib"]) if "gpu_memory_gib" in labels \
            else GPU_MODELS.get(gpu_model) if gpus else None
        host_gib = float(labels["memory_gib"]) if "memory_gib" in labels else host_gib
    except ValueError as err:
        raise ValueError(f"node type {name}: labels gpu_memory_gib / memory_gib must be numbers: {err}") from None
    source = "its labels" if {"gpu_memory_gib", "memory_gib"} & set(labels) \
        else f"{instance}: {gpu_model or 'no GPU'}, {host_gib} GiB" if instance in INSTANCE_TYPES else "unknown"
    return (gpu_gib * GIB if gpu_gib else None), (host_gib * GIB if host_gib else None), source


# --------------------------------------------------------------------------- the plan
@dataclass
class PlannedActor:
    role: str
    count: int
    request: dict[str, float]
    gpu_bytes: float
    placed_on: list[str]
    fits: int  # how many of them the cluster can hold at once
    note: str = ""
    host_bytes: float = 0.0  # host memory it needs to load its models
    too_small: list[str] = field(default_factory=list)  # why node kinds with the resources cannot hold it
    reward_models: int = 0  # reward models it holds together (a reward actor's)


def _fit(request: dict[str, float], kind: NodeKind) -> int:
    """How many actors with ``request`` one node of ``kind`` holds."""
    counts = [math.floor(kind.resources.get(r, 0) / v + 1e-9) for r, v in request.items() if v > 0]
    return min(counts) if counts else 10**6


def plan_run(cfg: RunConfig, cluster: Cluster) -> tuple[list[PlannedActor], dict]:
    upstream = model_facts(cfg.model.name)
    state_dim, dtype = state_size(cfg.rollout.state_features, upstream.hidden_size), cfg.model.dtype
    head_gpus = sum(k.resources.get("GPU", 0) for k in cluster.kinds if k.is_head)
    learner_gpu = cfg.learner.device.startswith("cuda") or (cfg.learner.device == "auto" and head_gpus >= 1)
    rows = min(cfg.rollout.batch_rows or cfg.rollout.episodes_per_call, cfg.rollout.episodes_per_call)
    llm_bytes = upstream.weight_bytes(dtype) + upstream.kv_bytes(rows, PROMPT_TOKENS + cfg.sampling.max_new_tokens,
                                                                  dtype)
    rollout_request = {"CPU": cfg.rollout.num_cpus, "GPU": cfg.rollout.num_gpus}
    if cfg.rollout.resource:
        rollout_request[cfg.rollout.resource] = 1
    model_scorers = [(i, spec) for i, spec in enumerate(cfg.reward.scorers) if spec.kind in MODEL_SCORERS]
    sizes, unknown = {}, []
    for i, spec in model_scorers:
        try:
            sizes[i] = model_facts(spec.path).weight_bytes(dtype)
        except FileNotFoundError:
            unknown.append(spec.path)
    inside = [i for i, spec in model_scorers if spec.num_gpus is None and i in sizes]
    # The reward actor loads the scorers it runs itself and, for the greedy baseline or the fluency
    # term, the upstream LLM (whose KV cache needs GPU memory, not host memory to load).
    hosts_upstream = cfg.reward.needs_upstream
    reward_bytes = sum(sizes[i] for i in inside) + (llm_bytes if hosts_upstream else 0.0)
    reward_host = sum(sizes[i] for i in inside) + (upstream.weight_bytes(dtype) if hosts_upstream else 0.0)
    reward_note = "sums " + ", ".join(f"{s.kind}:{s.path or '-'} x{s.weight:g}"
                                      + (" (in its own actor)" if s.num_gpus is not None else "")
                                      for s in cfg.reward.scorers)
    if unknown:
        reward_note += f" (size of {', '.join(unknown)} unknown: not cached, not in the table; not counted)"
    if hosts_upstream:
        reward_note += " + the upstream LLM (greedy baseline / fluency)"
    learner_note = "trains on " + ("a GPU" if learner_gpu else "CPU (the head node has no GPU)")
    replay_note = f"{cfg.replay.capacity:,} transitions"
    learner_cpus = cfg.learner.num_cpus
    learner_bytes = _learner_bytes(cfg, state_dim) if learner_gpu else 0.0
    per_transition = transition_bytes(state_dim, cfg.replay.state_dtype)
    replay_bytes = cfg.replay.capacity * per_transition
    if cfg.replay.in_learner:  # one actor is both (driver/learner_with_replay.py)
        learner_note += f"; holds the replay ({replay_note}) and samples it in its own process"
        learner_cpus += cfg.replay.num_cpus
        if cfg.replay.on_learner_device and learner_gpu:  # replay/device_buffer.py: a copy on the GPU
            learner_bytes += replay_bytes
            learner_note += ", with a copy on its GPU"
    # (role, count, request, GPU bytes, host bytes to load, on the head only, note)
    actors = [
        *([] if cfg.replay.in_learner else [("replay", 1, {"CPU": cfg.replay.num_cpus}, 0.0, 0.0, True, replay_note)]),
        ("learner", 1, {"CPU": learner_cpus, "GPU": 1.0 if learner_gpu else 0.0}, learner_bytes, 0.0, True,
         learner_note),
        ("reward actor", cfg.reward.num_actors, {"CPU": cfg.reward.num_cpus, "GPU": cfg.reward.num_gpus},
         reward_bytes if cfg.reward.num_gpus else 0.0, reward_host, False, reward_note),
        *[(f"scorer actor ({spec.path})", 1, {"CPU": cfg.reward.num_cpus, "GPU": spec.num_gpus},
           sizes.get(i, 0.0) if spec.num_gpus else 0.0, sizes.get(i, 0.0), False,
           f"{spec.kind}:{spec.path} x{spec.weight:g} in an actor of its own")
          for i, spec in model_scorers if spec.num_gpus is not None],
        ("rollout worker", _worker_count(cfg, cluster), rollout_request, llm_bytes if cfg.rollout.num_gpus else 0.0,
         upstream.weight_bytes(dtype), False,
         f"{upstream.name} ({dtype}; sizes from {upstream.source}), {rows} rows at once"),
    ]
    planned = []
    for role, count, request, gpu_bytes, host_bytes, on_head, note in actors:
        gpu_bytes += CUDA_CONTEXT if gpu_bytes else 0.0
        host_bytes += HOST_OVERHEAD if host_bytes else 0.0
        kinds = [k for k in cluster.kinds if (k.is_head or not on_head) and _fit(request, k) > 0]
        too_small = {k.name: why for k in kinds if (why := _too_small(request, gpu_bytes, host_bytes, k))}
        kinds = [k for k in kinds if k.name not in too_small]
        fits = sum(_fit(request, k) * k.count for k in kinds)
        planned.append(PlannedActor(role, count, request, gpu_bytes, [k.name for k in kinds], fits, note,
                                    host_bytes, list(too_small.values()),
                                    reward_models=len(inside) if role == "reward actor" else 0))
    replay = {"capacity": cfg.replay.capacity, "bytes_per_transition": per_transition,
              "state_dim": state_dim, "state_dtype": cfg.replay.state_dtype, "bytes": replay_bytes}
    return planned, replay


def _too_small(request: dict[str, float], gpu_bytes: float, host_bytes: float, kind: NodeKind) -> str:
    """Why a node of ``kind``, which has the resources, cannot hold the actor's memory ("": it can).
    An actor with g GPUs has g times a GPU's memory (a share of one below 1)."""
    gpus = request.get("GPU", 0)
    if gpu_bytes and gpus and kind.gpu_memory is not None and gpu_bytes > kind.gpu_memory * gpus:
        return (f"{kind.gpu_name} holds {kind.gpu_memory * gpus / GIB:.2f} GiB for it "
                f"({gpus:g} GPU), it needs {gpu_bytes / GIB:.2f} GiB")
    if host_bytes and kind.host_memory is not None and host_bytes > kind.host_memory:
        return (f"{kind.name} has {kind.host_memory / GIB:.1f} GiB of host memory ({kind.memory_source}), "
                f"loading its models needs {host_bytes / GIB:.1f} GiB")
    return ""


def _worker_count(cfg: RunConfig, cluster: Cluster) -> int:
    """Rollout workers of the plan: the number set, or for "auto" the units of the rollout
    resource the cluster holds (a cluster file: its node types at their max_workers)."""
    if cfg.rollout.num_workers != AUTO:
        return cfg.rollout.num_workers
    return int(sum(k.resources.get(cfg.rollout.resource, 0) * k.count for k in cluster.kinds))


def _learner_bytes(cfg: RunConfig, d: int) -> float:
    from core.networks import Actor, TwinCritic

    h = cfg.sac.hidden_size
    actor = sum(p.numel() for p in Actor(d, h).parameters())
    critic = sum(p.numel() for p in TwinCritic(d, h).parameters())
    weights = (actor + critic) * 4 * 4 + critic * 4  # weights, grads, Adam m and v; the target critic
    batches = 2 * cfg.sac.batch_size * d * 4 * 2  # states and next states of two batches (one prefetched)
    return float(weights + batches)


def problems(planned: list[PlannedActor], replay: dict, cluster: Cluster) -> list[str]:
    found = []
    for a in planned:
        if a.fits >= a.count:
            continue
        if a.too_small:  # nodes with the resources exist, but their memory is too small
            found.append(f"{a.count} {a.role}(s) asked for, but the cluster holds {a.fits}: "
                         + "; ".join(a.too_small) + f". What would fit: {_what_would_fit(a)}")
        else:
            found.append(f"{a.count} {a.role}(s) asked for, but the cluster holds {a.fits} "
                         f"(each needs {_resources(a.request)})")
    # Together: every actor's request at once, against the whole cluster.
    for resource in sorted({r for a in planned for r in a.request}):
        asked = sum(a.request.get(resource, 0) * a.count for a in planned)
        held = sum(k.resources.get(resource, 0) * k.count for k in cluster.kinds)
        if asked > held + 1e-9:
            found.append(f"the actors ask for {asked:g} {resource} in all, the cluster holds {held:g}")
    head_memory = next((k.resources.get("memory") for k in cluster.kinds if k.is_head), None)
    if head_memory and replay["bytes"] > head_memory:
        found.append(f"the replay at capacity ({replay['bytes'] / GIB:.1f} GiB) exceeds the head's memory "
                     f"({head_memory / GIB:.1f} GiB)")
    return found


def _what_would_fit(a: PlannedActor) -> str:
    """Suggestions for an actor whose memory no node it may land on holds."""
    need = a.gpu_bytes / max(a.request.get("GPU", 0), 1e-9) if a.request.get("GPU") else 0.0
    larger = sorted((memory, model) for model, memory in GPU_MODELS.items() if memory * GIB >= need)[:2]
    ideas = []
    if a.reward_models >= 2:
        ideas.append("each reward model in an actor of its own (`num_gpus: 1` on each scorer of reward.scorers, "
                     "actors/scorer_actor.py)")
    if need and larger:
        gpus = [f"{model} ({memory:.0f} GiB: "
                + ", ".join(name for name, (m, _) in INSTANCE_TYPES.items() if m == model)[:40] + ")"
                for memory, model in larger]
        ideas.append(f"a node type with a larger GPU: {' or '.join(gpus)}")
    if need:
        ideas.append("more GPUs for the actor with the model spread over them (num_gpus > 1, or "
                     "tensor_parallel_size with the vLLM backend)")
    if a.too_small and "host memory" in " ".join(a.too_small):
        ideas.append("a node type with more host memory")
    return "; or ".join(ideas) or "a larger node type"


def _resources(request: dict[str, float]) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in request.items() if v) or "nothing"


def format_plan(cfg: RunConfig, cluster: Cluster, planned: list[PlannedActor], replay: dict) -> str:
    lines = [f"dry run: nothing is loaded or started. Cluster: {cluster.source}"]
    for k in cluster.kinds:
        memory = ", ".join(part for part in (
            f"GPU memory {k.gpu_memory / GIB:.1f} GiB each" if k.gpu_memory else "",
            f"host memory {k.host_memory / GIB:.1f} GiB" if k.host_memory else "") if part) or "memory unknown"
        lines.append(f"  {'head ' if k.is_head else ''}{k.name} x{k.count}: {_resources(k.resources)}; {memory} "
                     f"({k.memory_source})")
    lines.append(f"mode {cfg.mode}; budget {cfg.budget.episodes or '-'} episodes, {cfg.budget.updates or '-'} "
                 f"updates, {cfg.budget.seconds or '-'} s")
    lines.append("| actor | count | on | each asks for | GPU memory each (est.) | host memory to load (est.) | what |")
    lines.append("| --- | ---: | --- | --- | ---: | ---: | --- |")
    for a in planned:
        memory = f"{a.gpu_bytes / GIB:.2f} GiB" if a.gpu_bytes else "-"
        host = f"{a.host_bytes / GIB:.1f} GiB" if a.host_bytes else "-"
        where = ", ".join(a.placed_on) or "NOWHERE"
        lines.append(f"| {a.role} | {a.count} | {where} | {_resources(a.request)} | {memory} | {host} | {a.note} |")
    lines.append(f"replay at capacity: {replay['capacity']:,} x {replay['bytes_per_transition']:,} bytes "
                 f"(states of size {replay['state_dim']}, {replay['state_dtype']}) = {replay['bytes'] / GIB:.2f} "
                 f"GiB of the head's memory")
    return "\n".join(lines)


def dry_run(cfg: RunConfig, cluster_file: str | None = None) -> tuple[str, list[str]]:
    """The plan as text, and the problems found (an empty list: the run fits)."""
    cluster = describe_cluster(cfg, cluster_file)
    planned, replay = plan_run(cfg, cluster)
    return format_plan(cfg, cluster, planned, replay), problems(planned, replay, cluster)
