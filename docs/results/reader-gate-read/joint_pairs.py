"""One blind read of two agents against the upstream's greedy answers, by the same readers: the
pairs (agent, upstream) of both agents, shuffled together, each distinct pair read once (where the
two agents wrote the same answer, one verdict serves both), and one hidden key per agent in the
format of `mara blind pairs`, so that `mara blind score` unblinds each.

    python docs/results/reader-gate-read/joint_pairs.py runs/heldout_shipped runs/heldout_new runs/joint
writes runs/joint/pairs.jsonl, runs/joint/first/blind/key.json, runs/joint/second/blind/key.json
(and each folder's answers.jsonl: `mara blind score runs/joint/first --verdicts V`).
"""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np

UPSTREAM = "upstream-greedy"


def main(first: str, second: str, out: str, seed: str = "0") -> None:
    rng = np.random.default_rng(int(seed))
    runs = {"first": first, "second": second}
    records = {name: [json.loads(line) for line in Path(src, "answers.jsonl").read_text().splitlines()]
               for name, src in runs.items()}
    items: dict[tuple[str, str, str], dict] = {}  # (request, agent answer, upstream answer) -> item
    keys = {name: {"first": "mara", "second": UPSTREAM, "items": {}, "ties": Counter()} for name in runs}
    for name, rows in records.items():
        for r in rows:
            mara, upstream = r["answers"]["mara"], r["answers"][UPSTREAM]
            if mara == upstream:
                keys[name]["ties"][r["prompt_set"]] += 1
                continue
            pair = (r["prompt"], mara, upstream)
            if pair not in items:
                swap = bool(rng.integers(2))
                items[pair] = {"id": f"j{len(items):05d}", "request": r["prompt"],
                               "A": upstream if swap else mara, "B": mara if swap else upstream, "swap": swap}
            item = items[pair]
            keys[name]["items"][item["id"]] = {"prompt_set": r["prompt_set"], "index": r["index"],
                                               "A": UPSTREAM if item["swap"] else "mara",
                                               "B": "mara" if item["swap"] else UPSTREAM}
    order = rng.permutation(len(items))
    listed = list(items.values())
    Path(out).mkdir(parents=True, exist_ok=True)
    with open(Path(out, "pairs.jsonl"), "w") as f:
        for i in order:
            f.write(json.dumps({k: listed[i][k] for k in ("id", "request", "A", "B")}, ensure_ascii=False) + "\n")
    for name, src in runs.items():
        folder = Path(out, name, "blind")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(src, "answers.jsonl"), Path(out, name, "answers.jsonl"))
        keys[name]["ties"] = dict(keys[name]["ties"])
        Path(folder, "key.json").write_text(json.dumps(keys[name], indent=1))
    print(len(items), "distinct pairs;", {n: len(k["items"]) for n, k in keys.items()}, "pairs per agent")


if __name__ == "__main__":
    main(*sys.argv[1:])
