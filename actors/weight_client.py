"""WeightClient: keeps a rollout worker's actor MLP at the learner's newest weights without
ever waiting for the learner (Acme's variable client, for Ray).

A weight poll to the learner is always in flight. Its answer is the new version and a
*reference* to the weights in Ray's object store (``LearnerService.latest_weights``), not
the arrays: a background thread of the client then fetches the object (``ray.get``, which
pulls it into the worker's node once, so workers on one node share one copy) and the
worker loads it before its next batch of episodes. Between two calls the worker only
looks whether the poll or the fetch has finished; it never blocks on them, except once at
start, so that a new worker starts from the learner's weights rather than from random ones.

    client = WeightClient(learner, actor)      # waits for the first weights
    version = client.update()                  # before each batch of episodes: never waits
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import ray
import torch


class WeightClient:
    def __init__(self, learner, module: torch.nn.Module) -> None:
        self._learner = learner
        self._module = module
        self._fetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="weights")
        self.version = -1  # weight version loaded into the module
        self.fetches = 0  # weight versions fetched from the object store so far
        self._incarnation: str | None = None  # of the learner that published it
        self._fetch: tuple[int, str, Future] | None = None  # (version, incarnation, the arrays on their way)
        version, incarnation, weights_ref = ray.get(learner.latest_weights.remote(have_version=None))
        self._load(version, incarnation, ray.get(weights_ref))

    def update(self) -> int:
        """Load newer weights if they have arrived; never waits. Returns the version in use."""
        if self._fetch is None:
            ready, _ = ray.wait([self._poll], timeout=0)
            if not ready:
                return self.version  # the learner has not answered: keep the current weights
            answer = ray.get(self._poll)
            if answer is None:  # nothing newer than ours
                self._poll_again()
                return self.version
            version, incarnation, weights_ref = answer
            self._fetch = (version, incarnation, self._fetcher.submit(ray.get, weights_ref))
        version, incarnation, arrays = self._fetch
        if arrays.done() and arrays.exception() is not None:  # lost with a learner that died: ask again
            self._fetch = None
            self._poll_again()
        elif arrays.done():
            self._load(version, incarnation, arrays.result())
        return self.version

    def _load(self, version: int, incarnation: str, weights: dict[str, np.ndarray]) -> None:
        # The arrays are read-only views of the object store's shared copy: copy into the module.
        self._module.load_state_dict({k: torch.as_tensor(np.array(v)) for k, v in weights.items()})
        self.version, self._incarnation = version, incarnation
        self.fetches += 1
        self._fetch = None
        self._poll_again()

    def _poll_again(self) -> None:
        self._poll = self._learner.latest_weights.remote(have_version=self.version,
                                                         have_incarnation=self._incarnation)
