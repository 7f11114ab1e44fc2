"""``mara learning-curve``: plot a training run's mean reward per block of episodes.

    mara learning-curve runs/align-smollm2 --out docs/learning_curve.png --block 50
"""

from __future__ import annotations

import argparse
import json

from evaluation.learning_curve import block_means, episode_rewards, plot_learning_curve, throughput


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
