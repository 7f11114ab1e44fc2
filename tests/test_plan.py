"""``python launch.py --dry-run`` (driver/plan.py): the plan of a run, with nothing loaded or started."""

from __future__ import annotations

from pathlib import Path

import pytest


import launch
from driver.config import load_config
from driver.plan import GIB, describe_cluster, dry_run, model_facts, plan_run

ROOT = Path(__file__).resolve().parents[1]
PAPER = str(ROOT / "configs" / "paper_llama3_8b.yaml")
CLUSTER = str(ROOT / "cluster.yaml")


def rows(text: str) -> dict[str, list[str]]:
    """The plan's table: actor -> its cells."""
    table = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in table[1:]}


def test_the_embedded_default_fits_this_machine_and_nothing_starts(tmp_path, capsys, monkeypatch):
    import ray

    monkeypatch.chdir(tmp_path)
    if ray.is_initialized():
        ray.shutdown()  # another test's Ray: this one plans for this machine (ray_local restarts it)
    assert launch.main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "the run fits" in out and "this machine" in out
    plan = rows(out)
    assert plan["rollout worker"][0] == "1" and "smollm2" in plan["rollout worker"][-1]
    assert "trains on" in plan["learner"][-1]
    assert "200,000 x 1,166 bytes (states of size 576, float16)" in out  # the default replay at capacity
    assert not (tmp_path / "runs").exists()  # no run folder
    assert not ray.is_initialized()  # Ray was not started


def test_the_paper_run_fits_the_cluster_file_with_the_learner_on_the_head_gpu(capsys):
    assert launch.main(["--config", PAPER, "--dry-run", "--cluster", CLUSTER]) == 0
    out = capsys.readouterr().out
    plan = rows(out)
    assert plan["learner"][1] == "head" and "1 GPU" in plan["learner"][2] and "trains on a GPU" in plan["learner"][-1]
    assert plan["replay"][1] == "head"
    assert plan["rollout worker"][:2] == ["7", "gpu_worker"] and "rollout_slot" in plan["rollout worker"][2]
    # Llama-3-8B in bfloat16: 8.03e9 x 2 bytes of weights, plus the KV cache of 8 rows
    weights = 8.03e9 * 2 / GIB
    assert weights < float(plan["rollout worker"][3].split()[0]) < weights + 2
    assert "beaver-7b-v1.0-reward" in plan["reward actor"][-1] and "x-1" in plan["reward actor"][-1]
    # The reward and cost models (12.6 GiB each in bfloat16) each have an A10G of their own.
    for model in ("reward", "cost"):
        scorer = plan[f"scorer actor (PKU-Alignment/beaver-7b-v1.0-{model})"]
        assert "1 GPU" in scorer[2] and 12.5 < float(scorer[3].split()[0]) < 22.49
    assert "1,000,000 x 8,206 bytes (states of size 4096, float16) = 7.64 GiB" in out
    # With the prompt's state too, every state is twice as long (core/state_features.py).
    assert launch.main(["--config", PAPER, "--dry-run", "--cluster", CLUSTER,
                        "--set", "rollout.state_features=candidate+prompt"]) == 0
    assert "1,000,000 x 16,398 bytes (states of size 8192, float16) = 15.27 GiB" in capsys.readouterr().out

    # With the buffer in the learner's process there is no replay actor; the learner holds it.
    assert launch.main(["--config", PAPER, "--dry-run", "--cluster", CLUSTER, "--set", "replay.in_learner=true"]) == 0
    plan = rows(capsys.readouterr().out)
    assert "replay" not in plan and "holds the replay (1,000,000 transitions)" in plan["learner"][-1]
    learner_gib = float(plan["learner"][3].split()[0])
    # Sampled on the learner's GPU, the plan counts the buffer's copy there (7.64 GiB at capacity).
    assert launch.main(["--config", PAPER, "--dry-run", "--cluster", CLUSTER, "--set", "replay.in_learner=true",
                        "--set", "replay.on_learner_device=true"]) == 0
    plan = rows(capsys.readouterr().out)
    assert "with a copy on its GPU" in plan["learner"][-1]
    assert float(plan["learner"][3].split()[0]) == pytest.approx(learner_gib + 7.64, abs=0.02)


