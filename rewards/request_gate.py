"""The request gate: which requests the agent may touch (``core.agent_file``: ``request_gate``).

An aligner should change an answer only where there is something to fix. The gate reads the
request alone, before any answer: g(x), the harmful-request probability of a response-class
head file (rewards/response_class.py; the request's MiniLM embedding and hashed word n-grams).
A request with g(x) >= 0.5 is the agent's to decide; the upstream answers the others alone, as
it does past the agent's horizon, so that under greedy decisions they get the upstream's greedy
answer unchanged.

The shipped gate ("embedded", rewards/data/request_gate.safetensors) is fitted to the strong
readers' own verdicts on the requests (docs/RUBRIC.md; rewards/recipe/request_gate.py), not to
where a prompt came from: the readers call about 40% of the harmful prompt pools' requests benign.
It flags 72.9% of the PKU-SafeRLHF test requests, 63.5% of HH red-team and 6.5% of HH helpful ones
(rewards/data/request_gate.md). Any response-class head file is a gate too, e.g. the safety
reward's, which was trained on where a prompt came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from core.agent_file import EMBEDDED_GATE, NO_GATE, resolve_request_gate
from rewards.embedded import head_path, shipped_head_path
from rewards.embedding_bt import encode_once, load_encoder
from rewards.response_class import harm_probability, load_heads

GATE_THRESHOLD = 0.5  # a gate's recipe folds its threshold into the head's bias


class RequestGate:
    """Called with requests, says which of them the agent decides (True) and which the
    upstream answers alone (False)."""

    def __init__(self, path: str | Path, device: str = "cpu", batch_size: int = 64) -> None:
        self.path = str(path)
        self.heads, self.features, _ = load_heads(path)
        self.heads = self.heads.to(device)
        encoder = load_encoder(self.features.encoder, device)
        self._embed = lambda texts: encode_once(encoder, texts, batch_size)

    def __str__(self) -> str:
        return self.path

    def request_features(self, prompts: Sequence[str]) -> np.ndarray:
        """(N, width): what the gate reads of each request (``response_class.Features.prompts``)."""
        return self.features.prompts(prompts, self._embed)

    def harm_probability(self, prompts: Sequence[str]) -> np.ndarray:
        """g(x) of each request, (N,)."""
        if not prompts:
            return np.zeros(0)
        return harm_probability(self.heads, self.request_features(prompts))

    def __call__(self, prompts: Sequence[str]) -> np.ndarray:
        return self.harm_probability(prompts) >= GATE_THRESHOLD


def request_gate_file(value: str | None, agent: str | Path | None) -> Path | None:
    """The head file of the gate ``value`` names ("off": None; "embedded": the shipped one; a
    file), "agent" (and None) resolved against ``agent``'s recommendation; a missing file is
    refused here, before anything is loaded."""
    gate = resolve_request_gate(value, agent)
    if gate == NO_GATE:
        return None
    path = shipped_head_path("request-gate") if gate == EMBEDDED_GATE else head_path(gate, "response-class")
    if not path.is_file():
        raise FileNotFoundError(f"request gate: response-class head file not found: {path}")
    return path


def load_request_gate(value: str | None, agent: str | Path | None, device: str = "cpu") -> RequestGate | None:
    """The gate ``value`` names (``request_gate_file``), ready to call; None for "off"."""
    path = request_gate_file(value, agent)
    return None if path is None else RequestGate(path, device=device)
