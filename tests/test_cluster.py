"""A run on several Ray nodes of this machine (``ray.cluster_utils.Cluster``): rollout
workers follow the nodes that hold ``rollout_slot`` as they join and leave, and a node that
leaves loses no transition the replay already holds.

The head holds the replay and the learner (driver/components.py pins them there) and no
rollout slot; each other node has one slot. Tiny random Llama; the test's main thread adds
and removes nodes while the run goes on in another thread, waiting for each event it caused.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray
from ray.cluster_utils import Cluster
from helpers.waiting import wait_for

from helpers.models import slow_llm
from helpers.runs import tiny_config, training_run

from core.jsonl import read_jsonl
from driver.config import RunConfig, from_dict
from replay.buffer import ReplayBuffer

ROOT = Path(__file__).resolve().parents[1]
SLOT = {"rollout_slot": 1}


def node_of(actor) -> str:
    return ray.get(actor.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()), timeout=120)


@pytest.fixture
def cluster():
    if ray.is_initialized():
        ray.shutdown()  # the other tests' local Ray: this test needs a cluster of its own
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    c.add_node(num_cpus=1, resources=SLOT)
    c.add_node(num_cpus=1, resources=SLOT)
    ray.init(address=c.address, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield c
    ray.shutdown()
    c.shutdown()


def test_workers_follow_nodes_joining_and_leaving_and_nothing_inserted_is_lost(cluster, tiny_llm_path, tmp_path):
    cfg = from_dict(RunConfig, tiny_config(
        tiny_llm_path, tmp_path, budget={"episodes": 0, "seconds": 540},
        rollout={"num_workers": "auto", "resource": "rollout_slot", "num_cpus": 0.5},
        model={"name": slow_llm(0.01)}))
    run = training_run(cfg)
    run.build()
    head = ray.get_runtime_context().get_node_id()
    seen: dict = {}

    def rollouts_of(worker: int, after: float = 0.0) -> list[dict]:
        return [r for r in read_jsonl(run.run_dir / "metrics.jsonl")
                if r.get("event") == "rollout" and r["worker"] == worker and r["episode_start"] > after]

    def drive_the_cluster():
        try:
            # Two slots: two workers, one on each worker node, both decoding.
            wait_for(lambda: len(run.rollouts.live()) == 2 and rollouts_of(0) and rollouts_of(1), "two workers")
            seen["first_nodes"] = {node_of(run.rollouts.actors[i]) for i in (0, 1)}
            # A third node joins: it gets a worker within seconds, and the worker decodes.
            third = cluster.add_node(num_cpus=1, resources=SLOT)
            wait_for(lambda: len(run.rollouts.live()) == 3 and rollouts_of(2), "a worker on the new node")
            seen["third_node"] = (node_of(run.rollouts.actors[2]), third.node_id)
            # A node leaves mid-run: what the replay holds is kept, the run goes on.
            gone = cluster.list_all_nodes()[1]
            seen["snapshot"] = ray.get(run.replay.save.remote(str(tmp_path / "before_removal.arrow")))["path"]
            seen["removed_at"] = time.time()
            cluster.remove_node(gone)
            wait_for(lambda: run.scaler.target == 2 and len(run.rollouts.live()) == 2, "the target to follow")
            survivors = run.rollouts.live()
            wait_for(lambda: any(rollouts_of(w, seen["removed_at"]) for w in survivors), "rollouts after removal")
            seen["survivors"] = survivors
        except Exception as err:  # reported by the main thread
            seen["error"] = err
        finally:
            run.learner.stop.remote()  # ends the run (as an update budget would)

    # Ray adds and removes nodes from the main thread only (it sets signal handlers): the run
    # goes on in another thread meanwhile.
    result: dict = {}
    training = threading.Thread(target=lambda: result.update(summary=run.run()))
    training.start()
    drive_the_cluster()
    training.join(timeout=300)
    summary = result["summary"]
    assert "error" not in seen, seen.get("error")
    assert summary["status"] == "completed"

    nodes = {n["NodeID"] for n in ray.nodes()}
    assert len(seen["first_nodes"]) == 2 and head not in seen["first_nodes"]
    assert seen["third_node"][0] == seen["third_node"][1]  # the new node's worker runs there
    assert len(seen["survivors"]) == 2 and summary["rollout_workers_target"] == 2
    assert len(nodes) == 4  # head + 3 worker nodes ever, one of them now dead
    scale_events = [r for r in read_jsonl(run.run_dir / "metrics.jsonl") if r.get("event") == "scale"]
    assert any("started" in r["what"] for r in scale_events)
    assert any("its node left the cluster" in r["what"] for r in scale_events)  # dropped, not waited for

    # Nothing inserted before the node left is lost, and every counted episode reached the replay.
    before = ReplayBuffer.load(seen["snapshot"])
    after = ReplayBuffer.load(run.run_dir / "replay.arrow")
    n = before.size()
    assert 0 < n < after.size()
    for name in ("_states", "_actions", "_rewards", "_dones"):
        np.testing.assert_array_equal(getattr(after, name)[:n], getattr(before, name)[:n], err_msg=name)
    stats = ray.get(run.replay.stats.remote())
    assert stats["inserted_transitions"] == summary["inserted"] == summary["transitions"]
