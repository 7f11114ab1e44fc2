"""LearnerService: the SAC learner as a service process (a thin wrapper around ``SACLearner``).

A plain class; the driver makes it a threaded Ray actor (``max_concurrency >= 2``): one
thread runs the training loop (``run``) while the others answer weight polls, metrics and
``stop``. Usage (what driver/components.py and the rollout workers' WeightClient do)::

    learner = start_actor(LearnerService, {"max_concurrency": 4},      # actors/worker_group.py
                          state_dim=576, sac=SACConfig(), config=LearnerConfig(), run_dir="runs/x")
    done = learner.run.remote(replay, until_updates=10_000)   # returns at once: an ObjectRef
    version, incarnation, weights_ref = ray.get(learner.latest_weights.remote(have_version=None))
    weights = ray.get(weights_ref)                              # dict[str, np.ndarray], read-only
    learner.stop.remote(); stats = ray.get(done)                # checkpoints on the way out

Weights are published once per version into Ray's object store (``ray.put`` when the
version is made); a poll answers with the version and the object's reference only, so a
worker fetches the arrays itself and workers on one node read one shared copy.

The loop prefetches: it asks the replay for batch n + 1 before it computes update n, so
sampling (and its transfer) overlaps the gradient step. ``replay.sample`` returns a
``TransitionBatch`` or ``None`` when its rate limiter says "not yet"; ``None`` means wait
a little and ask again.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray
import torch

from core.atomic import write_json_atomic
from core.config import LearnerConfig, SACConfig
from core.state_features import PAPER_STATE
from learner.learner import MANIFEST_FILE, SACLearner
from learner.sac import UpdateMetrics

CHECKPOINTS_DIR = "checkpoints"
LATEST_FILE = "latest.json"
_CHECKPOINT_RE = re.compile(r"^update_(\d+)$")
_MAX_RETRY_SLEEP_S = 0.05  # longest pause between two sample calls that returned None


@dataclass(frozen=True)
class LearnerStats:
    """What ``LearnerService.metrics()`` reports: recent means and the current run's timing."""

    updates: int  # gradient updates so far (over restarts)
    version: int  # latest published weight version
    alpha: float  # current temperature
    critic_loss: float  # mean over the recent window
    actor_loss: float
    entropy: float  # mean policy entropy (nats)
    q_mean: float
    accept_prob: float  # mean pi(accept | s) on sampled states
    policy_version_lag: float  # mean (current version - mean policy version of the batch)
    updates_per_second: float  # over the recent window of updates
    run_updates: int  # updates done by the current (or last) run() call
    wall_s: float  # wall time of the current (or last) run() call
    wait_s: float  # time of that run spent waiting for replay data
    update_s: float  # time of that run spent in gradient updates
    update_share: float  # update_s / wall_s
    empty_samples: int  # sample calls that returned None in that run
    running: bool
    incarnation: str  # changes each time Ray rebuilds the actor
    restored: str | None  # the checkpoint this incarnation started from


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder of a run, or None if it has none."""
    pointer = Path(run_dir) / CHECKPOINTS_DIR / LATEST_FILE
    if not pointer.is_file():
        return None
    path = Path(run_dir) / CHECKPOINTS_DIR / json.loads(pointer.read_text())["path"]
    return path if (path / MANIFEST_FILE).is_file() else None


class LearnerService:
    """The SAC learner as a service: continuous training loop, versioned weights, checkpoints."""

    def __init__(self, *, state_dim: int, sac: SACConfig, config: LearnerConfig, seed: int = 0,
                 upstream_model: str = "", run_dir: str | None = None, state_features: str = PAPER_STATE) -> None:
        """With a ``run_dir`` that holds a checkpoint (a resumed run, or this actor rebuilt
        by Ray after it died) the learner starts from the newest complete one; else, with
        ``config.init_agent``, its actor starts from that agent file."""
        torch.set_num_threads(max(1, int(config.num_cpus)))  # Ray sets OMP_NUM_THREADS=1 in workers
        self._learner = SACLearner(state_dim=state_dim, sac=sac, device=config.device, seed=seed,
                                   upstream_model=upstream_model, state_features=state_features)
        self._config = config
        self._batch_size = sac.batch_size
        self._run_dir = Path(run_dir) if run_dir is not None else None

        self._train_lock = threading.Lock()  # guards the learner state
        self._stop = threading.Event()
        self._running = False
        self._recent: deque[UpdateMetrics] = deque(maxlen=config.metrics_window)
        self._update_ends: deque[float] = deque(maxlen=config.metrics_window + 1)  # for updates/s
        self._reset_run_timing()
        self._last_checkpoint_updates = -1

        self._incarnation = uuid.uuid4().hex  # a new one each time the actor is (re)built
        self._restored: str | None = None  # the checkpoint it started from
        found = latest_checkpoint(self._run_dir) if self._run_dir is not None else None
        if found is not None:
            self._learner.restore_checkpoint(found)
            self._last_checkpoint_updates = self._learner.updates
            self._restored = found.name
        elif config.init_agent:  # a warm start: version 0 is the loaded actor
            self._learner.load_actor(config.init_agent)
        self._published: tuple[int, ray.ObjectRef] | None = None
        self._store_weights(self._learner.version, self._learner.actor_weights())

    # -- training loop -------------------------------------------------------------------

    def run(self, replay, until_updates: int | None = None,
            max_seconds: float | None = None, checkpoint_at_end: bool = True) -> LearnerStats:
        """Train until ``stop()``, until the learner has made ``until_updates`` updates in all
        (resumed and restarted parts included: the driver's call is retried as it is when Ray
        rebuilds the actor), or for ``max_seconds`` seconds. A synchronous run calls it once
        per round of episodes, with ``checkpoint_at_end=False`` (checkpoints then come every
        ``checkpoint_every`` updates and at the run's end, as in an asynchronous run)."""
        if self._running:
            raise RuntimeError("LearnerService.run is already running")
        self._running = True
        self._reset_run_timing()
        t0 = time.perf_counter()
        self._run_start = t0
        retry_sleep = 0.0
        last_published = self._learner.updates
        timeout_s = self._config.sample_timeout_s

        def more_wanted(extra: int = 0) -> bool:
            return until_updates is None or self._learner.updates + extra < until_updates

        def in_time() -> bool:
            return max_seconds is None or time.perf_counter() - t0 < max_seconds

        pending = self._request_sample(replay, timeout_s) if more_wanted() else None
        try:
            while pending is not None and not self._stop.is_set() and more_wanted() and in_time():
                wait_start = time.perf_counter()
                batch = self._collect_sample(pending)
                # Prefetch: ask for the next batch before computing on this one.
                pending = None
                if more_wanted(1 if batch is not None else 0):
                    pending = self._request_sample(replay, timeout_s)
                if batch is None:
                    self._empty_samples += 1
                    retry_sleep = min(max(2 * retry_sleep, 1e-3), _MAX_RETRY_SLEEP_S)
                    self._stop.wait(retry_sleep)
                    self._wait_s += time.perf_counter() - wait_start
                    continue
                retry_sleep = 0.0
                update_start = time.perf_counter()
                with self._train_lock:
                    metrics = self._learner.update(batch)
                update_end = time.perf_counter()
                self._update_ends.append(update_end)
                self._recent.append(metrics)
                self._wait_s += update_start - wait_start
                self._update_s += update_end - update_start
                self._run_updates += 1
                updates = self._learner.updates
                if updates % self._config.publish_every == 0:
                    self._publish()
                    last_published = updates
                if self._run_dir is not None and updates % self._config.checkpoint_every == 0:
                    self._checkpoint()
        finally:
            if self._learner.updates != last_published:
                self._publish()
            if checkpoint_at_end and self._run_dir is not None \
                    and self._learner.updates != self._last_checkpoint_updates:
                self._checkpoint()
            self._run_end = time.perf_counter()
            self._running = False
        return self.metrics()

    def stop(self) -> None:
        """Ask ``run`` to finish after the current update (it then checkpoints). It is final: a
        ``run`` that starts after it (the driver's call, retried by Ray on a rebuilt learner
        that received the stop first) returns at once."""
        self._stop.set()

    # -- weights -------------------------------------------------------------------------

    def latest_weights(self, have_version: int | None = None,
                       have_incarnation: str | None = None) -> tuple[int, str, ray.ObjectRef] | None:
        """(version, incarnation, reference to its weights) if newer than what the caller has,
        else None.

        Cheap and non-blocking: the reply carries no arrays. ``ray.get`` of the reference
        gives the actor's state dict as ``dict[str, np.ndarray]``, put into the object store
        once per version. After Ray rebuilds the learner from a checkpoint its versions start
        again from the checkpoint's, so weights of another incarnation are always new.
        """
        version, ref = self._published
        if have_version is not None and have_incarnation == self._incarnation and version <= have_version:
            return None
        return version, self._incarnation, ref

    # -- metrics -------------------------------------------------------------------------

    def metrics(self) -> LearnerStats:
        recent = list(self._recent)
        ends = list(self._update_ends)

        def mean(name: str) -> float:
            values = [getattr(m, name) for m in recent]
            return float(np.mean(values)) if values else float("nan")

        per_s = (len(ends) - 1) / (ends[-1] - ends[0]) if len(ends) >= 2 and ends[-1] > ends[0] else float("nan")
        end = time.perf_counter() if self._running else self._run_end
        wall = max(end - self._run_start, 0.0) if self._run_start is not None else 0.0
        return LearnerStats(
            updates=self._learner.updates, version=self._published[0],
            alpha=recent[-1].alpha if recent else self._learner.state.alpha,
            critic_loss=mean("critic_loss"), actor_loss=mean("actor_loss"),
            entropy=mean("entropy"), q_mean=mean("q_mean"), accept_prob=mean("accept_prob"),
            policy_version_lag=mean("policy_version_lag"), updates_per_second=per_s, run_updates=self._run_updates,
            wall_s=wall, wait_s=self._wait_s, update_s=self._update_s,
            update_share=self._update_s / wall if wall > 0 else float("nan"),
            empty_samples=self._empty_samples, running=self._running,
            incarnation=self._incarnation, restored=self._restored,
        )

    # -- checkpoints ---------------------------------------------------------------------

    def checkpoint(self) -> dict:
        """Write a checkpoint now (for a snapshot of the run); returns its name and updates."""
        if self._run_dir is None:
            raise RuntimeError("a learner without a run folder cannot checkpoint")
        if self._learner.updates != self._last_checkpoint_updates:
            self._checkpoint()
        found = latest_checkpoint(self._run_dir)
        return {"name": found.name if found else None, "updates": self._last_checkpoint_updates}

    def export_agent(self, path: str, **metadata: str) -> str:
        """Write the actor alone (``core.agent_file`` format) for inference."""
        with self._train_lock:
            return str(self._learner.export_agent(path, **metadata))

    # -- internals -----------------------------------------------------------------------

    def _request_sample(self, replay, timeout_s: float):
        """Ask the replay for a batch without waiting for it (the learner computes on the
        previous batch meanwhile); ``_collect_sample`` waits for it (None: timed out)."""
        return replay.sample.remote(self._batch_size, timeout_s=timeout_s)

    def _collect_sample(self, request):
        return ray.get(request)

    def _reset_run_timing(self) -> None:
        self._run_start: float | None = None
        self._run_end = 0.0
        self._run_updates = 0
        self._wait_s = 0.0
        self._update_s = 0.0
        self._empty_samples = 0

    def _publish(self) -> None:
        with self._train_lock:
            version, weights = self._learner.publish()
        self._store_weights(version, weights)

    def _store_weights(self, version: int, weights: dict[str, np.ndarray]) -> None:
        """Put this version's weights into the object store, once; polls hand out the reference."""
        self._published = (version, ray.put(weights))  # one assignment: readers see both or neither

    def _checkpoint(self) -> None:
        root = self._run_dir / CHECKPOINTS_DIR
        with self._train_lock:
            updates = self._learner.updates
            name = f"update_{updates:09d}"
            self._learner.save_checkpoint(root / name)
        write_json_atomic(root / LATEST_FILE, {"path": name, "updates": updates})
        self._last_checkpoint_updates = updates
        old = sorted(p for p in root.iterdir() if p.is_dir() and _CHECKPOINT_RE.match(p.name))
        for stale in old[:-self._config.keep_checkpoints]:
            if stale.name != name:
                shutil.rmtree(stale, ignore_errors=True)


def learner_resources(config: LearnerConfig) -> dict:
    """Ray resources of the learner: its CPUs, and one GPU when ``config.device`` asks for
    CUDA, or is "auto" and the head node, where the learner runs, has a GPU (else none: Ray
    then hides GPUs from the actor, so "auto" means cpu)."""
    head = [n["Resources"] for n in ray.nodes() if n.get("Alive") and "node:__internal_head__" in n["Resources"]]
    wants_gpu = config.device.startswith("cuda") or (
        config.device == "auto" and bool(head) and head[0].get("GPU", 0) >= 1)
    return {"num_cpus": config.num_cpus, "num_gpus": 1 if wants_gpu else 0}
