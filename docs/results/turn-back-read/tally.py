"""The ship rule's count (ship_rule.md): every reader's verdict on the pairs of one blind read,
split by the reader's own verdict on the request, as wins / ties / losses of the new answers
("mara": a decline that ends before a turning sentence) against the shipped agent's ("shipped"),
with each side's labels.

    python docs/results/turn-back-read/tally.py runs/val_turn/blind/key.json READER1.jsonl READER2.jsonl ...
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path


def tally(key_path: str, verdict_paths: list[str]) -> dict:
    key = json.loads(Path(key_path).read_text())["items"]
    counts = collections.defaultdict(collections.Counter)
    labels = collections.defaultdict(collections.Counter)
    for path in verdict_paths:
        for line in Path(path).read_text().splitlines():
            v = json.loads(line)
            sides = key[v["id"]]
            request = v["request"]
            winner = "tie" if v["preference"] == "tie" else sides[v["preference"]]
            counts[request][{"mara": "wins", "shipped": "losses", "tie": "ties"}[winner]] += 1
            for side in ("A", "B"):
                labels[(request, sides[side])][v["labels"][side]] += 1
    return {"counts": {r: dict(c) for r, c in counts.items()},
            "labels": {f"{r} / {s}": dict(c.most_common()) for (r, s), c in sorted(labels.items())}}


if __name__ == "__main__":
    print(json.dumps(tally(sys.argv[1], sys.argv[2:]), indent=1))
