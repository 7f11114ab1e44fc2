"""A replay buffer sampled on the learner's device (``replay.on_learner_device: true``).

With ``replay.in_learner`` the buffer lives in the learner's process, but a sample is still
gathered on the host (1,024 random rows of the ring), cast to float32 there and copied to
the learner's device: at d = 4096 that is 32 MiB of states and next states per batch through
the host-to-device link, several milliseconds, while a GPU update of the MLPs takes about
one. ``DeviceReplayBuffer`` keeps a copy of the ring on the device as well, written as
episodes arrive (one copy of the written slots per insert call), and draws batches there: only the 1,024 sampled
indices cross (8 KiB), and the gather and the fp16 -> fp32 cast run on the device.

The host ring stays the record: screening, snapshots and restores use it unchanged
(``ReplayBuffer``), and after a restore the device copy is uploaded again. A batch comes out
as a ``TransitionBatch`` whose fields are torch tensors on the device, which
``learner.sac.batch_to_tensors`` takes without a copy. The indices come from the same numpy
generator as the host buffer's, so for one seed both draw the same transitions (tested).

Memory: on a GPU the copy is allocated whole when the state size is known (at once in a run),
capacity x (d x dtype + 6) bytes (d = 4096, fp16, 10^6 transitions: 8.2 GB), besides the host
ring. On torch's CPU device (a learner without GPU, and the tests) the device ring is views
of the host ring: no second copy.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import torch

from core.contracts import EpisodeTransitions, TransitionBatch
from replay.buffer import ReplayBuffer

_TORCH_DTYPES = {"float16": torch.float16, "float32": torch.float32}  # core.config.STATE_DTYPES


def _normalised(device: str | torch.device) -> torch.device:
    """"cuda" as "cuda:<current>": the replay's thread and the learner's must mean one GPU."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


class DeviceReplayBuffer(ReplayBuffer):
    """A ``ReplayBuffer`` with a copy of its ring on ``device``, sampled there.

    On torch's CPU device the "copy" is a set of zero-copy views of the host ring: nothing is
    duplicated, and only the gather runs in torch. ``DeviceReplayBuffer.load`` (inherited)
    returns a plain ``ReplayBuffer``; ``restore`` into a device buffer instead."""

    def __init__(self, *, capacity: int, state_dim: int | None = None, state_dtype: str = "float16",
                 device: str | torch.device = "cpu", copy_on_cpu: bool = False) -> None:
        """``copy_on_cpu``: keep a real copy on torch's CPU device too, as on a GPU (the tests
        run the GPU's upload path this way)."""
        self.device = _normalised(device)
        self._views = self.device.type == "cpu" and not copy_on_cpu
        self._device_ring: dict[str, torch.Tensor] | None = None  # made with the host ring
        super().__init__(capacity=capacity, state_dim=state_dim, state_dtype=state_dtype)

    def _allocate(self, state_dim: int) -> None:
        super()._allocate(state_dim)
        self._allocate_device(state_dim)

    def _host_ring(self) -> dict[str, np.ndarray]:
        # Policy versions stay on the host: the learner only averages them (no device sync).
        return {"states": self._states, "actions": self._actions, "rewards": self._rewards, "dones": self._dones}

    def _allocate_device(self, state_dim: int) -> None:
        """The device ring for a host ring of ``state_dim``: views on the CPU; on a GPU the
        existing ring when it has the size (a restore reuses it), else a new one."""
        if self._views:
            self._device_ring = {name: torch.from_numpy(array) for name, array in self._host_ring().items()}
            return
        ring = self._device_ring
        if ring is not None and tuple(ring["states"].shape) == (self.capacity, state_dim):
            return
        self._device_ring = None  # the old ring's memory goes before the new one is allocated
        zeros = lambda *shape, dtype: torch.zeros(shape, dtype=dtype, device=self.device)  # noqa: E731
        self._device_ring = {  # the host ring's dtypes
            "states": zeros(self.capacity, state_dim, dtype=_TORCH_DTYPES[self.state_dtype]),
            "actions": zeros(self.capacity, dtype=torch.int8),
            "rewards": zeros(self.capacity, dtype=torch.float32),
            "dones": zeros(self.capacity, dtype=torch.bool),
        }

    def _upload(self, lo: int, hi: int) -> None:
        """Copy host slots [lo, hi) to the device ring (nothing to do for CPU views). The
        copies go in the default stream, after the learner's queued work, and block this
        (replay) thread until done: an insert may wait for an update, a sample never does."""
        if self._views or hi <= lo:
            return
        for name, array in self._host_ring().items():
            self._device_ring[name][lo:hi].copy_(torch.from_numpy(array[lo:hi]))

    def write(self, episodes: Sequence[EpisodeTransitions]) -> int:
        start = self._pos
        n = super().write(episodes)
        # One upload per call: the slots written, in at most two pieces (the ring wraps).
        if n >= self.capacity:
            self._upload(0, self.capacity)
        else:
            self._upload(start, min(start + n, self.capacity))
            self._upload(0, start + n - self.capacity)
        return n

    def sample(self, n: int, rng: np.random.Generator) -> TransitionBatch:
        """``n`` transitions drawn uniformly with replacement, gathered on the device.

        The same draws as ``ReplayBuffer.sample`` with the same generator state. Nothing here
        waits for the device: the indices go through pinned memory, the gather is queued."""
        self._check_sample_size(n)
        idx_host = rng.integers(0, self._size, size=int(n))
        idx = torch.from_numpy(idx_host)
        if self.device.type != "cpu":
            idx = idx.pin_memory().to(self.device, non_blocking=True)
        ring = self._device_ring
        dones = ring["dones"][idx]
        # s' (in Eq. 10's target) is the next slot's state; a terminal slot's successor belongs to
        # another episode, so it is zeros.
        next_states = ring["states"][(idx + 1) % self.capacity].float().masked_fill_(dones.unsqueeze(1), 0.0)
        self._counters["sampled_transitions"] += int(n)
        return TransitionBatch(
            states=ring["states"][idx].float(),
            actions=ring["actions"][idx].long(),
            rewards=ring["rewards"][idx],
            next_states=next_states,
            dones=dones.float(),
            policy_versions=self._policy_versions[idx_host],
        )

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "sampled_on": str(self.device)}

    def restore(self, path: str | os.PathLike) -> dict[str, Any]:
        # The base class replaces the host ring by the snapshot's (a plain ReplayBuffer's
        # attributes: the device ring stays), or raises with nothing changed.
        extra = super().restore(path)
        if self._state_dim is not None:
            self._allocate_device(self._state_dim)  # views of the new arrays; a GPU ring reused
            self._upload(0, self._size)
        return extra
