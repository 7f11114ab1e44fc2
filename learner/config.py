"""Configuration of the SAC learner (MARA.md, "Learning"; paper §3.3, Eq. 9-11).

Two frozen dataclasses: ``SACConfig`` holds the maths (reference defaults), and
``LearnerConfig`` the process around it (publication, checkpoints, device). Values are
validated in ``__post_init__``; an invalid value raises, it is never rewritten.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SACConfig:
    """Discrete soft actor-critic hyper-parameters (reference defaults)."""

    # --- returns and target network ---
    gamma: float = 0.99  # discount factor gamma of the critic target (Eq. 10)
    tau: float = 0.005  # Polyak coefficient: target <- tau * online + (1 - tau) * target

    # --- optimisers (Adam) ---
    actor_lr: float = 3e-3  # learning rate of the actor (alignment MLP)
    critic_lr: float = 3e-3  # learning rate of both critic heads
    alpha_lr: float = 3e-3  # learning rate of log(alpha)
    grad_clip: float = 0.5  # max global gradient norm per optimiser step

    # --- temperature ---
    init_alpha: float = 0.01  # initial entropy temperature alpha
    target_entropy_factor: float = 0.6  # target entropy = factor * log(2) (2 actions)

    # --- shapes ---
    batch_size: int = 1024  # transitions per gradient update
    hidden_size: int = 1024  # width of the first hidden layer of actor and critic heads

    def __post_init__(self) -> None:
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        if not 0.0 <= self.tau <= 1.0:
            raise ValueError(f"tau must be in [0, 1], got {self.tau}")
        for name in ("actor_lr", "critic_lr", "alpha_lr", "grad_clip", "init_alpha"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not 0.0 < self.target_entropy_factor <= 1.0:
            raise ValueError(
                f"target_entropy_factor must be in (0, 1] (the entropy of 2 actions is at "
                f"most log 2), got {self.target_entropy_factor}"
            )
        for name in ("batch_size", "hidden_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")

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

    def __post_init__(self) -> None:
        for name in ("publish_every", "checkpoint_every", "keep_checkpoints", "metrics_window"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not (self.sample_timeout_s >= 0 and math.isfinite(self.sample_timeout_s)):
            raise ValueError(f"sample_timeout_s must be finite and >= 0, got {self.sample_timeout_s}")
        _check_device_name(self.device)


def _check_device_name(device: str) -> None:
    ok = device in ("auto", "cpu", "cuda") or (
        device.startswith("cuda:") and device[5:].isdigit()
    )
    if not ok:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> cuda if available else cpu; an explicit cuda without a GPU raises."""
    if isinstance(device, torch.device):
        device = str(device)
    _check_device_name(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)
