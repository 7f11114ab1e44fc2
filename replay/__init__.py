"""Replay: a numpy ring buffer of transitions, a Reverb-style rate limiter and the service
that combines them (``replay.server.ReplayServer``, run by the driver as a Ray actor).
Its configuration (``ReplayConfig``) is in core/config.py."""

from replay.buffer import ReplayBuffer, SnapshotError
from replay.rate_limiter import SampleToInsertRatio

__all__ = ["ReplayBuffer", "SampleToInsertRatio", "SnapshotError"]
