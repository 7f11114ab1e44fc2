"""WeightClient: keeps a rollout worker's actor MLP at the learner's newest weights without
ever waiting for the learner (Acme's variable client, for Ray).

A weight poll to the learner is always in flight. Its answer is the new version and a
*reference* to the weights in Ray's object store (``LearnerService.latest_weights``), not
the arrays: the client then starts fetching the object into its node's store and loads it
once it is there. Workers on one node thus share one copy of each version, and between
two calls the worker only looks whether the poll or the fetch has finished
(``ray.wait(timeout=0)``); it never blocks on them, except once at start, so that a new
worker starts from the learner's weights rather than from random ones.

    client = WeightClient(learner, actor)      # waits for the first weights
    version = client.update()                  # before each batch of episodes: never waits
"""

from __future__ import annotations

import numpy as np
import ray
import torch


class WeightClient:
    def __init__(self, learner, module: torch.nn.Module) -> None:
        self._learner = learner
        self._module = module
        self.version = -1  # weight version loaded into the module
        self._poll = learner.latest_weights.remote(have_version=None)
        self._fetch: tuple[int, ray.ObjectRef] | None = None  # (version, weights) being fetched
        version, weights_ref = ray.get(self._poll)
        self._load(version, ray.get(weights_ref))

    def update(self) -> int:
        """Load newer weights if they have arrived; never waits. Returns the version in use."""
        if self._fetch is None:
            ready, _ = ray.wait([self._poll], timeout=0)
            if not ready:
                return self.version  # the learner has not answered: keep the current weights
            self._fetch = ray.get(self._poll)  # None: nothing newer than ours
            if self._fetch is None:
                self._poll_again()
                return self.version
        version, weights_ref = self._fetch
        ready, _ = ray.wait([weights_ref], timeout=0, fetch_local=True)  # starts the transfer
        if ready:
            self._load(version, ray.get(weights_ref))
        return self.version

    def _load(self, version: int, weights: dict[str, np.ndarray]) -> None:
        # The arrays are read-only views of the object store's shared copy: copy into the module.
        self._module.load_state_dict({k: torch.as_tensor(np.array(v)) for k, v in weights.items()})
        self.version = version
        self._fetch = None
        self._poll_again()

    def _poll_again(self) -> None:
        self._poll = self._learner.latest_weights.remote(have_version=self.version)
