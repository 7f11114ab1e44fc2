"""Where the system saturates as rollout workers are added, with a synthetic LLM at d = 4096.

    python benchmarks/bench_scaling.py [--workers 1,2,4,8] [--seconds 60] [--forward-s 0.05]

Each setting is a real asynchronous run on a local Ray (driver, reward actor, replay,
learner, N rollout workers), whose workers host ``synthetic:4096:SECONDS``
(envs/synthetic.py): random hidden states of a 4096-wide model after a fixed sleep per
forward, so a worker produces transitions at a fixed rate that does not depend on the
cores, and everything downstream (states of 8 KiB in float16, episodes through the object
store, the reward actor's inserts, the replay, the learner's samples, weights going back
by reference) runs at the size of an 8B model. Reward: ``rewards.examples:word_count``.

Reported per N: transitions/s ingested by the replay, the learner's batches/s (updates of
batch 256), the driver's time to handle finished calls (p50/p99), how many weight versions
each worker fetched per version published (each fetch is a ``ray.get`` of an object-store
reference: Ray moves it to a node once, and workers on that node share the copy), and the
reward actor's share of the transitions (its inserts). Where a column stops growing with N,
that component saturates on this machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.jsonl import read_jsonl  # noqa: E402
from driver.config import RunConfig, from_dict  # noqa: E402
from driver.preflight import check_inputs  # noqa: E402
from driver.run import train  # noqa: E402
from driver.run_folder import new_run_dir  # noqa: E402


def config(workers: int, seconds: float, forward_s: float, out: Path) -> RunConfig:
    return from_dict(RunConfig, {
        "model": {"name": f"synthetic:4096:{forward_s}"},
        "sampling": {"max_new_tokens": 32},
        "reward": {"scorers": [{"kind": "function", "path": "rewards.examples:word_count"}], "num_cpus": 0.1},
        "rollout": {"num_workers": workers, "num_cpus": 0.1, "episodes_per_call": 8},
        "replay": {"capacity": 200_000, "min_size_to_sample": 1024, "samples_per_insert": 1e6,
                   "error_buffer": 2e6},  # the learner never waits on the limiter: it shows its own pace
        "sac": {"batch_size": 256, "hidden_size": 256},
        "learner": {"publish_every": 1, "checkpoint_every": 10**6},
        "budget": {"episodes": 0, "updates": 0, "seconds": seconds},
        "output_dir": str(out), "run_name": f"workers-{workers}", "dashboard": False, "metrics_port": -1,
        "progress_every_s": 10.0,
    })


def measure(cfg: RunConfig) -> dict:
    run_dir = new_run_dir(cfg)
    summary = train(cfg, run_dir, check_inputs(cfg))
    rollouts = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("event") == "rollout"]
    fetches = {}  # worker -> weight versions it fetched (the last report is the largest)
    for r in rollouts:
        fetches[r["worker"]] = max(fetches.get(r["worker"], 0), r.get("weight_fetches", 0))
    nodes = {r.get("node") for r in rollouts}
    wall = summary["elapsed_s"]
    route = summary.get("driver_route_ms") or {}
    return {"workers": cfg.rollout.num_workers, "wall_s": wall,
            "ingested_per_s": summary["inserted"] / wall,
            "decoded_per_s": summary["transitions"] / wall,
            "batches_per_s": summary["learner_updates"] / wall,
            "route_p50_ms": route.get("p50", float("nan")), "route_p99_ms": route.get("p99", float("nan")),
            "versions": summary["weight_version"], "fetches": sum(fetches.values()), "nodes": len(nodes),
            "fetches_per_version_per_node":
                sum(fetches.values()) / max(summary["weight_version"], 1) / max(len(nodes), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--forward-s", type=float, default=0.05, help="sleep per synthetic forward")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for n in [int(w) for w in args.workers.split(",")]:
            rows.append(measure(config(n, args.seconds, args.forward_s, Path(out))))
    print(f"load average at end: {os.getloadavg()}")
    print("\n| workers | transitions/s decoded | transitions/s ingested | learner batches/s "
          "| driver handling p50 / p99 ms | weight fetches per version per node |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['workers']} | {r['decoded_per_s']:.0f} | {r['ingested_per_s']:.0f} | {r['batches_per_s']:.2f} | "
              f"{r['route_p50_ms']:.1f} / {r['route_p99_ms']:.1f} | {r['fetches_per_version_per_node']:.2f} |")


if __name__ == "__main__":
    main()
