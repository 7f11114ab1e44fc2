"""Discrete soft actor-critic for the accept/reject agent (paper §3.3, Eq. 9-11; MARA.md).

Pure maths, no Ray and no files:

- ``critic_loss``  Eq. 10, soft Bellman residual of both Q heads against the target critic.
- ``actor_loss``   Eq. 11, the KL to the Boltzmann policy of min(Q1, Q2), in its discrete form.
- ``alpha_loss``   automatic temperature tuning toward a target entropy.
- ``soft_update``  Polyak averaging of the target critic.
- ``SACState`` + ``sac_update(state, batch, cfg) -> (state, metrics)``: one gradient step.

With two actions the expectation over a ~ pi(.|s) is computed exactly from the action
probabilities instead of by sampling (as in CleanRL's ``sac_atari.py``), so an update is
deterministic given the batch and the state.

Usage::

    state = init_sac_state(state_dim=576, cfg=SACConfig(), device="cpu", seed=0)
    for batch in batches:                      # TransitionBatch from the replay actor
        state, metrics = sac_update(state, batch_to_tensors(batch, "cpu"), cfg)
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.config import SACConfig
from core.contracts import TransitionBatch
from core.networks import NUM_ACTIONS, Actor, TwinCritic


class TensorBatch(NamedTuple):
    """A TransitionBatch as tensors on the learner's device."""

    states: torch.Tensor  # (B, d) float32 s
    actions: torch.Tensor  # (B,) int64 a, 0 reject / 1 accept
    rewards: torch.Tensor  # (B,) float32 r
    next_states: torch.Tensor  # (B, d) float32 s'
    dones: torch.Tensor  # (B,) float32, 1.0 where s was the last decision of its episode
    mean_policy_version: float | None = None  # mean weight version that collected the batch


def batch_to_tensors(batch: TransitionBatch, device: torch.device | str,
                     state_dim: int | None = None) -> TensorBatch:
    """The one place where replay data becomes learner input (checked, then moved).

    The fields are numpy arrays, or torch tensors already on the device when the replay is
    sampled there (replay/device_buffer.py); those are taken without a copy."""
    states, next_states = _array(batch.states), _array(batch.next_states)
    n = len(batch.actions)
    if states.ndim != 2 or next_states.shape != states.shape or states.shape[0] != n:
        raise ValueError(
            f"inconsistent batch: states {states.shape}, next_states {next_states.shape}, "
            f"actions ({n},)"
        )
    if len(batch.rewards) != n or len(batch.dones) != n:
        raise ValueError(f"inconsistent batch: {n} actions, {len(batch.rewards)} rewards, "
                         f"{len(batch.dones)} dones")
    if state_dim is not None and states.shape[1] != state_dim:
        raise ValueError(f"batch states have size {states.shape[1]}, the learner expects {state_dim}")
    actions = _array(batch.actions)
    # Checked on the host only: device batches come from the replay, which screened them, and a
    # check there would wait for the GPU.
    if n and isinstance(actions, np.ndarray) and (actions.min() < 0 or actions.max() >= NUM_ACTIONS):
        raise ValueError(f"actions must be 0 (reject) or 1 (accept), got values in "
                         f"[{actions.min()}, {actions.max()}]")
    versions = np.asarray(batch.policy_versions)  # on the host also in device batches
    mean_version = float(versions.mean()) if versions.size else None

    def to(x, dtype: torch.dtype) -> torch.Tensor:
        tensor = x if isinstance(x, torch.Tensor) else _as_tensor(np.asarray(x))
        return tensor.to(device=device, dtype=dtype, non_blocking=True)

    return TensorBatch(
        states=to(states, torch.float32),
        actions=to(actions, torch.int64),
        rewards=to(batch.rewards, torch.float32),
        next_states=to(next_states, torch.float32),
        dones=to(batch.dones, torch.float32),
        mean_policy_version=mean_version,
    )


def _array(x):
    """A torch tensor as is (sampled on the device), anything else as a numpy array."""
    return x if isinstance(x, torch.Tensor) else np.asarray(x)


def _as_tensor(x: np.ndarray) -> torch.Tensor:
    """Zero-copy tensor of an array, also of the read-only views Ray's object store hands out.

    Safe because the learner never writes into its input tensors; without this torch
    warns on every batch (and a copy would cost tens of MB per batch at d = 4096).
    """
    if x.flags.writeable:
        return torch.from_numpy(x)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(x)


# ---------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------


class CriticLossOutput(NamedTuple):
    loss: torch.Tensor  # () 1/2 MSE(Q1) + 1/2 MSE(Q2)
    q_target: torch.Tensor  # (B,) y(r, s', done), no gradient
    q1_taken: torch.Tensor  # (B,) Q1(s, a)
    q2_taken: torch.Tensor  # (B,) Q2(s, a)


