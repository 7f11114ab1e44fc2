"""The replay service: buffer + Reverb-style rate limiter behind one asyncio Ray actor.

``ReplayServer`` is a plain asyncio class (testable without Ray); the driver makes it an
actor (async methods make it an asyncio actor, so waiting calls do not block others)::

    replay = start_actor(ReplayServer, {"num_cpus": 0}, config=ReplayConfig(), state_dim=4096)
    inserted = ray.get(replay.add.remote(episodes))               # a reward actor, after scoring
    batch = ray.get(replay.sample.remote(1024, timeout_s=5.0))   # the learner; None on timeout

``add`` waits while the rate limiter blocks inserts; the reward actor that calls it waits
for the answer, so a full buffer slows scoring, which the driver sees as scored batches
arriving late and answers by handing out fewer rollout calls (the backpressure).
``sample`` waits until sampling is allowed. Every state change notifies all waiters.

No deadlock: Reverb's unit-size rule (error_buffer >= 2 * max(1, spi)) guarantees that
an insert of 1 or a sample of 1 is always allowed. Our inserts are whole episodes (T
transitions) and samples whole batches (n), so both can be blocked at once when
T * spi + n > 2 * error_buffer. When that happens while a sample is waiting, the oldest
waiting insert goes ahead anyway (counted in ``forced_inserts``): it is the side that
unblocks the sample. A forced insert only happens while diff < n - error_buffer, so the
diff stays below n - error_buffer + T * spi (one episode above what the sample needs).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from core.config import ReplayConfig
from core.contracts import EpisodeTransitions, TransitionBatch
from replay.buffer import ReplayBuffer
from replay.rate_limiter import SampleToInsertRatio


class ReplayServer:
    """Replay buffer + SampleToInsertRatio limiter with asyncio waiting (one event loop)."""

    def __init__(self, *, config: ReplayConfig, state_dim: int | None = None,
                 snapshot: str | os.PathLike | None = None, device: str | None = None) -> None:
        """``snapshot``: a snapshot file to start from when it exists (a resumed run, or the
        actor rebuilt by Ray after it died); a corrupt one raises, so Ray gives up on the actor
        and the driver stops the run with the reason. ``device``: sample on this torch device
        (a DeviceReplayBuffer; the learner's, with ``replay.on_learner_device``)."""
        if not isinstance(config, ReplayConfig):
            raise TypeError(f"config must be a ReplayConfig, got {type(config).__name__}")
        self._config = config
        sizes = dict(capacity=config.capacity, state_dim=state_dim, state_dtype=config.state_dtype)
        if device is None:
            self._buffer = ReplayBuffer(**sizes)
        else:
            from replay.device_buffer import DeviceReplayBuffer  # torch: only where it is used

            self._buffer = DeviceReplayBuffer(**sizes, device=device)
        self._limiter = self._new_limiter()
        self._rng = np.random.default_rng(config.seed)
        self._cond: asyncio.Condition | None = None  # made in the actor's event loop
        self._waiting_inserts = 0
        self._waiting_samples: list[int] = []  # batch sizes of samples now waiting
        self._forced_inserts = 0
        self._limiting = True  # False once the run ends: inserts no longer wait for samples
        self._ratio_limited_samples = True  # False in a synchronous run: the driver paces the learner
        self._incarnation = uuid.uuid4().hex  # a new one each time the actor is (re)built
        self._restored: dict[str, Any] | None = None  # what it started from
        if snapshot is not None and Path(snapshot).is_file():
            self._apply_snapshot(self._buffer.restore(snapshot))
            self._restored = {"path": str(snapshot), "size": self._buffer.size()}

    def _new_limiter(self) -> SampleToInsertRatio:
        return SampleToInsertRatio(
            samples_per_insert=self._config.samples_per_insert,
            min_size_to_sample=self._config.min_size_to_sample,
            error_buffer=self._config.error_buffer,
        )

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    def _sample_blocked(self) -> bool:
        return any(not self._limiter.can_sample(n) for n in self._waiting_samples)

    def _may_insert(self, n: int) -> bool:
        return not self._limiting or self._limiter.can_insert(n) or self._sample_blocked()

    # --- remote methods --------------------------------------------------------------
    async def add(self, episodes: Sequence[EpisodeTransitions]) -> int:
        """Store whole episodes once the limiter allows; returns transitions stored.

        Raises ValueError on a state-dimension mismatch or an episode longer than the
        ring; skips (and counts) episodes with non-finite values, keeping the others.
        """
        cond = self._condition()
        async with cond:
            good = self._buffer.screen(episodes)
            n = sum(len(ep) for ep in good)
            if n == 0:
                return 0
            self._waiting_inserts += 1
            try:
                await cond.wait_for(lambda: self._may_insert(n))
            finally:
                self._waiting_inserts -= 1
            if not self._limiter.can_insert(n):
                self._forced_inserts += 1
            evicted_before = self._buffer.stats()["evicted_transitions"]
            stored = self._buffer.write(good)
            self._limiter.insert(stored)
            evicted = self._buffer.stats()["evicted_transitions"] - evicted_before
            if evicted:
                self._limiter.delete(evicted)
            cond.notify_all()
            return stored

    async def sample(self, n: int, timeout_s: float | None = None) -> TransitionBatch | None:
        """``n`` uniformly drawn transitions once the limiter allows, None on timeout."""
        cond = self._condition()
        async with cond:
            if not self._may_sample(n):  # also validates n
                self._waiting_samples.append(n)
                cond.notify_all()  # a blocked insert may now go ahead (see module doc)
                try:
                    await asyncio.wait_for(
                        cond.wait_for(lambda: self._may_sample(n)), timeout_s
                    )
                except asyncio.TimeoutError:
                    return None
                finally:
                    self._waiting_samples.remove(n)
            batch = self._buffer.sample(n, self._rng)
            self._limiter.sample(n)
            cond.notify_all()
            return batch

    def _may_sample(self, n: int) -> bool:
        if self._ratio_limited_samples:
            return self._limiter.can_sample(n)
        return self._limiter.can_sample(n) or self._buffer.size() >= max(self._config.min_size_to_sample, 1)

    async def stop_limiting(self, samples_too: bool = False) -> None:
        """The run is ending: let every insert in without waiting for samples (the learner
        may already have stopped sampling, and the episodes in flight are paid for). With
        ``samples_too`` (a synchronous run, whose driver decides when the learner updates),
        samples no longer wait for inserts either, once the buffer holds min_size_to_sample."""
        cond = self._condition()
        async with cond:
            self._limiting = False
            self._ratio_limited_samples = not samples_too
            cond.notify_all()

    async def stats(self) -> dict[str, Any]:
        lim = self._limiter
        after_min = lim.inserts - lim.min_size_to_sample
        buffer_stats = self._buffer.stats()
        return {
            **buffer_stats,
            "inserts": lim.inserts,
            "samples": lim.samples,
            "samples_per_insert": lim.samples / lim.inserts if lim.inserts else 0.0,
            # The limiter's target applies after min size: samples / (inserts - min_size).
            "samples_per_insert_after_min_size": lim.samples / after_min if after_min > 0 else 0.0,
            "target_samples_per_insert": lim.samples_per_insert,
            "limiter_diff": lim.diff,
            "error_buffer": lim.error_buffer,
            "forced_inserts": self._forced_inserts,
            "waiting_inserts": self._waiting_inserts,
            "waiting_samples": len(self._waiting_samples),
            "incarnation": self._incarnation,
            "restored": self._restored,
        }

    async def save(self, path: str | os.PathLike) -> dict[str, Any]:
        """Snapshot buffer, limiter counters and sampling RNG to one Arrow file, atomically.

        Returns the file, the transitions it holds and the seconds inserts and samples were
        held back while it was written (the learner's pause).
        """
        cond = self._condition()
        async with cond:  # no add/sample while writing; stats() still answers
            start = time.perf_counter()
            extra = {
                "rate_limiter": self._limiter.state(),
                "rng": self._rng.bit_generator.state,
                "forced_inserts": self._forced_inserts,
            }
            out = await asyncio.to_thread(self._buffer.save, path, extra)
            return {"path": str(out), "size": self._buffer.size(), "seconds": time.perf_counter() - start}

    def _apply_snapshot(self, extra: dict[str, Any]) -> None:
        """The limiter's counters and the sampling RNG of a snapshot just loaded into the buffer."""
        if "rate_limiter" in extra:
            limiter = self._new_limiter()
            counters = {k: extra["rate_limiter"][k] for k in ("inserts", "deletes", "samples")}
            self._limiter = SampleToInsertRatio.from_state({**limiter.state(), **counters})
        else:  # a plain buffer snapshot: count what it holds as inserted
            self._limiter = self._new_limiter()
            if self._buffer.size():
                self._limiter.insert(self._buffer.size())
        if "rng" in extra:
            self._rng.bit_generator.state = extra["rng"]
        self._forced_inserts = int(extra.get("forced_inserts", 0))

