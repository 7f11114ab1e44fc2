"""Configuration of the replay component (buffer + Reverb-style rate limiter).

One frozen dataclass; ``__post_init__`` validates and raises, it never rewrites a value.
Units: one *insert* is one transition (one accept/reject decision), one *sample* is one
transition drawn for the learner (a batch of 1024 counts 1024).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

STATE_DTYPES = ("float16", "float32")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class ReplayConfig:
    """Replay buffer and rate-limiter settings."""

    # --- storage -------------------------------------------------------------------
    capacity: int = 1_000_000
    """Ring-buffer size in transitions (reference: 1e6). The oldest transitions are
    overwritten first."""

    state_dtype: str = "float16"
    """Storage dtype of hidden states: "float16" (2 bytes/feature, the default) or
    "float32" (bit-exact). Batches handed to the learner are always float32."""

    # --- rate limiter (DeepMind Reverb's SampleToInsertRatio) ------------------------
    min_size_to_sample: int = 65_536
    """No sampling until the buffer holds this many transitions (reference: 64 x batch
    1024)."""

    samples_per_insert: float = 32.0
    """Target sampled transitions per inserted transition. The reference runs 10
    updates of batch 1024 per finished episode of roughly 300 decisions: ~34."""

    error_buffer: float = 131_072.0
    """Tolerance, in sampled transitions, around the target ratio: inserts block when
    (inserts - min_size) * spi - samples > +error_buffer, samples block below
    -error_buffer. Reverb requires >= 2 * max(1, spi) (smaller deadlocks). Our inserts
    (whole episodes) and samples (whole batches) are chunks, so a buffer of at least
    (episode_len * spi + batch) / 2 also lets one episode and one batch never block each
    other; the default (4096 transitions' worth at spi 32, i.e. 128 batches of 1024)
    covers episodes up to ~4000 decisions."""

    seed: int = 0
    """Seed of the sampling random generator."""

    def __post_init__(self) -> None:
        if not _is_int(self.capacity) or self.capacity < 1:
            raise ValueError(f"capacity must be a positive int, got {self.capacity!r}")
        if self.state_dtype not in STATE_DTYPES:
            raise ValueError(f"state_dtype must be one of {STATE_DTYPES}, got {self.state_dtype!r}")
        if not _is_int(self.min_size_to_sample) or self.min_size_to_sample < 1:
            raise ValueError(
                f"min_size_to_sample must be a positive int, got {self.min_size_to_sample!r}"
            )
        if self.min_size_to_sample > self.capacity:
            raise ValueError(
                f"min_size_to_sample ({self.min_size_to_sample}) exceeds capacity "
                f"({self.capacity}): sampling could never start"
            )
        validate_ratio(self.samples_per_insert, self.error_buffer)
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")


def validate_ratio(samples_per_insert: float, error_buffer: float) -> None:
    """Reverb's checks on SampleToInsertRatio arguments (shared with the limiter)."""
    if isinstance(samples_per_insert, bool) or not isinstance(samples_per_insert, (int, float)):
        raise ValueError(f"samples_per_insert must be a number, got {samples_per_insert!r}")
    if not math.isfinite(samples_per_insert) or samples_per_insert <= 0:
        raise ValueError(f"samples_per_insert must be finite and > 0, got {samples_per_insert}")
    if isinstance(error_buffer, bool) or not isinstance(error_buffer, (int, float)):
        raise ValueError(f"error_buffer must be a number, got {error_buffer!r}")
    if not math.isfinite(error_buffer):
        raise ValueError(f"error_buffer must be finite, got {error_buffer}")
    minimum = 2.0 * max(1.0, float(samples_per_insert))
    if error_buffer < minimum:
        raise ValueError(
            f"error_buffer ({error_buffer}) must be >= 2 * max(1, samples_per_insert) = "
            f"{minimum}; a smaller buffer can block inserts and samples at the same time "
            "(Reverb refuses it for the same reason)"
        )
