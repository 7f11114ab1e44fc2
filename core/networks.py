"""The alignment model (SAC actor) and the twin critic of MARA (paper §3.3, MARA.md).

Both take the upstream LLM's last-layer hidden state of a candidate token (dimension d)
and output one value per action (0 reject, 1 accept). The actor's layer names match the
reference implementation (``ln``, ``linear1``, ``linear2``, ``output_linear``) so its
released checkpoints load without renaming.
"""

from __future__ import annotations

import torch
from torch import nn

NUM_ACTIONS = 2


class _MLPHead(nn.Module):
    """Linear(d, h) -> ReLU -> Linear(h, 256) -> ReLU -> Linear(256, 2)."""

    def __init__(self, state_dim: int, hidden_size: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(state_dim, hidden_size)
        self.linear2 = nn.Linear(hidden_size, 256)
        self.output_linear = nn.Linear(256, NUM_ACTIONS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.linear1(x))
        x = torch.relu(self.linear2(x))
        return self.output_linear(x)


class Actor(nn.Module):
    """pi_theta(a | s): LayerNorm(d) -> MLP -> softmax over {reject, accept}."""

    def __init__(self, state_dim: int, hidden_size: int = 1024) -> None:
        super().__init__()
        self.state_dim = state_dim
        self.hidden_size = hidden_size
        self.ln = nn.LayerNorm(state_dim)
        self.linear1 = nn.Linear(state_dim, hidden_size)
        self.linear2 = nn.Linear(hidden_size, 256)
        self.output_linear = nn.Linear(256, NUM_ACTIONS)

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, 2) unnormalised log-probabilities."""
        x = self.ln(states)
        x = torch.relu(self.linear1(x))
        x = torch.relu(self.linear2(x))
        return self.output_linear(x)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, 2) action probabilities."""
        return torch.softmax(self.logits(states), dim=-1)

    @torch.no_grad()
    def accept_probability(self, states: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B,) pi(accept | s), computed in the actor's own dtype and device."""
        param = self.ln.weight
        return self(states.to(device=param.device, dtype=param.dtype))[:, 1]


class TwinCritic(nn.Module):
    """Q1(s, .), Q2(s, .): a shared input LayerNorm and two independent MLP heads."""

    def __init__(self, state_dim: int, hidden_size: int = 1024) -> None:
        super().__init__()
        self.state_dim = state_dim
        self.hidden_size = hidden_size
        self.ln = nn.LayerNorm(state_dim)
        self.q1 = _MLPHead(state_dim, hidden_size)
        self.q2 = _MLPHead(state_dim, hidden_size)

    def forward(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, d) -> two (B, 2) tensors of Q-values, one per head."""
        x = self.ln(states)
        return self.q1(x), self.q2(x)
