"""What the accept/reject agent reads at each decision: the layout of its state s.

"candidate": the candidate's last-layer hidden state (the paper's state, Eq. 4): d numbers
for an upstream of hidden size d. "candidate+prompt": that state followed by the prompt's
last hidden state, the same at every decision of an answer: what was asked, even where the
candidate's own state hardly shows it (an extension, ``rollout.state_features``; measured
in docs/RESULTS.md). Agent files record theirs (metadata ``state_features``); a file
without it, an older one or the reference's, reads "candidate".
"""

from __future__ import annotations

# how many hidden states of the upstream one state holds
_HIDDEN_STATES = {"candidate": 1, "candidate+prompt": 2}
STATE_FEATURES = tuple(_HIDDEN_STATES)
PAPER_STATE = "candidate"


def state_size(features: str, model_hidden_size: int) -> int:
    """The length of a state with ``features`` for an upstream of hidden size ``model_hidden_size``."""
    if features not in _HIDDEN_STATES:
        raise ValueError(f"state features must be one of {STATE_FEATURES}, got {features!r}")
    return model_hidden_size * _HIDDEN_STATES[features]


def recorded_state_features(metadata: dict[str, str], what: str = "agent file") -> str:
    """The state features an agent file's metadata records ("candidate" when it records none)."""
    features = metadata.get("state_features", PAPER_STATE)
    if features not in _HIDDEN_STATES:
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
