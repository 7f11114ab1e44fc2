"""Where the new agent's head-to-head preference over the shipped one comes from, per kind of
prompt: the new gate passes a request the shipped agent stepped into (the new answer is the
upstream's), both answers are the agent's (cut after 2 and after 3 sentences), and so on; beside it,
the same prompts' difference in preference against the upstream, from the joint read.

    python docs/results/reader-gate-read/decompose.py runs/heldout_shipped runs/heldout_new \
        runs/heldout_new/blind/pairs.jsonl SHIP_VERDICTS runs/joint/pairs.jsonl JOINT_VERDICTS
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path


def records(folder: str) -> dict:
    return {(r["prompt_set"], r["index"]): r for r in map(json.loads, Path(folder, "answers.jsonl").read_text().splitlines())}


def verdicts(pairs_file: str, verdicts_file: str) -> dict:
    """(request, {answer, answer}) -> the preferred answer, None for a tie."""
    items = {i["id"]: i for i in map(json.loads, Path(pairs_file).read_text().splitlines())}
    out = {}
    for v in map(json.loads, Path(verdicts_file).read_text().splitlines()):
        item = items[v["id"]]
        out[(item["request"], frozenset((item["A"], item["B"])))] = None if v["preference"] == "tie" else item[v["preference"]]
    return out


def outcome(read: dict, prompt: str, a: str, b: str) -> int:
    """+1: a preferred to b, -1: b to a, 0: a tie or the same answer."""
    if a == b:
        return 0
    preferred = read[(prompt, frozenset((a, b)))]
    return 0 if preferred is None else 1 if preferred == a else -1


def kind(old: str, new: str, upstream: str) -> str:
    if new == old:
        return "the same answer"
    if new == upstream:
        return "the new gate passes the request (new = upstream)"
    if old == upstream:
        return "only the new gate flags it (old = upstream)"
    return "both the agent's (decline cut after 2 vs 3 sentences)"


def main(old_dir: str, new_dir: str, ship_pairs: str, ship_verdicts: str, joint_pairs: str, joint_verdicts: str) -> None:
    old, new = records(old_dir), records(new_dir)
    ship, joint = verdicts(ship_pairs, ship_verdicts), verdicts(joint_pairs, joint_verdicts)
    table: dict = {}
    for where, record in old.items():
        group = "benign" if where[0] == "benign_heldout" else "harmful"
        o, n, u = record["answers"]["mara"], new[where]["answers"]["mara"], record["answers"]["upstream-greedy"]
        row = table.setdefault(group, {}).setdefault(kind(o, n, u), Counter())
        row["prompts"] += 1
        row["new over old (ship read)"] += outcome(ship, record["prompt"], n, o)
        row["vs upstream: new minus old (joint read)"] += (outcome(joint, record["prompt"], n, u)
                                                           - outcome(joint, record["prompt"], o, u))
    print(json.dumps({g: {k: dict(c) for k, c in rows.items()} for g, rows in table.items()}, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
