"""The learner with the replay buffer in its own process (``replay.in_learner: true``).

By default the replay is an actor of its own and the learner samples it through Ray: each
batch is serialised, copied through the object store and deserialised (at d = 4096, fp16,
batch 1024: 16 MiB). ``LearnerWithReplay`` is one actor that is both: a ``LearnerService``
whose ``run`` loop samples a ``ReplayServer`` held in the same process, with a plain call.
It also answers the replay's methods (``add``, ``sample``, ``size``, ``stats``, ``save``,
``restore``, ``stop_limiting``) under the same names, so reward actors insert and the driver
snapshots through its handle exactly as through a replay actor's: nothing else changes.

The ``ReplayServer`` is an asyncio class; it gets an event loop of its own, on a thread of
this (threaded) actor, and every call goes to that loop (``asyncio.run_coroutine_threadsafe``),
so its waiting inserts and samples behave as in the replay actor. Both are built from the
run folder, so when Ray rebuilds this actor, the learner restarts from its newest checkpoint
and the buffer from its snapshot, as the two actors do.

With ``replay.on_learner_device`` the buffer also keeps a copy on the learner's device and
batches are gathered there (replay/device_buffer.py): only the sampled indices cross the
host-device link.

This lives in the driver layer because it composes two components of the layer below
(``learner`` and ``replay`` do not import each other).
"""

from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import fields
from typing import Any, Sequence

import torch

from core.config import ReplayConfig
from core.contracts import EpisodeTransitions, TransitionBatch
from learner.service import LearnerService
from replay.server import ReplayServer


class LearnerWithReplay(LearnerService):
    """A ``LearnerService`` that holds the run's ``ReplayServer`` and samples it locally."""

    def __init__(self, *, replay_config: ReplayConfig, replay_snapshot: str | os.PathLike | None = None,
                 state_dim: int, **learner_kwargs: Any) -> None:
        super().__init__(state_dim=state_dim, **learner_kwargs)
        # replay.on_learner_device: batches are drawn where the learner trains (its GPU).
        device = str(self._learner.device) if replay_config.on_learner_device else None
        self._replay = ReplayServer(config=replay_config, state_dim=state_dim, snapshot=replay_snapshot,
                                    device=device)
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="replay-event-loop", daemon=True).start()

    def _on_loop(self, coroutine):
        """Run one of the replay's coroutines on its event loop; returns the concurrent future."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    # -- the learner samples its own buffer -------------------------------------------------

    def _request_sample(self, replay, timeout_s: float):
        # ``replay`` is this actor's own handle (the driver passes it as it would a replay's).
        return self._on_loop(self._replay.sample(self._batch_size, timeout_s=timeout_s))

    def _collect_sample(self, request) -> TransitionBatch | None:
        return request.result()

    # -- the replay's methods, for reward actors and the driver --------------------------------

    def add(self, episodes: Sequence[EpisodeTransitions]) -> int:
        return self._on_loop(self._replay.add(episodes)).result()

    def sample(self, n: int, timeout_s: float | None = None) -> TransitionBatch | None:
        """A batch for another process: as numpy arrays, also when the buffer samples on the
        learner's device (a caller without that GPU could not read its tensors)."""
        batch = self._on_loop(self._replay.sample(n, timeout_s=timeout_s)).result()
        if batch is None:
            return None
        return TransitionBatch(**{f.name: _on_host(getattr(batch, f.name)) for f in fields(batch)})

    def stats(self) -> dict[str, Any]:
        return self._on_loop(self._replay.stats()).result()

    def save(self, path: str | os.PathLike) -> dict[str, Any]:
        return self._on_loop(self._replay.save(path)).result()

    def stop_limiting(self, samples_too: bool = False) -> None:
        return self._on_loop(self._replay.stop_limiting(samples_too=samples_too)).result()


def _on_host(value):
    """A field of a batch as a numpy array (a torch tensor, maybe on a GPU, copied back)."""
    return value.cpu().numpy() if isinstance(value, torch.Tensor) else value
