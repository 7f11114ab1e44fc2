"""Waiting for an asynchronous event in a test: poll its condition until it holds, with a
generous deadline (the standards: never assert on the timing of an asynchronous event)."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")

DEADLINE_S = 240.0  # slow on CI's 2 busy cores, but a hang still fails


def wait_for(condition: Callable[[], T], what: str, timeout_s: float = DEADLINE_S, every_s: float = 0.25,
             while_alive: Callable[[], bool] | None = None) -> T:
    """Poll ``condition`` until it returns a true value and return that value. Fails after
    ``timeout_s``, or as soon as ``while_alive`` (e.g. the training thread's is_alive) says
    that what was to produce the event has stopped."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        assert while_alive is None or while_alive(), f"stopped before {what}"
        time.sleep(every_s)
    return value
