"""What the asynchronous design buys: the same run in ``mode: async`` and ``mode: sync``.

    python benchmarks/bench_sync_async.py [--episodes 120] [--workers 1] [--max-new-tokens 32]

Both runs: the embedded SmolLM2-135M-Instruct, the shipped prompts, a model-free reward
(``rewards.examples:word_count``, so the reward actor costs nothing and the comparison is
rollouts against learning), local Ray, the same episode budget, learner batch 256.

- sync (the reference's loop): rounds of one rollout call per worker; every episode
  scored and inserted; then 10 learner updates per episode while no rollout runs.
- async (the design): workers and learner never wait for each other; the replay's rate
  limiter is set to the same 10 updates per episode on average (samples per insert =
  10 x batch / transitions per episode, the latter measured by the sync run).

Reported per mode: wall time to the budget, episodes/hour, learner updates per episode,
and the share of wall time the learner and the workers were busy (learner: its update
time, from the learner's own timing in async mode and from the rounds' update phases in
sync mode; workers: decoding time over wall time x workers). Target: async
>= 1.5x sync in episodes/hour.
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

BATCH = 256
UPDATES_PER_EPISODE = 10


def config(mode: str, episodes: int, workers: int, max_new_tokens: int, out: Path, spi: float) -> RunConfig:
    return from_dict(RunConfig, {
        "mode": mode, "sync_updates_per_episode": UPDATES_PER_EPISODE,
        "sampling": {"max_new_tokens": max_new_tokens},
        "reward": {"scorers": [{"kind": "function", "path": "rewards.examples:word_count"}], "num_cpus": 0.1},
        "rollout": {"num_workers": workers, "episodes_per_call": 4},
        "replay": {"min_size_to_sample": 512, "samples_per_insert": spi, "error_buffer": max(4096.0, 2 * spi)},
        "sac": {"batch_size": BATCH},
        "learner": {"publish_every": 5, "checkpoint_every": 10_000},
        "budget": {"episodes": episodes, "seconds": 0, "updates": 0},
        "output_dir": str(out), "run_name": mode, "dashboard": False, "metrics_port": -1, "progress_every_s": 10.0,
    })


def measure(cfg: RunConfig) -> dict:
    run_dir = new_run_dir(cfg)
    summary = train(cfg, run_dir, check_inputs(cfg))
    records = read_jsonl(run_dir / "metrics.jsonl")
    rollouts = [r for r in records if r.get("event") == "rollout"]
    wall = summary["elapsed_s"]
    decoding = sum(r["seconds"] for r in rollouts)
    if cfg.mode == "sync":
        learner_busy = sum(r["end"] - r["start"] for r in records if r.get("event") == "sync_updates")
    else:
        learner_busy = (summary.get("learner_update_share") or 0.0) * wall
    return {"mode": cfg.mode, "wall_s": wall, "episodes": summary["episodes"],
            "transitions": summary["transitions"], "updates": summary["learner_updates"],
            "episodes_per_hour": summary["episodes"] / wall * 3600,
            "updates_per_episode": summary["learner_updates"] / max(summary["episodes"], 1),
            "transitions_per_episode": summary["transitions"] / max(summary["episodes"], 1),
            "learner_busy": learner_busy / wall, "workers_busy": decoding / (wall * cfg.rollout.num_workers)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=120)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory() as out:
        sync = measure(config("sync", args.episodes, args.workers, args.max_new_tokens, Path(out), spi=1.0))
        spi = UPDATES_PER_EPISODE * BATCH / sync["transitions_per_episode"]
        run_async = measure(config("async", args.episodes, args.workers, args.max_new_tokens, Path(out), spi=spi))
    print(f"load average at end: {os.getloadavg()}; async samples per insert {spi:.1f}")
    print("\n| mode | wall s | episodes | episodes/hour | updates/episode | learner busy | workers busy |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in (sync, run_async):
        print(f"| {r['mode']} | {r['wall_s']:.0f} | {r['episodes']} | {r['episodes_per_hour']:.0f} | "
              f"{r['updates_per_episode']:.1f} | {r['learner_busy']:.0%} | {r['workers_busy']:.0%} |")
    print(f"\nasync / sync episodes per hour: {run_async['episodes_per_hour'] / sync['episodes_per_hour']:.2f}x")


if __name__ == "__main__":
    main()
