"""Uniform replay buffer of accept/reject transitions: a preallocated numpy ring.

Each hidden state is stored once. Slot i holds the state of one decision; its next state
is the state in slot (i + 1) % capacity unless slot i is terminal (then it is zeros).
Why this holds, also across wrap-around and overwriting: episodes are written
contiguously (slot after slot, wrapping at the end of the ring) and always end with a
done transition. A non-terminal slot i is therefore followed by slot i + 1 of the same
episode, written in the same call. Writing moves forward from the write position, so the
only stored slot whose successor can be overwritten is the one just before the write
position, and that is the last decision of the most recent episode: terminal, its next
state is never read. A partly overwritten old episode keeps a valid tail that still ends
with its done slot.

Usage::

    buffer = ReplayBuffer(capacity=1_000_000, state_dim=4096, state_dtype="float16")
    buffer.add(episodes)                         # list[EpisodeTransitions]
    batch = buffer.sample(1024, np.random.default_rng(0))   # TransitionBatch (float32)
    buffer.save("replay.arrow"); ReplayBuffer.load("replay.arrow")
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from numbers import Integral
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from core.atomic import atomic_path
from core.config import STATE_DTYPES
from core.contracts import EpisodeTransitions, TransitionBatch

log = logging.getLogger(__name__)

FORMAT_VERSION = "mara-replay-1"
_META_KEY = b"mara.replay"
_SNAPSHOT_CHUNK = 65_536  # rows per Arrow record batch

# Bytes per transition besides the state: action int8, reward float32, done bool,
# policy version int64.
_SCALAR_BYTES = 1 + 4 + 1 + 8


_TORCH: Any = None  # torch module once imported, False if unavailable
_CAST_CHUNK = 32_000  # elements per torch copy: below torch's parallel grain size


def _cast_into(dst: np.ndarray, src: np.ndarray) -> None:
    """``dst[...] = src`` with a float16 <-> float32 conversion, done in one place.

    numpy's float16 casts are scalar loops, several times slower than torch's vectorised
    CPU kernels (measured: 1024 x 4096 float16 -> float32 in 8.5 ms vs 1.3 ms). Both
    round to nearest even and float16 -> float32 is exact, so the bits are identical
    (checked in tests). torch is a project dependency; without it numpy does the work.
    The copy goes in flat chunks below torch's parallel grain size (32768 elements) so
    it stays on the calling thread: waking OpenMP workers on a busy machine cost ~7 ms
    per call in our measurements, and this never touches torch's global thread setting.
    """
    global _TORCH
    if _TORCH is None:
        try:
            import torch

            _TORCH = torch
        except ImportError:  # pragma: no cover - torch is a project dependency
            _TORCH = False
    if (
        _TORCH
        and {dst.dtype, src.dtype} == {np.dtype(np.float16), np.dtype(np.float32)}
        and dst.shape == src.shape
        and dst.flags.c_contiguous
        and src.size >= 4096  # small arrays: torch's call overhead is not worth it
    ):
        with warnings.catch_warnings():  # read-only inputs (Ray object store) are only read
            warnings.simplefilter("ignore", UserWarning)
            flat_dst = _TORCH.from_numpy(dst.reshape(-1))  # a view: dst rows are contiguous
            flat_src = _TORCH.from_numpy(np.ascontiguousarray(src).reshape(-1))
        for lo in range(0, flat_dst.numel(), _CAST_CHUNK):
            flat_dst[lo : lo + _CAST_CHUNK].copy_(flat_src[lo : lo + _CAST_CHUNK])
    else:
        dst[...] = src


class SnapshotError(ValueError):
    """A replay snapshot file is unreadable, corrupt or does not match the buffer."""


def transition_bytes(state_dim: int, state_dtype: str = "float16") -> int:
    """Bytes the buffer stores per transition: one state plus its scalars."""
    return state_dim * np.dtype(state_dtype).itemsize + _SCALAR_BYTES


class ReplayBuffer:
    """Preallocated ring of ``capacity`` transitions with uniform sampling."""

    def __init__(
        self, *, capacity: int, state_dim: int | None = None, state_dtype: str = "float16"
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, Integral) or capacity < 1:
            raise ValueError(f"capacity must be a positive int, got {capacity!r}")
        if state_dtype not in STATE_DTYPES:
            raise ValueError(f"state_dtype must be one of {STATE_DTYPES}, got {state_dtype!r}")
        if state_dim is not None and (
            isinstance(state_dim, bool) or not isinstance(state_dim, Integral) or state_dim < 1
        ):
            raise ValueError(f"state_dim must be a positive int or None, got {state_dim!r}")
        self.capacity = int(capacity)
        self.state_dtype = state_dtype
        self._dtype = np.dtype(state_dtype)
        self._state_dim: int | None = None
        self._states: np.ndarray | None = None  # (capacity, d) state_dtype, allocated lazily
        self._actions = np.zeros(self.capacity, np.int8)  # (capacity,) 0 reject / 1 accept
        self._rewards = np.zeros(self.capacity, np.float32)  # (capacity,) KL penalty (+ r(x,y))
        self._dones = np.zeros(self.capacity, bool)  # (capacity,) last decision of an episode
        self._policy_versions = np.zeros(self.capacity, np.int64)  # (capacity,)
        self._pos = 0  # next slot to write
        self._size = 0  # valid slots: [0, size) until the ring is full, then all
        self._counters = dict.fromkeys(
            (
                "inserted_transitions",
                "inserted_episodes",
                "evicted_transitions",
                "rejected_episodes",
                "rejected_transitions",
                "sampled_transitions",
            ),
            0,
        )
        if state_dim is not None:
            self._allocate(int(state_dim))

    def _allocate(self, state_dim: int) -> None:
        # np.zeros maps pages lazily, so a 1e6 x 4096 ring costs memory only as it fills.
        self._state_dim = state_dim
        self._states = np.zeros((self.capacity, state_dim), self._dtype)

    # --- properties ------------------------------------------------------------------
    @property
    def state_dim(self) -> int | None:
        return self._state_dim

    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return self._size

    def bytes_per_transition(self) -> int:
        """Storage per transition: one state in the storage dtype plus the scalars.

        The reference keeps state and next state as Python float lists, ~2 * d * 8 bytes.
        """
        if self._state_dim is None:
            raise ValueError("state dimension unknown until the first insert")
        return transition_bytes(self._state_dim, self.state_dtype)

    def stats(self) -> dict[str, Any]:
        return {
            "size": self._size,
            "capacity": self.capacity,
            "write_position": self._pos,
            "state_dim": self._state_dim,
            "state_dtype": self.state_dtype,
            "bytes_per_transition": (
                None if self._state_dim is None else self.bytes_per_transition()
            ),
            "sampled_on": "host",  # where batches are gathered (a DeviceReplayBuffer: its device)
            **self._counters,
        }

    # --- inserting -------------------------------------------------------------------
    def screen(self, episodes: Sequence[EpisodeTransitions]) -> list[EpisodeTransitions]:
        """The episodes of ``episodes`` that can be stored, in order.

        Raises (before anything is written) on a state-dimension mismatch or an episode
        longer than the ring. Skips, counts and logs episodes with non-finite states or
        rewards (including states that overflow float16) or actions other than 0/1, so
        that the good episodes of the same call are still stored. Empty episodes are
        dropped silently.
        """
        if isinstance(episodes, EpisodeTransitions):
            raise TypeError("pass a list of EpisodeTransitions, not a single episode")
        expected = self._state_dim
        for ep in episodes:
            if not isinstance(ep, EpisodeTransitions):
                raise TypeError(f"expected EpisodeTransitions, got {type(ep).__name__}")
            if len(ep) == 0:
                continue
            if expected is None:
                expected = ep.state_dim  # the first stored episode fixes d
            if ep.state_dim != expected:
                raise ValueError(
                    f"state dimension mismatch: episode states have {ep.state_dim} features, "
                    f"the replay buffer stores {expected}"
                )
            if len(ep) > self.capacity:
                raise ValueError(
                    f"episode of {len(ep)} transitions does not fit in a replay buffer of "
                    f"capacity {self.capacity}"
                )
        good = []
        for ep in episodes:
            if len(ep) == 0:
                continue
            problem = self._problem(ep)
            if problem is None:
                good.append(ep)
                continue
            self._counters["rejected_episodes"] += 1
            self._counters["rejected_transitions"] += len(ep)
            log.warning(
                "replay: skipped an episode of %d transitions (policy version %d): %s",
                len(ep), ep.policy_version, problem,
            )
        return good

    def _problem(self, ep: EpisodeTransitions) -> str | None:
        states = np.asarray(ep.states)
        if not np.issubdtype(states.dtype, np.floating):
            return f"states have non-float dtype {states.dtype}"
        if not np.isfinite(states).all():
            return "non-finite state values"
        limit = np.finfo(self._dtype).max
        if np.finfo(states.dtype).max > limit and np.abs(states).max() > limit:
            return f"state values beyond the {self.state_dtype} range (|x| > {limit})"
        if not np.isfinite(ep.rewards).all():
            return "non-finite rewards"
        actions = np.asarray(ep.actions)
        if not np.isin(actions, (0, 1)).all():
            return "actions other than 0 (reject) / 1 (accept)"
        return None

    def add(self, episodes: Sequence[EpisodeTransitions]) -> int:
        """Store whole episodes (see ``screen``); returns the number of transitions stored."""
        return self.write(self.screen(episodes))

    def write(self, episodes: Sequence[EpisodeTransitions]) -> int:
        """Store episodes already returned by ``screen``; returns transitions stored."""
        total = 0
        for ep in episodes:
            if self._states is None:
                self._allocate(ep.state_dim)
            total += self._write_episode(ep)
        return total

    def _write_episode(self, ep: EpisodeTransitions) -> int:
        n = len(ep)
        rewards, dones = ep.rewards, ep.dones
        # Contiguous write from the write position, in at most two pieces (ring wrap).
        first = min(n, self.capacity - self._pos)
        for dst, lo, hi in ((self._pos, 0, first), (0, first, n)):
            if hi <= lo:
                continue
            end = dst + hi - lo
            _cast_into(self._states[dst:end], ep.states[lo:hi])  # to the storage dtype
            self._actions[dst:end] = ep.actions[lo:hi]
            self._rewards[dst:end] = rewards[lo:hi]
            self._dones[dst:end] = dones[lo:hi]
            self._policy_versions[dst:end] = ep.policy_version
        evicted = max(0, self._size + n - self.capacity)
        self._size = min(self.capacity, self._size + n)
        self._pos = (self._pos + n) % self.capacity
        self._counters["inserted_transitions"] += n
        self._counters["inserted_episodes"] += 1
        self._counters["evicted_transitions"] += evicted
        return n

    # --- sampling --------------------------------------------------------------------
    def sample(self, n: int, rng: np.random.Generator) -> TransitionBatch:
        """``n`` transitions drawn uniformly with replacement, as float32 arrays."""
        self._check_sample_size(n)
        idx = rng.integers(0, self._size, size=int(n))
        dones = self._dones[idx]
        states = np.empty((int(n), self._state_dim), np.float32)
        next_states = np.empty_like(states)
        _cast_into(states, self._states[idx])
        _cast_into(next_states, self._states[(idx + 1) % self.capacity])
        next_states[dones] = 0.0  # terminal: the successor slot belongs to another episode
        self._counters["sampled_transitions"] += int(n)
        return TransitionBatch(
            states=states,
            actions=self._actions[idx].astype(np.int64),
            rewards=self._rewards[idx],
            next_states=next_states,
            dones=dones.astype(np.float32),
            policy_versions=self._policy_versions[idx],
        )

    def _check_sample_size(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
            raise ValueError(f"batch size must be a positive int, got {n!r}")
        if self._size == 0:
            raise ValueError("cannot sample from an empty replay buffer")

    # --- snapshots -------------------------------------------------------------------
    def save(self, path: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> Path:
        """Write the stored slots (in slot order) to an Arrow IPC file, atomically.

        ``extra`` (JSON-able, e.g. the rate limiter state) is kept in the file metadata
        and returned by ``restore``.
        """
        path = Path(path)
        d = self._state_dim or 0
        width = d * self._dtype.itemsize
        meta = {
            "format": FORMAT_VERSION,
            "capacity": self.capacity,
            "state_dim": self._state_dim,
            "state_dtype": self.state_dtype,
            "size": self._size,
            "write_position": self._pos,
            "counters": self._counters,
            "extra": dict(extra or {}),
        }
        schema = pa.schema(
            [
                ("state", pa.binary(max(width, 1))),
                ("action", pa.int8()),
                ("reward", pa.float32()),
                ("done", pa.bool_()),
                ("policy_version", pa.int64()),
            ],
            metadata={_META_KEY: json.dumps(meta).encode()},
        )
        with atomic_path(path) as tmp:
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
                for lo in range(0, self._size, _SNAPSHOT_CHUNK):
                    hi = min(self._size, lo + _SNAPSHOT_CHUNK)
                    states = pa.FixedSizeBinaryArray.from_buffers(
                        pa.binary(width), hi - lo, [None, pa.py_buffer(self._states[lo:hi])]
                    )
                    writer.write_batch(
                        pa.record_batch(
                            [
                                states,
                                pa.array(self._actions[lo:hi]),
                                pa.array(self._rewards[lo:hi]),
                                pa.array(self._dones[lo:hi]),
                                pa.array(self._policy_versions[lo:hi]),
                            ],
                            schema=schema,
                        )
                    )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ReplayBuffer":
        """A new buffer with the snapshot's capacity, dtype and contents."""
        buffer, _ = cls._read(path)
        return buffer

    def restore(self, path: str | os.PathLike) -> dict[str, Any]:
        """Replace this buffer's contents by a snapshot's; returns the snapshot's ``extra``.

        The snapshot must have this buffer's capacity, dtype and (if known) state dim.
        Nothing changes if the file is missing, corrupt or does not match.
        """
        loaded, extra = self._read(path)
        if loaded.capacity != self.capacity or loaded.state_dtype != self.state_dtype:
            raise SnapshotError(
                f"snapshot {path} holds capacity {loaded.capacity} / {loaded.state_dtype}, "
                f"this buffer is capacity {self.capacity} / {self.state_dtype}"
            )
        if self._state_dim is not None and loaded.state_dim not in (None, self._state_dim):
            raise SnapshotError(
                f"snapshot {path} has state dim {loaded.state_dim}, "
                f"this buffer stores {self._state_dim}"
            )
        state_dim = self._state_dim
        self.__dict__.update(loaded.__dict__)
        if self._state_dim is None and state_dim is not None:
            self._allocate(state_dim)  # empty snapshot: keep the configured dimension
        return extra

    @classmethod
    def _read(cls, path: str | os.PathLike) -> tuple["ReplayBuffer", dict[str, Any]]:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"replay snapshot not found: {path}")
        try:
            with pa.memory_map(str(path), "r") as source:
                reader = pa.ipc.open_file(source)
                raw = (reader.schema.metadata or {}).get(_META_KEY)
                if raw is None:
                    raise SnapshotError(f"{path} is an Arrow file but not a replay snapshot")
                meta = json.loads(raw)
                if meta.get("format") != FORMAT_VERSION:
                    raise SnapshotError(
                        f"{path}: unsupported snapshot format {meta.get('format')!r}, "
                        f"expected {FORMAT_VERSION!r}"
                    )
                buffer = ReplayBuffer(  # the host ring only (a subclass's restore adds its parts)
                    capacity=meta["capacity"],
                    state_dim=meta["state_dim"],
                    state_dtype=meta["state_dtype"],
                )
                row = 0
                for i in range(reader.num_record_batches):
                    row = buffer._read_batch(reader.get_batch(i), row, path)
                if row != meta["size"]:
                    raise SnapshotError(f"{path}: {row} rows, metadata says {meta['size']}")
        except SnapshotError:
            raise
        except (pa.ArrowException, OSError, ValueError, KeyError, TypeError) as err:
            raise SnapshotError(f"cannot read replay snapshot {path}: {err}") from err
        buffer._size = int(meta["size"])
        buffer._pos = int(meta["write_position"])
        if not (0 <= buffer._pos < buffer.capacity) or buffer._size > buffer.capacity:
            raise SnapshotError(f"{path}: inconsistent size/write position in metadata")
        buffer._counters.update({k: int(v) for k, v in meta["counters"].items()})
        return buffer, meta.get("extra", {})

    def _read_batch(self, batch: pa.RecordBatch, row: int, path: Path) -> int:
        n = batch.num_rows
        if row + n > self.capacity or self._states is None:
            raise SnapshotError(f"{path}: more rows than the snapshot's capacity/state dim")
        states = batch.column("state")
        width = self._state_dim * self._dtype.itemsize
        if states.type != pa.binary(width) or states.null_count:
            raise SnapshotError(f"{path}: state column type {states.type}, expected {width} bytes")
        data = np.frombuffer(
            states.buffers()[1], np.uint8, count=n * width, offset=states.offset * width
        )
        self._states[row : row + n] = data.view(self._dtype).reshape(n, self._state_dim)
        self._actions[row : row + n] = batch.column("action").to_numpy()
        self._rewards[row : row + n] = batch.column("reward").to_numpy()
        self._dones[row : row + n] = batch.column("done").to_numpy(zero_copy_only=False)
        self._policy_versions[row : row + n] = batch.column("policy_version").to_numpy()
        return row + n
