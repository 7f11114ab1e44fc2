"""What the accept/reject agent reads at each decision: the layout of its state s.

A layout names its parts joined by "+", always in this order:

- "candidate": the candidate's last-layer hidden state (the paper's state, Eq. 4): d numbers
  for an upstream of hidden size d. Every layout starts with it.
- "prompt": the prompt's last hidden state, the same at every decision of an answer: what was
  asked, even where the candidate's own state hardly shows it (d numbers).
- "rank": where the candidate stands in its candidate set: [1 if it is the upstream's first
  choice else 0, 1 / (k + 1)] for the k-th candidate (0-based). With it the agent can tell
  "leave the upstream's own token" from "pick among the rest".
- "logp": how likely the upstream finds it: [log pi_ref(t^k), log pi_ref(accept | s)] within
  the candidate set (Eq. 8's reference decision): whether the upstream is sure of this
  position.

"candidate" alone is the paper's state and the default; the others are extensions
(``rollout.state_features``), measured in docs/RESULTS.md. Agent files record their layout
(metadata ``state_features``); a file without it, an older one or the reference's, reads
"candidate". A warm start may add parts to the layout its file records (``widened_actor``
in core/agent_file.py): the new inputs start with zero weight.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

PAPER_STATE = "candidate"
# each optional part and how many numbers it adds (None: the upstream's hidden size d)
_PARTS: dict[str, int | None] = {"prompt": None, "rank": 2, "logp": 2}
STATE_FEATURES = tuple("+".join((PAPER_STATE, *chosen)) for n in range(len(_PARTS) + 1)
                       for chosen in combinations(_PARTS, n))
# the floor of a log-probability feature: a candidate the set gives no mass to
_LOG_FLOOR = -30.0


def parts(features: str) -> tuple[str, ...]:
    """The parts of a layout, in order ("candidate+rank" -> ("candidate", "rank"))."""
    if features not in STATE_FEATURES:
        raise ValueError(f"state features must be one of {STATE_FEATURES}, got {features!r}")
    return tuple(features.split("+"))


def part_sizes(features: str, model_hidden_size: int) -> dict[str, int]:
    """How many numbers each part of a layout holds, in order."""
    return {name: model_hidden_size if _PARTS.get(name) is None else _PARTS[name] for name in parts(features)}


def part_slices(features: str, model_hidden_size: int) -> dict[str, slice]:
    """Where each part of a layout sits in its states, in order."""
    out, at = {}, 0
    for name, size in part_sizes(features, model_hidden_size).items():
        out[name], at = slice(at, at + size), at + size
    return out


def state_size(features: str, model_hidden_size: int) -> int:
    """The length of a state with ``features`` for an upstream of hidden size ``model_hidden_size``."""
    return sum(part_sizes(features, model_hidden_size).values())


def hidden_size_of(features: str, state_dim: int) -> int:
    """The upstream hidden size d whose ``features`` states are of size ``state_dim``."""
    hidden_parts = sum(1 for name in parts(features) if _PARTS.get(name) is None)
    scalars = state_size(features, 0)
    if state_dim <= scalars or (state_dim - scalars) % hidden_parts:
        raise ValueError(f"no upstream's {features} states are of size {state_dim}")
    return (state_dim - scalars) // hidden_parts


def reads_prompt(features: str) -> bool:
    """Whether the layout needs the prompt's last hidden state."""
    return "prompt" in parts(features)


def candidate_scalars(features: str, ref_probs: np.ndarray, k: int) -> list[float]:
    """The "rank" and "logp" numbers of candidate k of a set with upstream probabilities
    ``ref_probs`` (renormalised over the set, highest first), as the layout orders them."""
    out: list[float] = []
    names = parts(features)
    if "rank" in names:
        out += [1.0 if k == 0 else 0.0, 1.0 / (k + 1)]
    if "logp" in names:
        p = float(ref_probs[k])
        remaining = float(np.sum(ref_probs[k:]))
        out += [max(np.log(p), _LOG_FLOOR) if p > 0 else _LOG_FLOOR,
                max(np.log(p / remaining), _LOG_FLOOR) if p > 0 and remaining > 0 else _LOG_FLOOR]
    return out


def recorded_state_features(metadata: dict[str, str], what: str = "agent file") -> str:
    """The state features an agent file's metadata records ("candidate" when it records none)."""
    features = metadata.get("state_features", PAPER_STATE)
    if features not in STATE_FEATURES:
        raise ValueError(f"{what} records unknown state features {features!r} (known: {', '.join(STATE_FEATURES)})")
    return features


def check_state_size(state_dim: int, features: str, model_hidden_size: int, what: str = "agent") -> None:
    """Refuse to pair an agent with an upstream whose states it cannot read."""
    expected = state_size(features, model_hidden_size)
    if state_dim != expected:
        raise ValueError(
            f"{what} reads states of size {state_dim} ({features}), but the upstream model's hidden size is "
            f"{model_hidden_size}: its {features} states are of size {expected}; an agent only works with LLMs of "
            f"the hidden size it was trained on")
