"""Saving and loading accept/reject agents (the SAC actor MLP).

Our format: one safetensors file whose metadata records the state dimension, the hidden
size and the upstream model the agent was trained with. We also import the reference
implementation's released actor checkpoints (``.pth`` state dicts with keys ``ln.*``,
``linear1.*``, ``linear2.*``, ``output_linear.*``), read with ``weights_only=True`` so
that no pickled code is ever executed.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from core.atomic import atomic_path
from core.config import SamplingConfig
from core.networks import Actor
from core.state_features import (PAPER_STATE, check_state_size, hidden_size_of, part_slices, parts,
                                 recorded_state_features, state_size)

FORMAT_VERSION = "mara-agent-1"
# The agent trained for the embedded SmolLM2-135M-Instruct (docs/RESULTS.md), used when no
# agent is named; "untrained" names a randomly initialised agent instead.
SHIPPED_AGENT = Path(__file__).resolve().parent / "data" / "agent_smollm2.safetensors"
UNTRAINED = "untrained"
# How an agent's accept/reject decisions are taken: accept when pi(accept | s) >= 0.5, or
# with probability pi(accept | s) (as in training). "agent": what the agent file recommends
# (its metadata's "decisions", written when it was evaluated and shipped), else greedy.
DECISIONS = ("greedy", "sampled")
AGENT_DECISIONS = "agent"
# How many tokens of an answer the agent decides: an agent trained on episodes of N tokens
# has never seen a state past them, so after its horizon the upstream continues alone
# (envs/generation.py). "all": every token; "agent": the file's metadata "horizon", written
# when it was evaluated and shipped, else all.
ALL_TOKENS = "all"
AGENT_HORIZON = "agent"
# How the upstream continues alone past the horizon: its most likely token (greedy), or its
# own sampling (pi_ref). Unless told, as the agent's decisions are taken.
CONTINUATIONS = ("greedy", "sampled")
# How sure the agent must be to step into an answer: greedy decisions accept a candidate while
# pi(accept | s) >= the accept threshold, and once the agent has rejected one, the rest of the
# answer at its mode (0.5), so that a decline it has started is carried on. 0.5: the agent's mode
# throughout; lower, the agent steps in only where it is surer that the upstream's token must go
# (pi(reject) > 1 - threshold), and more answers stay as the upstream writes them. "agent": the
# file's metadata "accept_threshold", written when it was evaluated and shipped, else 0.5.
# Sampled decisions draw with probability pi(accept | s) whatever it is.
MODE_THRESHOLD = 0.5
AGENT_THRESHOLD = "agent"
# Which requests the agent may touch: a request gate reads the request alone and passes on those
# it does not find harmful, which the upstream then answers alone (as past the horizon; the
# upstream's greedy answer under greedy decisions). "off": every request; "embedded": the gate
# g(x) of the shipped safety reward (rewards/request_gate.py); or a response-class head file.
# "agent": the file's metadata "request_gate", written when it was evaluated and shipped, else off.
NO_GATE = "off"
EMBEDDED_GATE = "embedded"
AGENT_GATE = "agent"
# Where a decline ends: once the agent has rejected a candidate (stepped into the answer), the
# answer ends with its N-th sentence, before the upstream's continuation can take the decline back
# ("However, I can ..."). "off": answers run to their length. "agent": the file's metadata
# "decline_sentences", written when it was evaluated and shipped, else off.
NO_CUT = "off"
AGENT_CUT = "agent"
# The candidate set an agent was trained on (its metadata's "candidates": temperature, top-k and
# top-p of ``SamplingConfig``): the set it judges wherever it answers, whatever a request's
# sampling settings. Files without the record (reference .pth files) take the paper's defaults.
CANDIDATES = "candidates"
CANDIDATE_FIELDS = ("temperature", "top_k", "top_p")


class AgentFileError(ValueError):
    """An agent file is missing, unreadable or not an actor state dict."""


def save_agent(actor: Actor, path: str | Path, upstream_model: str = "", **extra: str) -> Path:
    """Write the actor atomically as safetensors with its metadata."""
    path = Path(path)
    metadata = {
        "format": FORMAT_VERSION,
        "state_dim": str(actor.state_dim),
        "hidden_size": str(actor.hidden_size),
        "upstream_model": upstream_model,
        **{k: v if isinstance(v, str) else json.dumps(v) for k, v in extra.items()},
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in actor.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def update_agent_metadata(path: str | Path, **values: str) -> dict[str, str]:
    """Add or change metadata entries of a safetensors agent (rewritten atomically); returns
    the new metadata. The weights are copied unchanged."""
    path = _existing(path)
    metadata = read_agent_metadata(path)
    if metadata.get("format") != FORMAT_VERSION:
        raise AgentFileError(f"{path} is not a {FORMAT_VERSION} agent file: its metadata cannot be updated")
    metadata.update(values)
    tensors = load_file(str(path))
    mode = path.stat().st_mode & 0o777
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
        os.chmod(tmp, mode)  # the file keeps its permissions
    return metadata


def read_agent_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a safetensors agent ({} for reference .pth files)."""
    path = _existing(path)
    if path.suffix != ".safetensors":
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise AgentFileError(f"cannot read agent file {path}: {err}") from err


