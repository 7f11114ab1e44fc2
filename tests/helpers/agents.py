"""Agents with a fixed rule, for tests."""

from __future__ import annotations

import torch

from core.networks import Actor


def always_accept_actor(d: int) -> Actor:
    actor = Actor(state_dim=d, hidden_size=16)
    with torch.no_grad():
        actor.output_linear.weight.zero_()
        actor.output_linear.bias.copy_(torch.tensor([-10.0, 10.0]))
    return actor


def always_reject_actor(d: int) -> Actor:
    actor = always_accept_actor(d)
    with torch.no_grad():
        actor.output_linear.bias.copy_(torch.tensor([10.0, -10.0]))
    return actor
