"""Live scaling of the rollout workers: the group follows a target while the run goes on.

The target is ``rollout.num_workers`` (a number), or, with ``"auto"``, one worker per unit
of ``rollout.resource`` (cluster.yaml's ``rollout_slot``) on the cluster's live nodes. A
node that joins (the autoscaler of cluster.yaml, or ``ray start`` by hand) raises the
target and gets workers within a check or two; a node that leaves lowers it. While a run
goes on, ``mara scale RUN_DIR --workers N`` (or ``auto``) writes ``RUN_DIR/scale.json``,
which the driver reads at its next check and which replaces the configuration's target
(``resume`` keeps it too).

Following the target (``RolloutScaler.step``, every ``CHECK_S`` seconds from the driver's
loop): more workers are started when the group is below it (Ray places each where a unit
of the resource is free); above it, members that are restarting go first (a node that
left takes its workers with it: Ray would wait for a free slot to rebuild them; their
calls' prompts have already gone back in the queue), then members in service are retired
(no new calls; stopped once their calls in flight are done, so no decoded episode is lost).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import ray

from actors.worker_group import WorkerGroup
from core.atomic import write_json_atomic
from core.config import AUTO, RolloutConfig
from core.sections import Int, check

SCALE_FILE = "scale.json"
CHECK_S = 2.0  # how often the driver compares the group with its target
WORKERS = Int(ge=1, also=(AUTO,))  # a number of rollout workers


def request_scale(run_dir: str | Path, workers: int | str) -> Path:
    """Ask the run in ``run_dir`` to scale its rollout workers to ``workers`` (or "auto")."""
    check("workers", workers, WORKERS)
    path = Path(run_dir) / SCALE_FILE
    write_json_atomic(path, {"workers": workers, "time": time.time()})
    return path


def scale_request(run_dir: str | Path) -> int | str | None:
    """The last ``request_scale`` of a run folder (None if there was none or it is unreadable)."""
    path = Path(run_dir) / SCALE_FILE
    try:
        workers = json.loads(path.read_text())["workers"]
        check("workers", workers, WORKERS)
        return workers
    except (OSError, ValueError, KeyError, TypeError):
        return None


def target_workers(rollout: RolloutConfig, run_dir: Path, current: int) -> int:
    """The number of rollout workers a run wants now: its last ``mara scale`` request, else
    ``rollout.num_workers``; "auto" counts the units of ``rollout.resource`` on live nodes
    (without a resource to count, ``current`` stays)."""
    setting = scale_request(run_dir) or rollout.num_workers
    if setting == AUTO:
        return cluster_units(rollout.resource) if rollout.resource else current
    return int(setting)


def cluster_units(resource: str) -> int:
    """Units of a custom resource on the cluster's live nodes."""
    return int(sum(n["Resources"].get(resource, 0) for n in ray.nodes() if n.get("Alive")))


class RolloutScaler:
    def __init__(self, rollout: RolloutConfig, run_dir: Path, group: WorkerGroup) -> None:
        self.rollout, self.run_dir, self.group = rollout, run_dir, group
        self._next_check = 0.0
        self.target = len(group)

    def step(self) -> list[str]:
        """Bring the group to its target (at most every ``CHECK_S``); what was done, to report."""
        now = time.monotonic()
        if now < self._next_check:
            return []
        self._next_check = now + CHECK_S
        self.target = target_workers(self.rollout, self.run_dir, len(self.group.live()))
        done = []
        # Members on nodes that left the cluster are gone: Ray would wait for a slot to rebuild them.
        dead_nodes = {n["NodeID"] for n in ray.nodes() if not n.get("Alive")}
        for member in self.group.on_nodes(dead_nodes):
            self.group.drop(member)
            done.append(f"dropped rollout worker {member}: its node left the cluster")
        live = self.group.live()
        if self.rollout.max_restarts >= 0:  # a limit on restarts: members Ray gave up on are not replaced
            live = live + [-1] * self.group.given_up()
        if len(live) < self.target:
            added = self.group.add(self.target - len(live))
            done.append(f"started rollout worker(s) {added} (target {self.target})")
        elif len(live) > self.target:
            restarting = set(self.group.restarting())
            # Restarting (or not yet started) members first, then the newest in service.
            surplus = sorted((i for i in live if i >= 0), key=lambda i: (i not in restarting, -i))
            surplus = surplus[: len(live) - self.target]
            for member in surplus:
                if member in restarting:
                    self.group.drop(member)
                else:
                    self.group.retire(member)
            done.append(f"stopping rollout worker(s) {sorted(surplus)} (target {self.target})")
        return done
