"""Training metrics: every metric defined once, exported to Ray and to Prometheus (core/metrics.py).

The components report to the driver (rollout statistics, scored batches, the learner's
and the replay's own figures) and the driver records them here. ``METRICS`` lists each
metric (short name, kind, description). A ``MetricsSink`` updates two copies of it:

* Ray's metrics API (``ray.util.metrics``), only when the process runs inside Ray
  (``ray.is_initialized()``). Ray exports them on each node's metrics-export port with a
  ``ray_`` prefix (``ray_mara_replay_size``); the dashboard graphs them once Prometheus
  (and Grafana) scrape Ray. Ray does not store metrics itself.
* A prometheus-client registry of its own (not the global one), which the driver can
  serve over HTTP with ``start_http_server`` (loopback only unless told otherwise).

Usage::

    sink = MetricsSink()
    port = sink.start_http_server(9100)          # driver only; 0 picks a free port
    sink.inc("episodes")                         # counters go up
    sink.record({"replay_size": 123, "critic_loss": 0.5, "episodes": 1})
    sink.stop()

``MetricsLog`` keeps the same records on disk: one JSON object per line in
``run_dir/metrics.jsonl``, convertible to CSV at the end of a run.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Mapping

from core import metrics as core_metrics
from core.jsonl import METRICS_FILE, read_jsonl, write_csv
from core.metrics import PREFIX, MetricDef

# One name per metric: the same key in metrics.jsonl's progress records, here, and (with
# the prefix) on the Prometheus endpoint and in Ray's metrics. Grouped by who reports them.
COLLECTION = (  # rollout workers, through their RolloutStats
    MetricDef("episodes", "counter", "Finished episodes (answers generated)."),
    MetricDef("transitions", "counter", "Accept/reject decisions collected."),
    MetricDef("transitions_per_second", "gauge", "Decisions collected per second over the run."),
    MetricDef("tokens_per_second", "gauge", "Response tokens generated per second by the last rollout call."),
    MetricDef("accept_rate", "gauge", "Fraction of decisions that accepted the candidate."),
    MetricDef("episode_length", "histogram", "Response length of finished episodes, in tokens.",
              buckets=(16, 32, 64, 128, 256, 512, 1024, 2048)),
    MetricDef("worker_failures", "counter", "Rollout worker deaths (each counted once)."),
    MetricDef("rollout_workers", "gauge", "Rollout workers in service (driver/scaling.py follows the target)."),
    MetricDef("rollout_workers_target", "gauge",
              "Rollout workers the run wants now (num_workers, auto or mara scale)."),
)
SCORING = (  # reward actors, through their ScoredBatch
    MetricDef("mean_reward", "gauge", "Mean sentence reward r(x, y) of the last 50 scored episodes."),
    MetricDef("unscored_episodes", "counter", "Episodes the reward could not score (not inserted)."),
)
REPLAY = (  # the replay service's stats
    MetricDef("replay_size", "gauge", "Transitions held by the replay buffer."),
    MetricDef("samples_per_insert", "gauge", "Sampled transitions per inserted transition."),
)
LEARNER = (  # the learner service's metrics: its pace and its weights
    MetricDef("learner_updates", "counter", "Gradient updates done by the learner."),
    MetricDef("updates_per_second", "gauge", "Learner gradient updates per second."),
    MetricDef("weight_version", "gauge", "Version of the latest actor weights."),
    MetricDef("policy_version_lag", "gauge",
              "Learner weight version minus the version that collected the sampled data."),
)
SAC = (  # the learner service's metrics: the discrete SAC maths, means over recent updates
    MetricDef("critic_loss", "gauge", "Critic loss, 1/2 MSE summed over both Q heads."),
    MetricDef("actor_loss", "gauge", "Actor loss -E[alpha H + sum_a pi Q]."),
    MetricDef("alpha", "gauge", "SAC entropy temperature alpha."),
    MetricDef("entropy", "gauge", "Mean entropy of the accept/reject policy."),
)
_DEFS = COLLECTION + SCORING + REPLAY + LEARNER + SAC
METRICS: dict[str, MetricDef] = {d.name: d for d in _DEFS}


def metric_def(name: str) -> MetricDef:
    """The definition of ``name``; a KeyError that lists the known names if there is none."""
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(
            f"unknown metric {name!r}; known metrics: {', '.join(sorted(METRICS))}"
        ) from None


class MetricsSink(core_metrics.MetricsSink):
    """A sink of the training metrics (``METRICS``): see core/metrics.py."""

    def __init__(self, tags: Mapping[str, str] | None = None) -> None:
        super().__init__(_DEFS, tags)


class MetricsLog:
    """Append-only JSON-lines log of metric records in ``run_dir/metrics.jsonl``.

    Each ``write`` is one line, flushed at once, so a crash loses at most the line being
    written: ``read`` skips a torn last line, and reopening the log (a resumed run) cuts
    it off before appending. Records are free-form: any keys, numbers
    or strings; ``time`` (Unix seconds) is added when absent.
    """

    FILENAME = METRICS_FILE

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / self.FILENAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _drop_torn_tail(self.path)
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, record: Mapping[str, object]) -> None:
        row = {"time": time.time(), **record}
        self._file.write(json.dumps(row, default=_jsonable) + "\n")
        self._file.flush()

    def read(self) -> list[dict]:
        return read_jsonl(self.path)

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write every record as CSV (header: union of keys, first-seen order); return the path."""
        rows = self.read()
        return write_csv(rows, path)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _drop_torn_tail(path: Path) -> None:
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        os.truncate(path, data.rfind(b"\n") + 1)


def _jsonable(x):
    """numpy / torch scalars -> Python numbers; anything else -> str."""
    if hasattr(x, "item"):
        try:
            return x.item()
        except (TypeError, ValueError):
            pass
    return str(x)


__all__ = ["METRICS", "MetricDef", "MetricsLog", "MetricsSink", "metric_def", "PREFIX"]