def critic_loss(critic: TwinCritic, target_critic: TwinCritic, actor: Actor, batch: TensorBatch,
                alpha: torch.Tensor | float, gamma: float) -> CriticLossOutput:
    """Soft Bellman residual (paper Eq. 10, discrete form).

    y = r + gamma * (1 - done) * V(s'),
    V(s') = sum_a pi(a|s') * [min(Q1', Q2')(s', a) - alpha * log pi(a|s')]
          = sum_a pi(a|s') * min(Q1', Q2')(s', a) + alpha * H(pi(.|s')),
    J_Q = 1/2 E[(Q1(s, a) - y)^2] + 1/2 E[(Q2(s, a) - y)^2].
    """
    with torch.no_grad():
        next_log_pi = F.log_softmax(actor.logits(batch.next_states), dim=-1)  # (B, 2) log pi(.|s')
        next_pi = next_log_pi.exp()  # (B, 2) pi(.|s')
        q1_next, q2_next = target_critic(batch.next_states)  # (B, 2) each, Q'(s', .)
        min_q_next = torch.min(q1_next, q2_next)  # (B, 2)
        # Use the action probabilities instead of sampling a' to take the expectation.
        v_next = (next_pi * (min_q_next - alpha * next_log_pi)).sum(dim=-1)  # (B,)
        q_target = batch.rewards + gamma * (1.0 - batch.dones) * v_next  # (B,)
    q1, q2 = critic(batch.states)  # (B, 2) each
    taken = batch.actions.unsqueeze(-1)  # (B, 1)
    q1_taken = q1.gather(-1, taken).squeeze(-1)  # (B,) Q1(s, a)
    q2_taken = q2.gather(-1, taken).squeeze(-1)  # (B,) Q2(s, a)
    loss = 0.5 * F.mse_loss(q1_taken, q_target) + 0.5 * F.mse_loss(q2_taken, q_target)
    return CriticLossOutput(loss, q_target, q1_taken, q2_taken)


class ActorLossOutput(NamedTuple):
    loss: torch.Tensor  # () J_pi
    entropy: torch.Tensor  # (B,) H(pi(.|s)), no gradient
    expected_q: torch.Tensor  # (B,) sum_a pi(a|s) min(Q1, Q2)(s, a), no gradient
    probs: torch.Tensor  # (B, 2) pi(.|s), no gradient


def actor_loss(actor: Actor, critic: TwinCritic, states: torch.Tensor,
               alpha: torch.Tensor | float) -> ActorLossOutput:
    """Policy loss (paper Eq. 11, discrete form), the critic held fixed.

    J_pi = E_s[ sum_a pi(a|s) * (alpha * log pi(a|s) - min(Q1, Q2)(s, a)) ]
         = -E_s[ alpha * H(pi(.|s)) + sum_a pi(a|s) * min(Q1, Q2)(s, a) ].
    """
    log_pi = F.log_softmax(actor.logits(states), dim=-1)  # (B, 2), stable log pi(.|s)
    pi = log_pi.exp()  # (B, 2)
    with torch.no_grad():  # the critic is not trained by the actor loss
        q1, q2 = critic(states)
        min_q = torch.min(q1, q2)  # (B, 2)
    loss = (pi * (alpha * log_pi - min_q)).sum(dim=-1).mean()
    entropy = -(pi * log_pi).sum(dim=-1).detach()  # (B,)
    expected_q = (pi.detach() * min_q).sum(dim=-1)  # (B,)
    return ActorLossOutput(loss, entropy, expected_q, pi.detach())


