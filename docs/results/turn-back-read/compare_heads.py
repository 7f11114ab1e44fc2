"""reward_rule.md's figures: reader heads (files) on the validation rows of a labels file, all of
them, the old ones alone and the cut-before-the-turn pairs alone (``rewards.recipe.reader.figures``),
the answers' features read from a ``mara reader-reward build --cache`` file.

    PYTHONPATH=. python docs/results/turn-back-read/compare_heads.py LABELS CACHE NAME=HEAD.safetensors ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from rewards.answer_reader import ReaderHead
from rewards.recipe import reader

CUT = "cut-before-turn"


def main(labels: str, cache: str, *heads: str) -> None:
    rows = [json.loads(line) for line in Path(labels).read_text().splitlines()]
    with np.load(cache, allow_pickle=False) as f:
        cached = dict(zip(f["keys"].astype(str), f["features"]))
    valid = [r for r in rows if r["split"] == "validation"]
    new_pairs = {r["pair"] for r in valid if r["system"] == CUT}
    subsets = {"validation, all": valid,
               "validation, old rows": [r for r in valid if r["pair"] not in new_pairs],
               "validation, cut pairs": [r for r in valid if r["pair"] in new_pairs]}
    report = {}
    for spec in heads:
        name, path = spec.split("=", 1)
        head = ReaderHead.load(path)
        report[name] = {}
        for subset, chosen in subsets.items():
            features = np.stack([cached[reader.row_key(r)] for r in chosen])
            report[name][subset] = reader.figures(head, features, chosen)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
