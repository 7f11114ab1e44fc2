"""Replay: a numpy ring buffer of transitions, a Reverb-style rate limiter and the Ray
actor that combines them. Import the actor from ``replay.actor`` (it imports ray)."""

from replay.buffer import ReplayBuffer, SnapshotError
from replay.config import ReplayConfig
from replay.rate_limiter import SampleToInsertRatio

__all__ = ["ReplayBuffer", "ReplayConfig", "SampleToInsertRatio", "SnapshotError"]