def alpha_loss(log_alpha: torch.Tensor, entropy: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """Temperature loss: J(alpha) = E_s[ alpha * (H(pi(.|s)) - H_target) ], alpha = exp(log_alpha).

    Its gradient descent lowers alpha while the policy's entropy is above the target and
    raises it while below (the discrete-SAC form used by CleanRL's sac_atari).
    """
    return (log_alpha.exp() * (entropy.detach() - target_entropy)).mean()


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging: theta_target <- tau * theta_source + (1 - tau) * theta_target."""
    target_params = list(target.parameters())
    source_params = list(source.parameters())
    if len(target_params) != len(source_params):
        raise ValueError("soft_update needs two modules of the same architecture")
    if tau == 1.0:
        for t, s in zip(target_params, source_params):
            t.copy_(s)
    elif tau != 0.0:
        torch._foreach_lerp_(target_params, source_params, tau)
    for t, s in zip(target.buffers(), source.buffers()):
        t.copy_(s)


# ---------------------------------------------------------------------------------------
# Training state and one update
# ---------------------------------------------------------------------------------------


@dataclass
class SACState:
    """Everything one SAC update reads and changes.

    torch modules and optimisers change in place: ``sac_update`` returns the same object
    with its counter advanced, so ``state, metrics = sac_update(state, ...)`` reads right.
    """

    actor: Actor
    critic: TwinCritic
    target_critic: TwinCritic  # Polyak copy of ``critic``, never trained by gradients
    log_alpha: torch.Tensor  # (1,) learnable log of the temperature alpha
    actor_optimizer: torch.optim.Adam
    critic_optimizer: torch.optim.Adam
    alpha_optimizer: torch.optim.Adam
    updates: int = 0  # gradient updates done so far

    @property
    def alpha(self) -> float:
        return float(self.log_alpha.detach().exp().item())

    @property
    def state_dim(self) -> int:
        return self.actor.state_dim

    @property
    def device(self) -> torch.device:
        return self.log_alpha.device


def init_sac_state(state_dim: int, cfg: SACConfig, device: torch.device | str = "cpu",
                   seed: int = 0) -> SACState:
    """Fresh networks (initialised from ``seed`` without touching the global RNG) and Adams."""
    if not isinstance(state_dim, int) or state_dim < 1:
        raise ValueError(f"state_dim must be a positive int, got {state_dim!r}")
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        actor = Actor(state_dim, cfg.hidden_size)
        critic = TwinCritic(state_dim, cfg.hidden_size)
    target_critic = copy.deepcopy(critic)
    target_critic.requires_grad_(False)
    actor.to(device)
    critic.to(device)
    target_critic.to(device)
    log_alpha = torch.full((1,), float(np.log(cfg.init_alpha)), device=device, requires_grad=True)
    return SACState(
        actor=actor,
        critic=critic,
        target_critic=target_critic,
        log_alpha=log_alpha,
        actor_optimizer=torch.optim.Adam(actor.parameters(), lr=cfg.actor_lr),
        critic_optimizer=torch.optim.Adam(critic.parameters(), lr=cfg.critic_lr),
        alpha_optimizer=torch.optim.Adam([log_alpha], lr=cfg.alpha_lr),
    )


@dataclass(frozen=True)
class UpdateMetrics:
    """Scalars of one update (means over the batch), for logging."""

    updates: int  # update counter after this update
    critic_loss: float  # J_Q (Eq. 10)
    actor_loss: float  # J_pi (Eq. 11)
    alpha_loss: float  # J(alpha)
    alpha: float  # temperature after this update
    entropy: float  # mean H(pi(.|s)) over the batch, nats
    q_mean: float  # mean Q(s, a_taken) over both heads
    q_target_mean: float  # mean critic target y
    accept_prob: float  # mean pi(accept | s) over the batch
    critic_grad_norm: float  # global grad norm before clipping
    actor_grad_norm: float  # global grad norm before clipping
    policy_version_lag: float  # current weight version - mean version of the batch (nan if unknown)


def _step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, params, grad_clip: float) -> torch.Tensor:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    return grad_norm


def sac_update(state: SACState, batch: TensorBatch, cfg: SACConfig,
               current_version: int | None = None) -> tuple[SACState, UpdateMetrics]:
    """One gradient step of critic, actor and temperature, then the Polyak update."""
    alpha = state.log_alpha.detach().exp()  # (1,) held fixed within the critic/actor losses

    critic_out = critic_loss(state.critic, state.target_critic, state.actor, batch, alpha, cfg.gamma)
    critic_grad_norm = _step(state.critic_optimizer, critic_out.loss,
                             state.critic.parameters(), cfg.grad_clip)

    # The actor is scored by the freshly updated critic (as in CleanRL's sac_atari). During a
    # warm start's first updates (cfg.actor_warmup_updates) only the critics learn: the actor and
    # the temperature stay as loaded, their losses computed for the metrics alone.
    actor_learns = state.updates >= cfg.actor_warmup_updates
    with torch.set_grad_enabled(actor_learns):
        actor_out = actor_loss(state.actor, state.critic, batch.states, alpha)
    a_loss = alpha_loss(state.log_alpha, actor_out.entropy, cfg.target_entropy)
    if actor_learns:
        actor_grad_norm = _step(state.actor_optimizer, actor_out.loss, state.actor.parameters(), cfg.grad_clip)
        _step(state.alpha_optimizer, a_loss, [state.log_alpha], cfg.grad_clip)
    else:
        actor_grad_norm = torch.zeros((), device=critic_grad_norm.device)

    soft_update(state.target_critic, state.critic, cfg.tau)
    state.updates += 1

    # One host transfer for all scalars (a single device sync on CUDA).
    scalars = torch.stack([
        critic_out.loss.detach(), actor_out.loss.detach(), a_loss.detach(),
        state.log_alpha.detach().exp().squeeze(0), actor_out.entropy.mean(),
        0.5 * (critic_out.q1_taken.detach().mean() + critic_out.q2_taken.detach().mean()),
        critic_out.q_target.mean(), actor_out.probs[:, 1].mean(),
        critic_grad_norm.detach().to(alpha.device), actor_grad_norm.detach().to(alpha.device),
    ]).tolist()
    lag = float("nan")
    if current_version is not None and batch.mean_policy_version is not None:
        lag = float(current_version) - batch.mean_policy_version
    metrics = UpdateMetrics(state.updates, *scalars, policy_version_lag=lag)
    return state, metrics


assert NUM_ACTIONS == 2, "the temperature target and the exact expectations assume 2 actions"
