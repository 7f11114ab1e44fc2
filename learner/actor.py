"""LearnerActor: a thin, threaded Ray actor around ``SACLearner``.

One thread runs the training loop (``run``); the others answer weight polls, metrics and
``stop`` while it runs, so the actor is created with ``max_concurrency >= 2``
(``make_learner_actor`` does this).

Usage::

    learner = make_learner_actor(state_dim=576, sac=SACConfig(), config=LearnerConfig(),
                                 run_dir="runs/x")
    done = learner.run.remote(replay, max_updates=10_000)    # returns at once: an ObjectRef
    ...                                                        # rollout workers meanwhile:
    new = ray.get(learner.latest_weights.remote(have_version=my_version))
    if new is not None:
        my_version, weights = new                              # dict[str, np.ndarray]
    ...
    learner.stop.remote(); summary = ray.get(done)             # checkpoints on the way out

The loop prefetches: it asks the replay actor for batch n + 1 before it computes update
n, so sampling (and its transfer) overlaps the gradient step. ``replay.sample`` returns
a ``TransitionBatch`` or ``None`` when its rate limiter says "not yet"; ``None`` means
wait a little and ask again.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import ray
import torch

from learner.config import LearnerConfig, SACConfig
from learner.learner import MANIFEST_FILE, SACLearner
from learner.sac import UpdateMetrics
from mara.atomic import write_json_atomic

CHECKPOINTS_DIR = "checkpoints"
LATEST_FILE = "latest.json"
_CHECKPOINT_RE = re.compile(r"^update_(\d+)$")
_MAX_RETRY_SLEEP_S = 0.05  # longest pause between two sample calls that returned None


@dataclass(frozen=True)
class LearnerStats:
    """What ``LearnerActor.metrics()`` reports: recent means and the current run's timing."""

    updates: int  # gradient updates so far (over restarts)
    version: int  # latest published weight version
    alpha: float  # current temperature
    critic_loss: float  # mean over the recent window
    actor_loss: float
    entropy: float  # mean policy entropy (nats)
    q_mean: float
    accept_prob: float  # mean pi(accept | s) on sampled states
    policy_lag: float  # mean (current version - mean policy version of the batch)
    updates_per_s: float  # over the recent window of updates
    run_updates: int  # updates done by the current (or last) run() call
    wall_s: float  # wall time of the current (or last) run() call
    wait_s: float  # time of that run spent waiting for replay data
    update_s: float  # time of that run spent in gradient updates
    update_share: float  # update_s / wall_s
    empty_samples: int  # sample calls that returned None in that run
    running: bool

    def as_dict(self) -> dict[str, float]:
        return {f"learner/{k}": float(v) for k, v in asdict(self).items()}


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder of a run, or None if it has none."""
    pointer = Path(run_dir) / CHECKPOINTS_DIR / LATEST_FILE
    if not pointer.is_file():
        return None
    path = Path(run_dir) / CHECKPOINTS_DIR / json.loads(pointer.read_text())["path"]
    return path if (path / MANIFEST_FILE).is_file() else None


@ray.remote(max_concurrency=4)
class LearnerActor:
    """The SAC learner as a Ray actor: continuous training loop, versioned weights."""

    def __init__(self, *, state_dim: int, sac: SACConfig = SACConfig(),
                 publish_every: int = 10, checkpoint_every: int = 1000, keep_checkpoints: int = 2,
                 device: str = "auto", sample_timeout_s: float = 1.0, metrics_window: int = 100,
                 seed: int = 0, upstream_model: str = "", run_dir: str | None = None,
                 resume: bool = True, torch_threads: int | None = None) -> None:
        # Validate the process settings through the one config class that owns them.
        LearnerConfig(publish_every=publish_every, checkpoint_every=checkpoint_every,
                      keep_checkpoints=keep_checkpoints, device=device,
                      sample_timeout_s=sample_timeout_s, metrics_window=metrics_window)
        if torch_threads is not None:
            torch.set_num_threads(torch_threads)  # Ray sets OMP_NUM_THREADS=1 in workers
        self._learner = SACLearner(state_dim=state_dim, sac=sac, device=device, seed=seed,
                                   upstream_model=upstream_model)
        self._batch_size = sac.batch_size
        self._publish_every = publish_every
        self._checkpoint_every = checkpoint_every
        self._keep_checkpoints = keep_checkpoints
        self._sample_timeout_s = sample_timeout_s
        self._run_dir = Path(run_dir) if run_dir is not None else None

        self._train_lock = threading.Lock()  # guards the learner state
        self._weights_lock = threading.Lock()  # guards the published weights
        self._stop = threading.Event()
        self._running = False
        self._recent: deque[UpdateMetrics] = deque(maxlen=metrics_window)
        self._timestamps: deque[tuple[float, float]] = deque(maxlen=100_000)
        self._reset_run_timing()
        self._last_checkpoint_updates = -1

        if resume and self._run_dir is not None:
            found = latest_checkpoint(self._run_dir)
            if found is not None:
                self._learner.restore_checkpoint(found)
                self._last_checkpoint_updates = self._learner.updates
        self._published: tuple[int, dict[str, np.ndarray], ray.ObjectRef] | None = None
        self._store_weights(self._learner.version, self._learner.actor_weights())

    # -- training loop -------------------------------------------------------------------

    def run(self, replay, max_updates: int | None = None,
            max_seconds: float | None = None) -> LearnerStats:
        """Train until ``stop()``, ``max_updates`` updates or ``max_seconds`` seconds."""
        if self._running:
            raise RuntimeError("LearnerActor.run is already running")
        self._running = True
        self._stop.clear()
        self._reset_run_timing()
        t0 = time.perf_counter()
        self._run_start = t0
        done = 0
        retry_sleep = 0.0
        last_published = self._learner.updates

        def more_wanted(extra: int = 0) -> bool:
            return max_updates is None or done + extra < max_updates

        def in_time() -> bool:
            return max_seconds is None or time.perf_counter() - t0 < max_seconds

        pending = replay.sample.remote(self._batch_size, timeout_s=self._sample_timeout_s) \
            if more_wanted() else None
        try:
            while pending is not None and not self._stop.is_set() and more_wanted() and in_time():
                wait_start = time.perf_counter()
                batch = ray.get(pending)
                # Prefetch: ask for the next batch before computing on this one.
                pending = None
                if more_wanted(1 if batch is not None else 0):
                    pending = replay.sample.remote(self._batch_size, timeout_s=self._sample_timeout_s)
                if batch is None:
                    self._empty_samples += 1
                    retry_sleep = min(max(2 * retry_sleep, 1e-3), _MAX_RETRY_SLEEP_S)
                    self._stop.wait(retry_sleep)
                    self._wait_s += time.perf_counter() - wait_start
                    continue
                retry_sleep = 0.0
                update_start = time.perf_counter()
                stamp_start = time.time()
                with self._train_lock:
                    metrics = self._learner.update(batch)
                update_end = time.perf_counter()
                self._timestamps.append((stamp_start, time.time()))
                self._recent.append(metrics)
                self._wait_s += update_start - wait_start
                self._update_s += update_end - update_start
                self._run_updates = done = done + 1
                updates = self._learner.updates
                if updates % self._publish_every == 0:
                    self._publish()
                    last_published = updates
                if self._run_dir is not None and updates % self._checkpoint_every == 0:
                    self._checkpoint()
        finally:
            if self._learner.updates != last_published:
                self._publish()
            if self._run_dir is not None and self._learner.updates != self._last_checkpoint_updates:
                self._checkpoint()
            self._run_end = time.perf_counter()
            self._running = False
        return self.metrics()

    def stop(self) -> None:
        """Ask ``run`` to finish after the current update (it then checkpoints)."""
        self._stop.set()

    def is_running(self) -> bool:
        return self._running

    # -- weights -------------------------------------------------------------------------

    def latest_weights(self, have_version: int | None = None):
        """(version, weights) if newer than ``have_version``, else None (cheap, non-blocking).

        ``weights`` is the actor's state dict as ``dict[str, np.ndarray]``.
        """
        published = self._published
        if have_version is not None and published[0] <= have_version:
            return None
        return published[0], published[1]

    def latest_weights_ref(self, have_version: int | None = None):
        """Like ``latest_weights`` but returns (version, ObjectRef of the weights), so many
        workers fetch one copy from the object store instead of one reply each."""
        published = self._published
        if have_version is not None and published[0] <= have_version:
            return None
        return published[0], published[2]

    def version(self) -> int:
        return self._published[0]

    # -- metrics -------------------------------------------------------------------------

    def metrics(self) -> LearnerStats:
        recent = list(self._recent)
        stamps = list(self._timestamps)[-len(recent):] if recent else []

        def mean(name: str) -> float:
            values = [getattr(m, name) for m in recent]
            return float(np.mean(values)) if values else float("nan")

        if len(stamps) >= 2 and stamps[-1][1] > stamps[0][0]:
            per_s = len(stamps) / (stamps[-1][1] - stamps[0][0])
        else:
            per_s = float("nan")
        end = time.perf_counter() if self._running else self._run_end
        wall = max(end - self._run_start, 0.0) if self._run_start is not None else 0.0
        return LearnerStats(
            updates=self._learner.updates, version=self._published[0],
            alpha=recent[-1].alpha if recent else self._learner.state.alpha,
            critic_loss=mean("critic_loss"), actor_loss=mean("actor_loss"),
            entropy=mean("entropy"), q_mean=mean("q_mean"), accept_prob=mean("accept_prob"),
            policy_lag=mean("policy_lag"), updates_per_s=per_s, run_updates=self._run_updates,
            wall_s=wall, wait_s=self._wait_s, update_s=self._update_s,
            update_share=self._update_s / wall if wall > 0 else float("nan"),
            empty_samples=self._empty_samples, running=self._running,
        )

    def recent_updates(self) -> list[UpdateMetrics]:
        """The per-update metrics of the recent window, oldest first."""
        return list(self._recent)

    def update_timestamps(self) -> list[tuple[float, float]]:
        """(start, end) ``time.time()`` stamps of recent updates (up to 100k), oldest first."""
        return list(self._timestamps)

    # -- checkpoints ---------------------------------------------------------------------

    def save(self, directory: str) -> str:
        """Write a full checkpoint into ``directory`` (waits for the current update)."""
        with self._train_lock:
            return str(self._learner.save_checkpoint(directory))

    def restore(self, directory: str) -> int:
        """Load a checkpoint folder, or a run folder's latest checkpoint; returns the
        restored update count and republishes the restored weights under their version."""
        path = Path(directory)
        if not (path / MANIFEST_FILE).is_file() and (path / CHECKPOINTS_DIR).is_dir():
            found = latest_checkpoint(path)
            if found is None:
                raise FileNotFoundError(f"run folder {path} has no complete checkpoint")
            path = found
        with self._train_lock:
            self._learner.restore_checkpoint(path)
            self._store_weights(self._learner.version, self._learner.actor_weights())
            return self._learner.updates

    def export_agent(self, path: str, **metadata: str) -> str:
        """Write the actor alone (``mara.agent_io`` format) for inference."""
        with self._train_lock:
            return str(self._learner.export_agent(path, **metadata))

    # -- internals -----------------------------------------------------------------------

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
        ref = ray.put(weights)
        with self._weights_lock:
            self._published = (version, weights, ref)  # one assignment: readers see all or nothing

    def _checkpoint(self) -> None:
        root = self._run_dir / CHECKPOINTS_DIR
        with self._train_lock:
            updates = self._learner.updates
            name = f"update_{updates:09d}"
            self._learner.save_checkpoint(root / name)
        write_json_atomic(root / LATEST_FILE, {"path": name, "updates": updates})
        self._last_checkpoint_updates = updates
        old = sorted(p for p in root.iterdir() if p.is_dir() and _CHECKPOINT_RE.match(p.name))
        for stale in old[:-self._keep_checkpoints]:
            if stale.name != name:
                shutil.rmtree(stale, ignore_errors=True)


def make_learner_actor(*, state_dim: int, sac: SACConfig = SACConfig(),
                       config: LearnerConfig = LearnerConfig(), seed: int = 0,
                       upstream_model: str = "", run_dir: str | None = None, resume: bool = True,
                       num_cpus: float = 1, num_gpus: float | None = None,
                       max_concurrency: int = 4):
    """The builder: reads the configs and starts a LearnerActor with explicit arguments.

    ``num_gpus`` defaults to 1 when ``config.device`` asks for CUDA, or is "auto" and the
    cluster has a GPU; else 0 (Ray then hides GPUs from the actor, so "auto" means cpu).
    """
    if max_concurrency < 2:
        raise ValueError(f"max_concurrency must be >= 2 (weights are served while run() "
                         f"trains), got {max_concurrency}")
    if num_gpus is None:
        wants_gpu = config.device.startswith("cuda") or (
            config.device == "auto" and ray.cluster_resources().get("GPU", 0) >= 1)
        num_gpus = 1 if wants_gpu else 0
    return LearnerActor.options(
        num_cpus=num_cpus, num_gpus=num_gpus, max_concurrency=max_concurrency,
    ).remote(
        state_dim=state_dim, sac=sac, publish_every=config.publish_every,
        checkpoint_every=config.checkpoint_every, keep_checkpoints=config.keep_checkpoints,
        device=config.device, sample_timeout_s=config.sample_timeout_s,
        metrics_window=config.metrics_window, seed=seed, upstream_model=upstream_model,
        run_dir=run_dir, resume=resume, torch_threads=max(1, int(num_cpus)),
    )