def test_a_plan_that_does_not_fit_says_why_and_exits_1(capsys):
    # One more rollout worker than the cluster file has GPUs for (7 + 2 reward models + the learner's).
    assert launch.main(["--config", PAPER, "--dry-run", "--cluster", CLUSTER, "--set", "rollout.num_workers=8"]) == 1
    assert "the actors ask for 11 GPU in all, the cluster holds 10" in capsys.readouterr().out
    # This machine has no GPU: nothing but the replay can be placed.
    assert launch.main(["--config", PAPER, "--dry-run"]) == 1
    out = capsys.readouterr().out
    assert rows(out)["rollout worker"][1] == "NOWHERE" and "7 rollout worker(s) asked for" in out


# The paper's reward and cost models in one reward actor, on one GPU (25.6 GiB with its CUDA context).
TOGETHER = ["--set", "reward.scorers.0.num_gpus=null", "--set", "reward.scorers.1.num_gpus=null",
            "--set", "reward.num_gpus=1"]


def test_a_reward_actor_whose_models_no_gpu_holds_is_refused_with_what_would_fit(tmp_path, capsys):
    import yaml

    assert launch.main(["--config", PAPER, "--dry-run", "--cluster", CLUSTER, *TOGETHER]) == 1
    out = capsys.readouterr().out
    assert rows(out)["reward actor"][1] == "NOWHERE"
    assert "1 reward actor(s) asked for, but the cluster holds 0" in out
    assert "the 22.5 GiB GPU of gpu_worker (its labels) holds 22.49 GiB for it (1 GPU), it needs 25.61 GiB" in out
    assert "each reward model in an actor of its own" in out and "a node type with a larger GPU" in out
    # Without the labels, the node types' memory comes from their instance types.
    spec = yaml.safe_load(Path(CLUSTER).read_text())
    for node_type in spec["available_node_types"].values():
        node_type.pop("labels")
    unlabelled = tmp_path / "cluster.yaml"
    unlabelled.write_text(yaml.safe_dump(spec))
    assert launch.main(["--config", PAPER, "--dry-run", "--cluster", str(unlabelled), *TOGETHER]) == 1
    assert "GPU of gpu_worker (g5.xlarge: A10G, 16 GiB) holds 22.49 GiB for it (1 GPU), it needs 25.61 GiB" \
        in capsys.readouterr().out
    assert launch.main(["--config", PAPER, "--dry-run", "--cluster", str(unlabelled)]) == 0  # split, it fits
    # A node type with a larger GPU holds them together.
    spec["available_node_types"]["gpu_worker"]["node_config"]["InstanceType"] = "g6e.2xlarge"
    unlabelled.write_text(yaml.safe_dump(spec))
    assert launch.main(["--config", PAPER, "--dry-run", "--cluster", str(unlabelled), *TOGETHER]) == 0
    # Host memory counts too: a node whose RAM cannot hold the model it loads.
    spec["available_node_types"]["gpu_worker"]["labels"] = {"gpu_memory_gib": "80", "memory_gib": "8"}
    unlabelled.write_text(yaml.safe_dump(spec))
    assert launch.main(["--config", PAPER, "--dry-run", "--cluster", str(unlabelled)]) == 1
    assert "gpu_worker has 8.0 GiB of host memory (its labels), loading its models needs 16.0 GiB" \
        in capsys.readouterr().out


def test_the_plan_reads_a_connected_cluster(ray_local):
    import psutil

    cfg = load_config(None, ["address=auto"])
    cluster = describe_cluster(cfg)
    assert cluster.source == "the connected Ray cluster" and cluster.kinds[0].is_head
    # each node reports its own memory: here, this machine's RAM and no GPU
    assert cluster.kinds[0].host_memory == psutil.virtual_memory().total
    assert cluster.kinds[0].gpu_memory is None and cluster.kinds[0].memory_source == "as the node reports it"
    planned, replay = plan_run(cfg, cluster)
    assert all(a.fits >= a.count for a in planned)
    text, problems = dry_run(cfg)
    assert problems == [] and "rollout worker" in text


def test_an_unknown_uncached_model_is_a_clear_error(capsys):
    with pytest.raises(FileNotFoundError, match="neither local nor in the hub cache"):
        model_facts("someone/not-a-cached-model")
    assert launch.main(["--dry-run", "--set", "model.name=someone/not-a-cached-model"]) == 2
    assert "not-a-cached-model" in capsys.readouterr().err
