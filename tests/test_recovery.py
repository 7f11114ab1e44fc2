"""Crash-safe and honest runs (driver/run.py): periodic snapshots that a SIGKILLed run
resumes from, the replay and the learner rebuilt by Ray after they die, and runs that
learnt nothing failing with their reason instead of exporting an untrained agent."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import ray
import yaml
from helpers.models import slow_llm, unreachable_reward_server
from helpers.runs import ONE_ACTOR, ROOT, run_with_kills, tiny_config, training_run
from helpers.waiting import wait_for

import launch
from core.agent_file import load_agent
from core.jsonl import read_jsonl
from driver.config import RunConfig, from_dict, load_config
from learner.learner import AGENT_FILE
from learner.service import latest_checkpoint


def events(run_dir: Path, kind: str) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [r for r in read_jsonl(path) if r.get("event") == kind] if path.is_file() else []


def kill_tree(pid: int) -> None:
    """SIGKILL a process and every process it started (the local Ray cluster of a driver),
    as a power cut would: nothing gets to clean up."""
    processes = [psutil.Process(pid)]
    processes += processes[0].children(recursive=True)
    for p in processes:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(processes, timeout=30)


def test_a_sigkilled_run_resumes_from_its_last_snapshot(ray_local, tiny_llm_path, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(
        tiny_llm_path, tmp_path, model={"name": slow_llm(0.01)}, budget={"episodes": 0, "seconds": 300},
        replay={"snapshot_every_s": 3.0}, rollout={"num_workers": 2})))  # calls of two workers in flight
    run_dir = tmp_path / "runs" / "killed"
    proc = subprocess.Popen([sys.executable, "launch.py", "--config", str(config), "--set", "run_name=killed"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    state_file = run_dir / "state.json"
    try:
        # Right after a snapshot with data in it (the next one is seconds away), kill the
        # driver and the Ray processes it started, as a power cut would.
        def fresh_snapshot():
            if not state_file.is_file():
                return None
            state = json.loads(state_file.read_text())
            return state if state["episodes"] > 0 and state["replay"]["size"] > 0 else None

        state = wait_for(fresh_snapshot, "a snapshot holding episodes")
    finally:
        kill_tree(proc.pid)
        proc.wait(timeout=60)
    assert json.loads(state_file.read_text()) == state  # the kill came before the next snapshot
    assert not (run_dir / "summary.json").exists()  # it never shut down

    # Resumed with the replay in the learner's process, sampled on the learner's device (CPU
    # here: the path a GPU learner takes, replay/device_buffer.py).
    cfg = load_config(run_dir / "config.yaml", ["budget.seconds=400", "replay.in_learner=true",
                                                "replay.on_learner_device=true", "replay.snapshot_every_s=2"])
    run = training_run(cfg, run_dir, resume=True)
    run.build()
    # One actor is both: reward actors insert and the driver snapshots through the learner's handle.
    assert run.replay._actor_id == run.learner._actor_id
    # Replay size, prompt position (with the prompts of calls in flight, to hand out again)
    # and counters equal the snapshot's; the learner is at its newest checkpoint, weights and all.
    assert ray.get(run.replay.stats.remote())["size"] == state["replay"]["size"]
    assert run.queue.position == state["prompt_position"] and list(run.queue.retry) == state["prompt_retry"]
    for name in ("episodes", "transitions", "inserted", "reward_sum", "rewards_seen", "seconds"):
        assert getattr(run.totals, name) == state[name], name
    learner = ray.get(run.learner.metrics.remote())
    assert learner.updates >= state["checkpoint"]["updates"]
    checkpoint = latest_checkpoint(run_dir)
    assert learner.restored == checkpoint.name
    _, _, weights_ref = ray.get(run.learner.latest_weights.remote(None))
    weights = ray.get(weights_ref)
    for key, value in load_agent(checkpoint / AGENT_FILE).state_dict().items():
        np.testing.assert_array_equal(weights[key], value.numpy(), err_msg=key)

    # Killed once the resumed part has a snapshot, the one actor is restarted by Ray and the
    # driver rebuilds both from the run folder; once episodes were decoded after that, the test
    # ends the run (the time budget is only a backstop).
    summary, _ = run_with_kills(run, ["learner"], after=time.time())
    restarts = {r["component"]: r["what"] for r in events(run_dir, "restart")}
    assert set(restarts) == {"learner", "replay"}  # one actor, both rebuilt from the run folder
    assert "from checkpoint update_" in restarts["learner"]
    assert summary["status"] == "completed" and summary["episodes"] > state["episodes"]
    assert summary["learner_updates"] >= state["checkpoint"]["updates"]  # none lost (the end may come before more)
    assert summary["replay"]["size"] > state["replay"]["size"]
    assert summary["replay"]["sampled_on"] == "cpu"  # the learner's device, not the host ring
    assert summary["mean_reward_all"] == run.totals.reward_sum / run.totals.rewards_seen
    assert run.totals.rewards_seen > state["rewards_seen"]  # the reward sum went on from the saved one


def run_and_kill(ray_local, tiny_llm_path, tmp_path, victims: list[str]) -> tuple[dict, Path, float]:
    """A run in this process whose replay or learner actors (``victims``, in turn) are killed,
    each once a snapshot newer than the previous kill exists; the test ends the run once
    episodes were decoded after the last kill (the time budget is only a backstop). Returns
    the summary, the run folder and the time of the last kill."""
    cfg = from_dict(RunConfig, tiny_config(tiny_llm_path, tmp_path, model={"name": slow_llm(0.05)},
                                           budget={"episodes": 0, "seconds": 400},
                                           replay={"snapshot_every_s": 2.0}))
    run = training_run(cfg)
    run.build()
    summary, killed = run_with_kills(run, victims)
    return summary, run.run_dir, killed[-1]


def test_a_killed_replay_and_a_killed_learner_are_rebuilt_and_the_run_goes_on(ray_local, tiny_llm_path, tmp_path,
                                                                              capsys):
    summary, run_dir, last_kill = run_and_kill(ray_local, tiny_llm_path, tmp_path, ["replay", "learner"])
    restarts = events(run_dir, "restart")
    assert [r["component"] for r in restarts] == ["replay", "learner"]
    assert "rebuilt it from its snapshot" in capsys.readouterr().out
    assert "from checkpoint update_" in restarts[1]["what"]
    assert summary["status"] == "completed" and summary["replay"]["size"] > 0 and summary["learner_updates"] > 0
    assert [e for e in events(run_dir, "rollout") if e["episode_start"] > last_kill]  # it went on
    assert (run_dir / "agent.safetensors").is_file()


def test_a_reward_that_never_scores_fails_the_run_and_exports_no_agent(ray_local, tiny_llm_path, tmp_path, capsys):
    config = tmp_path / "broken.yaml"
    config.write_text(yaml.safe_dump(tiny_config(
        tiny_llm_path, tmp_path, budget={"episodes": 0, "seconds": 200}, model={"name": slow_llm(0)},
        reward={"scorers": [unreachable_reward_server()], "max_failed_batches": 3}, replay=ONE_ACTOR)))
    assert launch.main(["--config", str(config), "--set", "run_name=broken"]) == 1
    captured = capsys.readouterr()
    assert "launch.py: error: the run failed: the reward failed on 3 batches in a row" in captured.err
    assert "ConnectionRefusedError" in captured.err and "| unscored " in captured.out
    run_dir = tmp_path / "runs" / "broken"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["agent"] is None and summary["unscored_episodes"] >= 6
    assert not (run_dir / "agent.safetensors").exists()


def test_a_run_that_made_no_update_fails_and_exports_no_agent(ray_local, tiny_llm_path, tmp_path, capsys):
    config = tmp_path / "idle.yaml"
    config.write_text(yaml.safe_dump(tiny_config(
        tiny_llm_path, tmp_path, budget={"episodes": 4, "seconds": 200}, model={"name": slow_llm(0)},
        replay={"min_size_to_sample": 10_000, **ONE_ACTOR})))  # never reached in 4 episodes
    assert launch.main(["--config", str(config), "--set", "run_name=idle"]) == 1
    assert "the learner made no update" in capsys.readouterr().err
    run_dir = tmp_path / "runs" / "idle"
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
    assert not (run_dir / "agent.safetensors").exists()
    assert (run_dir / "state.json").is_file() and (run_dir / "replay.arrow").is_file()  # resumable
