"""Sample-to-insert ratio rate limiter with DeepMind Reverb's semantics (pure Python).

Reverb (``reverb/cc/rate_limiter.cc`` and ``reverb.rate_limiters.SampleToInsertRatio``)
keeps three counters, ``inserts``, ``deletes`` and ``samples``, and two bounds derived
from the arguments::

    min_diff = samples_per_insert * min_size_to_sample - error_buffer
    max_diff = samples_per_insert * min_size_to_sample + error_buffer

    can_sample(n): inserts - deletes >= min_size_to_sample
                   and inserts * spi - samples - n >= min_diff
    can_insert(n): inserts + n - deletes <= min_size_to_sample     (free until min size)
                   or (inserts + n) * spi - samples <= max_diff

Equivalently, with ``diff = (inserts - min_size) * spi - samples``: below the minimum
size only sampling is blocked; above it inserts block when the diff would exceed
``+error_buffer`` and samples block when it would fall below ``-error_buffer``. Reverb
refuses ``error_buffer < 2 * max(1, spi)``, which could block both sides at once.

Units here: one insert is one transition and one sample is one sampled transition, so a
learner batch of 1024 is ``sample(1024)`` and an episode of T decisions ``insert(T)``.

Usage::

    limiter = SampleToInsertRatio(samples_per_insert=32.0, min_size_to_sample=65536,
                                  error_buffer=131072.0)
    if limiter.can_insert(len(episode)):
        ...write...; limiter.insert(len(episode))
    if limiter.can_sample(1024):
        ...draw...; limiter.sample(1024)
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

from core.config import validate_ratio


class SampleToInsertRatio:
    """Reverb's SampleToInsertRatio rate limiter; the caller waits, this class decides."""

    def __init__(
        self,
        *,
        samples_per_insert: float,
        min_size_to_sample: int,
        error_buffer: float,
    ) -> None:
        validate_ratio(samples_per_insert, error_buffer)
        if isinstance(min_size_to_sample, bool) or not isinstance(min_size_to_sample, Integral):
            raise ValueError(f"min_size_to_sample must be an int, got {min_size_to_sample!r}")
        if min_size_to_sample < 1:
            raise ValueError(f"min_size_to_sample must be >= 1, got {min_size_to_sample}")
        self.samples_per_insert = float(samples_per_insert)
        self.min_size_to_sample = int(min_size_to_sample)
        self.error_buffer = float(error_buffer)
        offset = self.samples_per_insert * self.min_size_to_sample
        self.min_diff = offset - self.error_buffer
        self.max_diff = offset + self.error_buffer
        self.inserts = 0  # transitions ever inserted
        self.deletes = 0  # transitions ever removed (overwritten in the ring)
        self.samples = 0  # transitions ever sampled

    # --- decisions -------------------------------------------------------------------
    def can_insert(self, n: int = 1) -> bool:
        _check_count(n)
        if self.inserts + n - self.deletes <= self.min_size_to_sample:
            return True  # until the min size is reached inserts are free to progress
        return (self.inserts + n) * self.samples_per_insert - self.samples <= self.max_diff

    def can_sample(self, n: int = 1) -> bool:
        _check_count(n)
        if self.inserts - self.deletes < self.min_size_to_sample:
            return False
        return self.inserts * self.samples_per_insert - self.samples - n >= self.min_diff

    # --- bookkeeping (the caller commits what it did) --------------------------------
    def insert(self, n: int = 1) -> None:
        _check_count(n)
        self.inserts += int(n)

    def delete(self, n: int = 1) -> None:
        _check_count(n)
        if self.deletes + n > self.inserts:
            raise ValueError(f"cannot delete {n}: only {self.inserts - self.deletes} stored")
        self.deletes += int(n)

    def sample(self, n: int = 1) -> None:
        _check_count(n)
        self.samples += int(n)

    # --- introspection ---------------------------------------------------------------
    @property
    def size(self) -> int:
        return self.inserts - self.deletes

    @property
    def diff(self) -> float:
        """(inserts - min_size) * spi - samples: 0 on target, +/- error_buffer at the bounds."""
        return (self.inserts - self.min_size_to_sample) * self.samples_per_insert - self.samples

    def state(self) -> dict[str, Any]:
        """A JSON-able snapshot (arguments and counters)."""
        return {
            "samples_per_insert": self.samples_per_insert,
            "min_size_to_sample": self.min_size_to_sample,
            "error_buffer": self.error_buffer,
            "inserts": self.inserts,
            "deletes": self.deletes,
            "samples": self.samples,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "SampleToInsertRatio":
        limiter = cls(
            samples_per_insert=state["samples_per_insert"],
            min_size_to_sample=int(state["min_size_to_sample"]),
            error_buffer=state["error_buffer"],
        )
        inserts, deletes, samples = (int(state[k]) for k in ("inserts", "deletes", "samples"))
        if min(inserts, deletes, samples) < 0 or deletes > inserts:
            raise ValueError(f"inconsistent rate limiter counters: {state}")
        limiter.inserts, limiter.deletes, limiter.samples = inserts, deletes, samples
        return limiter

    def __repr__(self) -> str:
        return (
            f"SampleToInsertRatio(spi={self.samples_per_insert}, "
            f"min_size={self.min_size_to_sample}, error_buffer={self.error_buffer}, "
            f"inserts={self.inserts}, deletes={self.deletes}, samples={self.samples})"
        )


def _check_count(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
        raise ValueError(f"count must be a positive int, got {n!r}")
