"""``mara splits``: every prompt split, written as prompt files (core/splits.py).

    mara splits --shared-data ../shared/data --out runs/splits
    mara splits --shared-data ../shared/data --out runs/reader --sample reward=250 --sample judge=100 \
        --sample validation=100 --sample-seed 1     # the reader reward's label pools (docs/REWARD.md)

Held-out sets (``saferlhf_test``, ``redteam_heldout``, ``benign_heldout``), validation, the
judge's and the reward's prompts, and the agent's training prompts (``agent_harmful``,
``agent_benign``), one JSON file each; equal and nearly equal prompts are in one split only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_splits_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("splits", help="write every prompt split (held-out, validation, judge, reward, agent)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shared-data", required=True, help="the data folder (prompts/ inside)")
    p.add_argument("--out", default="runs/splits", help="folder for the prompt files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample", action="append", default=[], metavar="SPLIT=N",
                   help="write only N seeded random harmful and N benign prompts of a split (validation, judge, "
                        "reward or agent) as SPLIT_harmful.json and SPLIT_benign.json; repeatable")
    p.add_argument("--sample-seed", type=int, default=1)
    p.set_defaults(func=_run)
    return p


def _run(args: argparse.Namespace) -> int:
    from core.splits import build_splits, write_splits

    if not (Path(args.shared_data) / "prompts").is_dir():
        raise FileNotFoundError(f"no prompts/ folder in {args.shared_data}")
    splits = build_splits(args.shared_data, seed=args.seed)
    if args.sample:
        splits = _sampled(splits, args.sample, args.sample_seed)
    paths = write_splits(splits, args.out)
    sizes = {name: len(prompts) for name, prompts in splits.named().items()}
    print(json.dumps({"files": {k: str(v) for k, v in paths.items()}, "prompts": sizes, "dropped": splits.dropped},
                     indent=1))
    return 0


def _sampled(splits, samples: list[str], seed: int):
    """The splits with only the sampled parts: each ``SPLIT=N`` keeps N random prompts of each
    kind (in the order given, one seeded generator for all)."""
    import random

    from core.splits import Splits

    rng = random.Random(seed)
    parts: dict[str, dict[str, list[str]]] = {"validation": {}, "judge": {}, "reward": {}, "agent": {}}
    for sample in samples:
        name, _, n = sample.partition("=")
        if name not in parts or not n.isdigit():
            raise ValueError(f"--sample must be SPLIT=N with SPLIT one of {sorted(parts)}, got {sample!r}")
        for kind in ("harmful", "benign"):
            pool = list(getattr(splits, name)[kind])
            rng.shuffle(pool)
            parts[name][kind] = pool[:int(n)]
    return Splits(heldout={}, **parts)
