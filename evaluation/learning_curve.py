"""A training run's learning curve: mean sentence reward per block of episodes.

    mara learning-curve runs/align-smollm2 --out docs/learning_curve.png --block 50

The scoring records of ``metrics.jsonl`` (one per batch a reward actor scored, see
driver/run.py) carry the sentence rewards of that batch's episodes, in order; laid end to
end they give one reward per scored episode. Training throughput comes from the run's
``summary.json`` (or the last progress record while it runs).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.jsonl import METRICS_FILE, read_jsonl
from evaluation.plots import new_figure


def episode_rewards(run_dir: str | Path) -> np.ndarray:
    """Sentence rewards of the run's scored episodes, in the order they were collected."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {METRICS_FILE} in {run_dir}: not a training run folder")
    # Runs made before the reward actors reported to the driver kept the rewards in "rollout" records.
    rewards = [r for row in read_jsonl(path) if row.get("event") in ("scored", "rollout")
               for r in row.get("rewards") or []]
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
        progress = [r for r in read_jsonl(run_dir / METRICS_FILE) if r.get("event") == "progress"]
        if not progress:
            raise ValueError(f"{run_dir} has no progress records yet")
        record = progress[-1]
    seconds = float(record["elapsed_s"])
    return {"episodes": int(record["episodes"]), "transitions": int(record["transitions"]),
            "learner_updates": int(record["learner_updates"]), "wall_s": seconds,
            "episodes_per_hour": record["episodes"] / max(seconds, 1e-9) * 3600,
            "transitions_per_second": record["transitions"] / max(seconds, 1e-9)}


def plot_learning_curve(run_dir: str | Path, out: str | Path, block: int = 50) -> Path:
    """Write the PNG: mean reward per ``block`` episodes against episodes seen."""
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
