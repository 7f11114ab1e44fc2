"""A training run's learning curve: mean sentence reward per block of episodes.

    mara learning-curve runs/align-smollm2 --out docs/learning_curve.png --block 50

The rollout records of ``metrics.jsonl`` (one per worker call, see mara/training.py) carry
the sentence rewards of the episodes scored since that worker's previous call, in order;
laid end to end they give one reward per scored episode. Training throughput comes from
the run's ``summary.json`` (or the last progress record while it runs).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mara.metrics import MetricsLog, read_jsonl


def episode_rewards(run_dir: str | Path) -> np.ndarray:
    """Sentence rewards of the run's scored episodes, in the order they were collected."""
    path = Path(run_dir) / MetricsLog.FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"no {MetricsLog.FILENAME} in {run_dir}: not a training run folder")
    rewards = [r for row in read_jsonl(path) if row.get("event") == "rollout" for r in row.get("rewards") or []]
    return np.asarray(rewards, dtype=np.float64)


def block_means(values: np.ndarray, block: int) -> np.ndarray:
    """Mean of each full block of ``block`` consecutive values (a last partial block is dropped)."""
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    full = len(values) // block * block
    return values[:full].reshape(-1, block).mean(axis=1)


def throughput(run_dir: str | Path) -> dict:
    """Episodes, transitions, wall time, episodes/hour and transitions/s of a run."""
    run_dir = Path(run_dir)
    summary = run_dir / "summary.json"
    if summary.is_file():
        record = json.loads(summary.read_text())
    else:
        progress = [r for r in read_jsonl(run_dir / MetricsLog.FILENAME) if r.get("event") == "progress"]
        if not progress:
            raise ValueError(f"{run_dir} has no progress records yet")
        record = progress[-1]
    seconds = float(record["elapsed_s"])
    return {"episodes": int(record["episodes"]), "transitions": int(record["transitions"]),
            "updates": int(record["updates"]), "wall_s": seconds,
            "episodes_per_hour": record["episodes"] / max(seconds, 1e-9) * 3600,
            "transitions_per_s": record["transitions"] / max(seconds, 1e-9)}


def plot_learning_curve(run_dir: str | Path, out: str | Path, block: int = 50) -> Path:
    """Write the PNG: mean reward per ``block`` episodes against episodes seen."""
    from mara.evaluation import new_figure

    means = block_means(episode_rewards(run_dir), block)
    if not len(means):
        raise ValueError(f"{run_dir}: fewer than {block} scored episodes")
    fig = new_figure(7.0, 3.6)
    ax = fig.add_subplot()
    x = (np.arange(len(means)) + 1) * block
    ax.plot(x, means, lw=1.0, color="tab:blue", label=f"mean per {block} episodes")
    if len(means) >= 10:  # a smoother line to read the trend through the noise
        k = max(len(means) // 10, 2)
        smooth = np.convolve(means, np.ones(k) / k, mode="valid")
        ax.plot(x[k - 1:], smooth, lw=2.0, color="tab:orange", label=f"running mean of {k} blocks")
    ax.set_xlabel("episodes")
    ax.set_ylabel("sentence reward (training reward)")
    ax.set_title(f"Learning curve: {Path(run_dir).name}")
    ax.grid(alpha=0.3)
    ax.legend()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out


def add_learning_curve_parser(sub) -> None:
    p = sub.add_parser("learning-curve", help="plot a training run's mean reward per block of episodes")
    p.add_argument("run_dir", help="a run folder written by launch.py")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--block", type=int, default=50, help="episodes per point (default 50)")
    p.set_defaults(func=_cmd_learning_curve)


def _cmd_learning_curve(args: argparse.Namespace) -> int:
    path = plot_learning_curve(args.run_dir, args.out, block=args.block)
    means = block_means(episode_rewards(args.run_dir), args.block)
    print(json.dumps({"png": str(path), "blocks": len(means), "first_block": round(float(means[0]), 4),
                      "last_block": round(float(means[-1]), 4), **throughput(args.run_dir)}, indent=1))
    return 0