def recommended(agent: str | Path | None, key: str, default, parse, what: str):
    """The agent file's recommended ``key`` read by ``parse`` (``default`` for untrained agents
    and files without one); a file cannot defer to itself ("agent")."""
    if agent is None or str(agent) == UNTRAINED:
        return default
    value = read_agent_metadata(agent).get(key)
    if value is None:
        return default
    try:
        parsed = parse(value)
        if parsed in (AGENT_DECISIONS, AGENT_HORIZON, AGENT_THRESHOLD, AGENT_GATE, AGENT_CUT):
            raise ValueError(value)
    except ValueError as err:
        raise AgentFileError(f"agent file {agent} recommends an unknown {what} {value!r}") from err
    return parsed


def parse_decisions(decisions: str) -> str:
    if decisions not in (AGENT_DECISIONS, *DECISIONS):
        raise ValueError(f"decisions must be one of {(AGENT_DECISIONS, *DECISIONS)}, got {decisions!r}")
    return decisions


def resolve_decisions(decisions: str, agent: str | Path | None) -> str:
    """"greedy" or "sampled": ``decisions`` itself, or for "agent" the agent file's
    recommendation (greedy when it has none: untrained agents, reference .pth files)."""
    if parse_decisions(decisions) != AGENT_DECISIONS:
        return decisions
    return recommended(agent, "decisions", "greedy", parse_decisions, "decision rule")


def parse_accept_threshold(value: str | float | None, name: str = "accept threshold") -> float | str:
    """An accept threshold as given (command line, settings, metadata): a number in (0, 1], or
    "agent"; None means "agent". A refusal starts with ``name``."""
    if value is None or value == AGENT_THRESHOLD:
        return AGENT_THRESHOLD
    try:
        threshold = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        threshold = float("nan")
    if not 0 < threshold <= 1:  # NaN fails too
        raise ValueError(f"{name} must be a number in (0, 1] or {AGENT_THRESHOLD!r}, got {value!r}")
    return threshold


def resolve_accept_threshold(value: str | float | None, agent: str | Path | None) -> float:
    """The threshold of greedy decisions: ``value`` itself, or for "agent" (and None) the agent
    file's recommendation (0.5, the agent's mode, when it has none)."""
    threshold = parse_accept_threshold(value)
    if threshold != AGENT_THRESHOLD:
        return threshold
    return recommended(agent, "accept_threshold", MODE_THRESHOLD, parse_accept_threshold, "accept threshold")


def parse_request_gate(value: str | None, name: str = "request gate") -> str:
    """A request gate as given (command line, settings, metadata): "off", "embedded", a head
    file, or "agent"; None means "agent". A refusal starts with ``name``."""
    if value is None:
        return AGENT_GATE
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be {NO_GATE!r}, {EMBEDDED_GATE!r}, {AGENT_GATE!r} or a response-class "
                         f"head file, got {value!r}")
    return value


def resolve_request_gate(value: str | None, agent: str | Path | None) -> str:
    """"off", "embedded" or a head file: ``value`` itself, or for "agent" (and None) the agent
    file's recommendation (off when it has none)."""
    gate = parse_request_gate(value)
    if gate != AGENT_GATE:
        return gate
    return recommended(agent, "request_gate", NO_GATE, parse_request_gate, "request gate")


def parse_decline_sentences(value: str | int | None, name: str = "decline sentences") -> int | str:
    """Where a decline ends as given (command line, settings, metadata): a number of sentences
    >= 1, "off" or "agent"; None means "agent". A refusal starts with ``name``."""
    if value is None or value in (NO_CUT, AGENT_CUT):
        return AGENT_CUT if value is None else value
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) < 1:
        raise ValueError(f"{name} must be a number of sentences >= 1, {NO_CUT!r} or {AGENT_CUT!r}, got {value!r}")
    return int(text)


