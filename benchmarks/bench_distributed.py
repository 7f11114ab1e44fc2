"""The asynchronous system under load, measured in one run on this machine.

    python benchmarks/bench_distributed.py [--seconds 90] [--model smollm2] [--max-new-tokens 32]

For 1 and then 2 rollout workers (the real upstream model, a model-free reward so that
scoring costs nothing), a full training run on local Ray, reporting:
- rollout transitions/s and episodes/s, and the 2-worker / 1-worker scaling efficiency;
- the share of wall time the workers spend inside ``rollout`` (target >= 90%);
- the share of wall time the learner spends in gradient updates once data is allowed
  (target >= 90%), and its updates/s;
- replay bytes per transition against the reference's 2 * d * 8.
The samples-per-insert ratio is set high so the learner is never starved by the rate
limiter: the point is to see whether anything else makes either side wait.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import ray

from driver.components import connect_ray
from driver.config import RunConfig, from_dict
from driver.preflight import check_inputs
from driver.run import TrainingRun
from driver.run_folder import new_run_dir


def run_once(args, workers: int, out: Path) -> dict:
    raw = {
        "model": {"name": args.model, "device": "cpu"},
        "sampling": {"max_new_tokens": args.max_new_tokens},
        "reward": {"scorers": [{"kind": "function", "path": "rewards.examples:word_count"}],
                   "num_cpus": 0.1},
        "rollout": {"num_workers": workers, "num_cpus": 1, "episodes_per_call": 4},
        "replay": {"capacity": 100_000, "min_size_to_sample": 256, "samples_per_insert": 1000.0,
                   "error_buffer": 1e9},
        "sac": {"batch_size": 256},
        "learner": {"publish_every": 5, "checkpoint_every": 100_000},
        "budget": {"episodes": 0, "seconds": args.seconds},
        "output_dir": str(out), "run_name": f"workers{workers}", "metrics_port": -1,
        "dashboard": False, "progress_every_s": 15.0,
    }
    cfg = from_dict(RunConfig, raw)
    run = TrainingRun(cfg, new_run_dir(cfg), check_inputs(cfg))
    run.build()
    summary = run.run()
    records = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    rollouts = [r for r in records if r.get("event") == "rollout"]
    first, last = min(r["episode_start"] for r in rollouts), max(r["episode_end"] for r in rollouts)
    span = last - first
    learner = ray.get(run.learner.metrics.remote())  # the learner's own timing of its run
    return {
        "workers": workers,
        "transitions_per_s": sum(r["transitions"] for r in rollouts) / span,
        "episodes_per_s": sum(r["episodes"] for r in rollouts) / span,
        "worker_busy_share": sum(r["seconds"] for r in rollouts) / (workers * span),
        "learner_update_share": learner.update_share,
        "learner_updates_per_s": learner.run_updates / learner.wall_s,
        "bytes_per_transition": summary["replay"]["bytes_per_transition"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=90)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}", flush=True)
    base = from_dict(RunConfig, {"dashboard": False, "rollout": {"num_workers": 2}})
    connect_ray(base)
    out = Path(tempfile.mkdtemp(prefix="mara-bench-"))
    results = [run_once(args, workers, out) for workers in (1, 2)]
    print(f"\n{'workers':>7} {'trans/s':>8} {'episodes/s':>10} {'worker busy':>11} {'learner updating':>16} "
          f"{'updates/s':>9} {'bytes/trans':>11}")
    for r in results:
        print(f"{r['workers']:7d} {r['transitions_per_s']:8.1f} {r['episodes_per_s']:10.3f} "
              f"{r['worker_busy_share']:10.1%} {r['learner_update_share']:16.1%} "
              f"{r['learner_updates_per_s']:9.2f} {r['bytes_per_transition']:11.0f}")
    one, two = results
    print(f"scaling efficiency 2 workers vs 1: {two['transitions_per_s'] / (2 * one['transitions_per_s']):.2f} "
          f"(1.00 = linear)")
    d = 576
    print(f"replay bytes per transition vs the reference's 2*d*8 = {2 * d * 8}: "
          f"{2 * d * 8 / two['bytes_per_transition']:.1f}x smaller")
    print(f"load average at end: {os.getloadavg()}")
    ray.shutdown()


if __name__ == "__main__":
    main()
