"""A replay buffer sampled on the learner's device (``replay.on_learner_device: true``).

With ``replay.in_learner`` the buffer lives in the learner's process, but a sample is still
gathered on the host (1,024 random rows of the ring), cast to float32 there and copied to
the learner's device: at d = 4096 that is 32 MiB of states and next states per batch through
the host-to-device link, several milliseconds, while a GPU update of the MLPs takes about
one. ``DeviceReplayBuffer`` keeps a copy of the ring on the device as well, written slot by
slot as episodes arrive (a few KiB each), and draws batches there: only the 1,024 sampled
indices cross (8 KiB), and the gather and the fp16 -> fp32 cast run on the device.

The host ring stays the record: screening, snapshots and restores use it unchanged
(``ReplayBuffer``), and after a restore the device copy is uploaded again. A batch comes out
as a ``TransitionBatch`` whose fields are torch tensors on the device, which
``learner.sac.batch_to_tensors`` takes without a copy. The indices come from the same numpy
generator as the host buffer's, so for one seed both draw the same transitions (tested).

Memory: the device copy is allocated whole at the first insert, capacity x (d x dtype + 14)
bytes (d = 4096, fp16, 10^6 transitions: 8.2 GB), besides the host ring.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from core.contracts import EpisodeTransitions, TransitionBatch
from replay.buffer import ReplayBuffer

_TORCH_DTYPES = {"float16": torch.float16, "float32": torch.float32}  # core.config.STATE_DTYPES


class DeviceReplayBuffer(ReplayBuffer):
    """A ``ReplayBuffer`` with a copy of its ring on ``device``, sampled there."""

    def __init__(self, *, capacity: int, state_dim: int | None = None, state_dtype: str = "float16",
                 device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self._device_ring: dict[str, torch.Tensor] | None = None  # made with the host ring
        super().__init__(capacity=capacity, state_dim=state_dim, state_dtype=state_dtype)

    def _allocate(self, state_dim: int) -> None:
        super()._allocate(state_dim)
        self._allocate_device(state_dim)

    def _allocate_device(self, state_dim: int) -> None:
        zeros = lambda *shape, dtype: torch.zeros(shape, dtype=dtype, device=self.device)  # noqa: E731
        self._device_ring = {
            "states": zeros(self.capacity, state_dim, dtype=_TORCH_DTYPES[self.state_dtype]),
            "actions": zeros(self.capacity, dtype=torch.int64),
            "rewards": zeros(self.capacity, dtype=torch.float32),
            "dones": zeros(self.capacity, dtype=torch.bool),
            "policy_versions": zeros(self.capacity, dtype=torch.int64),
        }

    def _upload(self, lo: int, hi: int) -> None:
        """Copy host slots [lo, hi) to the device ring."""
        host = {"states": self._states, "actions": self._actions, "rewards": self._rewards,
                "dones": self._dones, "policy_versions": self._policy_versions}
        for name, ring in self._device_ring.items():
            ring[lo:hi].copy_(torch.from_numpy(host[name][lo:hi]))

    def _write_episode(self, ep: EpisodeTransitions) -> int:
        start = self._pos
        n = super()._write_episode(ep)
        # The same (at most two) contiguous pieces the host write took.
        first = min(n, self.capacity - start)
        self._upload(start, start + first)
        if n > first:
            self._upload(0, n - first)
        return n

    def sample(self, n: int, rng: np.random.Generator) -> TransitionBatch:
        """``n`` transitions drawn uniformly with replacement, gathered on the device.

        The same draws as ``ReplayBuffer.sample`` with the same generator state."""
        self._check_sample_size(n)
        idx = torch.from_numpy(rng.integers(0, self._size, size=int(n))).to(self.device)
        ring = self._device_ring
        dones = ring["dones"][idx]
        states = ring["states"][idx].float()
        # Eq. (SAC target) needs s'; a terminal slot's successor is another episode's: zeros.
        next_states = ring["states"][(idx + 1) % self.capacity].float()
        next_states[dones] = 0.0
        self._counters["sampled_transitions"] += int(n)
        return TransitionBatch(
            states=states,
            actions=ring["actions"][idx],
            rewards=ring["rewards"][idx],
            next_states=next_states,
            dones=dones.float(),
            policy_versions=ring["policy_versions"][idx],
        )

    def restore(self, path: str | os.PathLike) -> dict[str, Any]:
        device, ring = self.device, self._device_ring
        extra = super().restore(path)  # replaces the host ring (and the attributes it reads)
        self.device, self._device_ring = device, ring
        if self._state_dim is not None:
            if ring is None:  # this buffer's dimension was unknown before the snapshot's
                self._allocate_device(self._state_dim)
            self._upload(0, self._size)
        return extra