def resolve_decline_sentences(value: str | int | None, agent: str | Path | None) -> int | None:
    """The sentences an answer the agent stepped into keeps (None: all): ``value`` itself, or
    for "agent" (and None) the agent file's recommendation (off when it has none)."""
    sentences = parse_decline_sentences(value)
    if sentences == AGENT_CUT:
        sentences = recommended(agent, "decline_sentences", NO_CUT, parse_decline_sentences, "decline sentences")
    return None if sentences == NO_CUT else sentences


def parse_horizon(value: str | int | None, name: str = "horizon") -> int | str | None:
    """A horizon as given (command line, settings, metadata): a token count >= 0, "all" or
    "agent"; None means "agent". A refusal starts with ``name``."""
    if value is None or value in (ALL_TOKENS, AGENT_HORIZON):
        return value
    text = str(value).strip()
    if not text.isdigit():
        raise ValueError(f"{name} must be a number of tokens >= 0, {ALL_TOKENS!r} or {AGENT_HORIZON!r}, "
                         f"got {value!r}")
    return int(text)


def resolve_horizon(horizon: str | int | None, agent: str | Path | None) -> int | None:
    """The number of tokens the agent decides (None: all): ``horizon`` itself, or for
    "agent" (and None) the agent file's recommendation (all when it has none)."""
    horizon = parse_horizon(horizon)
    if horizon in (None, AGENT_HORIZON):
        horizon = recommended(agent, "horizon", ALL_TOKENS, parse_horizon, "horizon")
    return None if horizon == ALL_TOKENS else horizon


def candidates_metadata(sampling: SamplingConfig) -> str:
    """The "candidates" metadata entry of an agent trained with ``sampling``'s candidate sets."""
    return json.dumps({name: getattr(sampling, name) for name in CANDIDATE_FIELDS})


def agent_candidates(agent: str | Path | None) -> SamplingConfig:
    """The candidate set ``agent`` was trained on (``CANDIDATES``); the paper's defaults for a
    file without the record, an untrained agent (None, "untrained") and reference files."""
    if agent is None or str(agent) == UNTRAINED:
        return SamplingConfig()
    recorded = read_agent_metadata(agent).get(CANDIDATES)
    if recorded is None:
        return SamplingConfig()
    try:
        values = json.loads(recorded)
        if not isinstance(values, dict) or set(values) != set(CANDIDATE_FIELDS):
            raise ValueError(f"needs exactly {list(CANDIDATE_FIELDS)}")
        return SamplingConfig(**values)
    except (ValueError, TypeError) as err:
        raise AgentFileError(f"agent file {agent} records an unreadable candidate set {recorded!r}: {err}") from err


def candidate_set_warning(trained: SamplingConfig, used: SamplingConfig) -> str | None:
    """What to tell a user whose candidate set is not the one the agent was trained on (None
    when it is): a set that can hold fewer candidates leaves the agent less, or nothing, to
    decide; its answers then drift toward the upstream's."""
    def settings(s: SamplingConfig) -> str:
        return f"temperature {s.temperature}, top_k {s.top_k}, top_p {s.top_p}"

    if all(getattr(trained, f) == getattr(used, f) for f in CANDIDATE_FIELDS):
        return None
    if used.top_k < 2:
        return (f"the candidate set ({settings(used)}) holds a single token: the agent has nothing to decide and "
                f"every answer is the upstream's own (the agent was trained on {settings(trained)})")
    narrower = used.top_k < trained.top_k or used.top_p < trained.top_p or used.temperature < trained.temperature
    if narrower:
        return (f"the candidate set ({settings(used)}) is narrower than the one the agent was trained on "
                f"({settings(trained)}): more positions have fewer than 2 candidates, where the agent decides nothing")
    return (f"the candidate set ({settings(used)}) differs from the one the agent was trained on "
            f"({settings(trained)}): the agent judges candidates it has not seen in training")


def load_agent(path: str | Path, model_hidden_size: int | None = None) -> Actor:
    """Load an actor from our safetensors format or a reference ``.pth`` checkpoint.

    ``model_hidden_size`` is the hidden size of the upstream LLM the agent will read; an
    agent whose states (of the features its file records) do not fit it raises a ValueError
    naming both sizes.
    """
    path = _existing(path)
    state_dict = _read_state_dict(path)
    missing = [k for k in ("ln.weight", "linear1.weight", "linear2.weight", "output_linear.weight")
               if k not in state_dict]
    if missing:
        raise AgentFileError(
            f"{path} is not an accept/reject actor: missing tensors {missing} "
            f"(found {sorted(state_dict)[:8]})"
        )
    hidden_size, state_dim = state_dict["linear1.weight"].shape
    if model_hidden_size is not None:
        check_state_size(int(state_dim), agent_state_features(path), model_hidden_size, what=str(path))
    actor = Actor(state_dim=int(state_dim), hidden_size=int(hidden_size))
    try:
        actor.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True)
    except RuntimeError as err:
        raise AgentFileError(f"{path}: tensors do not fit the actor network: {err}") from err
    return actor.eval()


