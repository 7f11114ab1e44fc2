"""The prompt queue: hands out training prompts in a fixed shuffled order, without overlap
between workers, and hands out again first the prompts of calls that were lost."""

from __future__ import annotations

import random
from collections import deque


class PromptQueue:
    """Prompts in a fixed shuffled order; the position and the retry list are what a
    resumed run needs to continue where this one stopped."""

    def __init__(self, prompts: list[str], seed: int, position: int = 0, retry: list[str] = ()) -> None:
        self.prompts = list(prompts)
        random.Random(seed).shuffle(self.prompts)
        self.position = position
        self.retry = deque(retry)

    def take(self, n: int) -> list[str]:
        out = [self.retry.popleft() for _ in range(min(n, len(self.retry)))]
        while len(out) < n:
            out.append(self.prompts[self.position % len(self.prompts)])
            self.position += 1
        return out

    def give_back(self, prompts: list[str]) -> None:
        self.retry.extend(prompts)
