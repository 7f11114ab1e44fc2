"""Small training runs for tests: the tiny model's configuration, and a run built as launch.py builds it."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import ray
from helpers.waiting import wait_for

from core.jsonl import read_jsonl
from driver.config import RunConfig
from driver.preflight import check_inputs
from driver.run import TrainingRun
from driver.run_folder import new_run_dir

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["How can I bake bread?", "Tell me a joke.", "Why is the sky blue?", "Name a fruit.",
           "How do I learn to swim?", "What is rain?", "Write a short poem.", "Say hello."]


# replay settings of a run whose topology is not under test: the learner's actor holds the
# replay too (replay.in_learner), one process fewer to start.
ONE_ACTOR = {"in_learner": True}


def tiny_config(tiny_llm_path: Path, tmp_path: Path, **sections) -> dict:
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"instruction": p} for p in PROMPTS]))
    cfg = {
        "model": {"name": str(tiny_llm_path), "device": "cpu"},
        "sampling": {"max_new_tokens": 8},
        "prompts": {"source": str(prompts)},
        "reward": {"scorers": [{"kind": "function", "path": "rewards.examples:word_count"}],
                   "num_cpus": 0.1},
        # One worker: each actor costs seconds to start on 2 cores; tests about several ask for them.
        "rollout": {"num_workers": 1, "num_cpus": 0.5, "episodes_per_call": 2},
        "replay": {"capacity": 20000, "min_size_to_sample": 32, "samples_per_insert": 2.0,
                   "error_buffer": 512.0},
        "sac": {"batch_size": 32, "hidden_size": 32},
        "learner": {"publish_every": 2, "checkpoint_every": 20, "num_cpus": 0.5},
        "budget": {"episodes": 16, "seconds": 240},
        "output_dir": str(tmp_path / "runs"),
        "metrics_port": 0,
        "dashboard": False,
        "progress_every_s": 1.0,
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def training_run(cfg: RunConfig, run_dir: Path | None = None, resume: bool = False) -> TrainingRun:
    """A run as launch.py makes it: inputs checked first, then the run folder."""
    inputs = check_inputs(cfg)
    return TrainingRun(cfg, run_dir or new_run_dir(cfg), inputs, resume=resume)


def events_since(run_dir: Path, kind: str, moment: float) -> list[dict]:
    """The run's ``kind`` events (snapshot, rollout, ...) after ``moment`` (time.time())."""
    key = "episode_start" if kind == "rollout" else "time"
    return [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("event") == kind and r.get(key, 0) > moment]


def run_with_kills(run: TrainingRun, victims: list[str], after: float = 0.0) -> tuple[dict, list[float]]:
    """``run.run()`` while its replay or learner actors (``victims``, in turn) are killed, each
    once a snapshot holding data was taken after ``after`` or the previous kill; once episodes
    were decoded after the last kill, the run is ended as an update budget would end it (its
    time budget is only a backstop; a run's final snapshot never counts as one to kill after).
    Returns the summary and the times of the kills."""
    killed: list[float] = []

    def kill_each_after_a_snapshot_then_end_the_run():
        try:
            for victim in victims:
                since = killed[-1] if killed else after
                wait_for(lambda: [r for r in events_since(run.run_dir, "snapshot", since) if r["replay_size"]],
                         f"a snapshot before killing the {victim}")
                killed.append(time.time())
                ray.kill(run.replay if victim == "replay" else run.learner, no_restart=False)
            wait_for(lambda: events_since(run.run_dir, "rollout", killed[-1]), "episodes decoded after the last kill")
        finally:
            run.learner.stop.remote()

    killer = threading.Thread(target=kill_each_after_a_snapshot_then_end_the_run, daemon=True)
    killer.start()
    summary = run.run()  # goes on: no exception, no traceback
    killer.join(timeout=60)
    assert len(killed) == len(victims), "the run ended before the kills"
    return summary, killed