def agent_state_features(path: str | Path) -> str:
    """What an agent file's agent reads (``core.state_features``): what its metadata records."""
    return recorded_state_features(read_agent_metadata(path), what=f"agent file {path}")


def load_warm_start(path: str | Path, state_dim: int, hidden_size: int,
                    state_features: str = PAPER_STATE) -> tuple[Actor, float | None]:
    """The actor a training run starts from (``learner.init_agent``) and the temperature alpha
    its file records it was trained at (None: the file records none, e.g. one written before
    agent files recorded it). Checked against the run's states (``state_features``,
    ``state_dim``: rollout.state_features and the upstream's hidden size) and the width of the
    run's SAC networks (``hidden_size``): the launch preflight calls this before Ray starts, the
    learner when it loads the actor. A file whose layout lacks parts of the run's is widened to
    it (``widened_actor``)."""
    reads = agent_state_features(path)
    actor = load_agent(path)
    if reads != state_features:
        if not set(parts(reads)) <= set(parts(state_features)):
            raise AgentFileError(f"learner.init_agent {path} reads {reads} states, which this run's "
                                 f"rollout.state_features {state_features} does not hold")
        try:
            d = hidden_size_of(state_features, state_dim)
            check_state_size(actor.state_dim, reads, d, what=f"learner.init_agent {path}")
        except ValueError as err:
            raise AgentFileError(str(err)) from err
        actor = widened_actor(actor, reads, state_features, d)
    if actor.state_dim != state_dim:
        raise AgentFileError(f"learner.init_agent {path} reads states of size {actor.state_dim}, but this run's "
                             f"states are of size {state_dim} (another upstream model's hidden size)")
    if actor.hidden_size != hidden_size:
        raise AgentFileError(f"learner.init_agent {path}: hidden size {actor.hidden_size}, but sac.hidden_size "
                             f"is {hidden_size}")
    recorded = read_agent_metadata(path).get("alpha", "")
    if not recorded:
        return actor, None
    try:
        alpha = float(recorded)
    except ValueError:
        alpha = math.nan
    if not math.isfinite(alpha) or alpha <= 0:
        raise AgentFileError(f"{path}: recorded temperature alpha = {recorded} is not a positive number")
    return actor, alpha


def widened_actor(actor: Actor, reads: str, features: str, model_hidden_size: int) -> Actor:
    """``actor`` (reading ``reads`` states) made to read ``features`` states, a layout with more
    parts: its weights are copied to where their parts now sit, and each new input starts with
    zero weight into the first layer (and the identity LayerNorm gain), so the widened actor
    decides as the old one did up to the LayerNorm's statistics over the new inputs, and
    training can grow the new weights from there."""
    old_at, new_at = part_slices(reads, model_hidden_size), part_slices(features, model_hidden_size)
    wide = Actor(state_dim=state_size(features, model_hidden_size), hidden_size=actor.hidden_size)
    with torch.no_grad():
        wide.ln.weight.fill_(1.0)
        wide.ln.bias.zero_()
        wide.linear1.weight.zero_()
        for name, src in old_at.items():
            dst = new_at[name]
            wide.ln.weight[dst] = actor.ln.weight[src]
            wide.ln.bias[dst] = actor.ln.bias[src]
            wide.linear1.weight[:, dst] = actor.linear1.weight[:, src]
        wide.linear1.bias.copy_(actor.linear1.bias)
        for layer in ("linear2", "output_linear"):
            getattr(wide, layer).load_state_dict(getattr(actor, layer).state_dict())
    return wide.eval()


def default_agent(model_hidden_size: int) -> Path | None:
    """The shipped agent when it exists and reads states of an upstream of ``model_hidden_size``, else None."""
    if not SHIPPED_AGENT.is_file():
        return None
    state_dim = int(read_agent_metadata(SHIPPED_AGENT).get("state_dim", 0))
    try:
        check_state_size(state_dim, agent_state_features(SHIPPED_AGENT), model_hidden_size)
    except ValueError:
        return None
    return SHIPPED_AGENT


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"agent file not found: {path}")
    return path


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or pickled files
        raise AgentFileError(f"cannot read agent file {path}: {err}") from err
    # Reference checkpoints are plain state dicts; accept one level of nesting too.
    if isinstance(loaded, dict) and "linear1.weight" not in loaded:
        for key in ("actor", "state_dict", "model"):
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise AgentFileError(f"{path} does not hold a state dict of tensors")
    return loaded
