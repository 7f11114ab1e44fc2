"""The distributed training run end to end on local Ray, with a tiny upstream model."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import ray
import yaml

from mara.config import RunConfig, from_dict, load_config, save_config
from mara.training import TrainingRun, new_run_dir, train

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["How can I bake bread?", "Tell me a joke.", "Why is the sky blue?", "Name a fruit.",
           "How do I learn to swim?", "What is rain?", "Write a short poem.", "Say hello."]


def tiny_config(tiny_llm_path: Path, tmp_path: Path, **sections) -> dict:
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"instruction": p} for p in PROMPTS]))
    cfg = {
        "model": {"name": str(tiny_llm_path), "device": "cpu"},
        "sampling": {"max_new_tokens": 8},
        "prompts": {"source": str(prompts)},
        "reward": {"scorers": [{"kind": "function", "path": "mara.rewards.examples:word_count"}],
                   "num_cpus": 0.1},
        "rollout": {"num_workers": 2, "num_cpus": 0.5, "episodes_per_call": 2, "agent_hidden_size": 32},
        "replay": {"capacity": 20000, "min_size_to_sample": 32, "samples_per_insert": 2.0,
                   "error_buffer": 512.0},
        "sac": {"batch_size": 32, "hidden_size": 32},
        "learner": {"publish_every": 2, "checkpoint_every": 20},
        "learner_num_cpus": 0.5,
        "budget": {"episodes": 16, "seconds": 240},
        "output_dir": str(tmp_path / "runs"),
        "metrics_port": 0,
        "dashboard": False,
        "progress_every_s": 1.0,
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def test_config_round_trips_and_refuses_bad_values(tmp_path, tiny_llm_path):
    cfg = from_dict(RunConfig, tiny_config(tiny_llm_path, tmp_path))
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    over = load_config(tmp_path / "c.yaml", ["sac.batch_size=64", "rollout.num_workers=3"])
    assert over.sac.batch_size == 64 and over.rollout.num_workers == 3
    with pytest.raises(ValueError, match="unknown"):
        load_config(tmp_path / "c.yaml", ["sac.batchsize=64"])
    with pytest.raises(ValueError, match="hidden_size"):
        load_config(tmp_path / "c.yaml", ["sac.hidden_size=64"])
    with pytest.raises(ValueError):
        load_config(tmp_path / "c.yaml", ["model.mode=greedy"])


def test_learner_updates_while_episodes_are_in_flight_and_resume(ray_local, tiny_llm_path, tmp_path):
    # A deliberately slow environment: every decision sleeps, so episodes take seconds.
    raw = tiny_config(tiny_llm_path, tmp_path, rollout={"decision_delay_s": 0.02},
                      budget={"episodes": 16})
    cfg = from_dict(RunConfig, raw)
    run_dir = new_run_dir(cfg)
    save_config(cfg, run_dir / "config.yaml")
    run = TrainingRun(cfg, run_dir)
    run.build()
    summary = run.run()
    stamps = ray.get(run.learner.update_timestamps.remote())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    episodes = [(r["episode_start"], r["episode_end"]) for r in records if r.get("event") == "rollout"]
    assert summary["updates"] > 0 and summary["episodes"] >= 16
    overlapping = [s for s in stamps if any(a < s[0] and s[1] < b for a, b in episodes)]
    assert len(overlapping) > 0, "no learner update happened while an episode was being decoded"
    for name in ("config.yaml", "metrics.jsonl", "metrics.csv", "replay.arrow", "agent.safetensors",
                 "summary.json", "state.json"):
        assert (run_dir / name).is_file(), name
    first_updates, first_inserted = summary["updates"], summary["inserted"]
    assert summary["replay"]["size"] == first_inserted

    # Resume: a bigger budget continues the counters, the policy and the replay contents.
    cfg2 = load_config(run_dir / "config.yaml", ["budget.episodes=24"])
    run2 = TrainingRun(cfg2, run_dir, resume=True)
    run2.build()
    assert ray.get(run2.replay.size.remote()) == first_inserted
    assert ray.get(run2.learner.metrics.remote()).updates == first_updates
    summary2 = run2.run()
    assert summary2["episodes"] >= 24 and summary2["updates"] > first_updates
    assert summary2["replay"]["size"] > first_inserted


def test_a_killed_rollout_worker_is_replaced_and_no_data_is_lost(ray_local, tiny_llm_path, tmp_path):
    cfg = from_dict(RunConfig, tiny_config(tiny_llm_path, tmp_path, budget={"episodes": 24},
                                           rollout={"decision_delay_s": 0.01}))
    run = TrainingRun(cfg, new_run_dir(cfg))
    run.build()
    seen = {}

    def kill_when_data_arrives():
        deadline = time.time() + 120
        while time.time() < deadline:
            size = ray.get(run.replay.size.remote())
            if size > 0:
                seen["before_kill"] = size
                ray.kill(run.workers[0], no_restart=False)
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_when_data_arrives)
    killer.start()
    summary = run.run()
    killer.join()
    assert "before_kill" in seen
    assert summary["worker_failures"] >= 1
    assert summary["episodes"] >= 24
    assert summary["replay"]["size"] >= seen["before_kill"]
    # Scoring calls of the killed worker still landed: the replay holds at least what the
    # driver heard about.
    assert summary["replay"]["size"] >= summary["inserted"]


def test_launch_py_runs_end_to_end(tiny_llm_path, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny_llm_path, tmp_path, budget={"episodes": 8})))
    proc = subprocess.run([sys.executable, "launch.py", "--config", str(config),
                           "--set", "run_name=smoke"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Prometheus metrics: http://127.0.0.1:" in proc.stdout
    assert "episodes" in proc.stdout
    summary = json.loads((tmp_path / "runs" / "smoke" / "summary.json").read_text())
    assert summary["episodes"] >= 8 and summary["transitions"] > 0
