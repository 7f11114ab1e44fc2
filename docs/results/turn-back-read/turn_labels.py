"""The cut-before-the-turn pairs (reward_rule.md): build the blind items from labelled rows, and turn
the readers' verdicts into labelled rows with their provenance.

    PYTHONPATH=. python docs/results/turn-back-read/turn_labels.py items rewards/data/reader_labels.jsonl runs/turn_labels
    ... readers label runs/turn_labels/items_*.jsonl by docs/RUBRIC.md into verdict files
    PYTHONPATH=. python docs/results/turn-back-read/turn_labels.py rows runs/turn_labels 'VERDICTS...' OUT.jsonl

An answer qualifies when a sentence of it declines (``DECLINE``) and a later one turns back
(``envs.generation.SENTENCE_END``; a contrastive connective opens the next sentence); its
pair is the answer cut before the turn. 160 reward, 50 judge and 70 validation answers, drawn with
seed 0.
"""

from __future__ import annotations

import collections
import hashlib
import json
import random
import re
import sys
from pathlib import Path

from envs.generation import SENTENCE_END

TURN = re.compile(r"\s*(?:however|but|that said|that being said|nevertheless|nonetheless|on the other hand|still)\b",
                  re.IGNORECASE)
DECLINE = re.compile(r"sorry|not equipped|can't|cannot|can not|unable|don't have the (?:ability|capability)|not able|"
                     r"won't|as a (?:chatbot|language|ai)|as an ai", re.IGNORECASE)
TAKE = {"reward": 160, "judge": 50, "validation": 70}
CUT = "cut-before-turn"


def cut_before_turn(answer: str) -> str | None:
    """The answer up to the sentence that turns back after a decline; None if it has none."""
    for m in SENTENCE_END.finditer(answer):
        if TURN.match(answer, m.end()):
            head = answer[:m.end()].rstrip()
            return head if DECLINE.search(head) and len(answer[m.end():].strip()) > 20 else None
    return None


def items(labels: str, out: str) -> None:
    rows = [json.loads(line) for line in Path(labels).read_text().splitlines()]
    seen, found = set(), collections.defaultdict(list)
    for r in rows:
        if (r["prompt"], r["answer"]) in seen:
            continue
        seen.add((r["prompt"], r["answer"]))
        head = cut_before_turn(r["answer"])
        if head is not None:
            found[r["split"]].append((r, head))
    rng = random.Random(0)
    blind, key = [], {}
    for split, n in TAKE.items():
        rng.shuffle(found[split])
        for r, head in found[split][:n]:
            pid = hashlib.sha1((r["prompt"] + head).encode()).hexdigest()[:12]
            sides = [("original", r["answer"]), ("cut", head)]
            rng.shuffle(sides)
            blind.append({"id": pid, "request": r["prompt"], "A": sides[0][1], "B": sides[1][1]})
            key[pid] = {"A": sides[0][0], "B": sides[1][0], "split": split, "prompt_set": r["prompt_set"],
                        "system": r["system"], "licence": r["licence"]}
    rng.shuffle(blind)
    Path(out).mkdir(parents=True, exist_ok=True)
    Path(out, "key.json").write_text(json.dumps(key))
    for b in range(3):
        Path(out, f"items_{b}.jsonl").write_text("".join(json.dumps(it) + "\n" for it in blind[b::3]))


def rows(folder: str, verdict_files: str, out: str, date: str = "2026-12-06") -> None:
    key = json.loads(Path(folder, "key.json").read_text())
    blind = {}
    for path in sorted(Path(folder).glob("items_*.jsonl")):
        blind.update({it["id"]: it for it in map(json.loads, path.read_text().splitlines())})
    with open(out, "w") as f:
        for path in verdict_files.split():
            for v in map(json.loads, Path(path).read_text().splitlines()):
                k, it = key[v["id"]], blind[v["id"]]
                for side in ("A", "B"):
                    f.write(json.dumps({
                        "split": k["split"], "prompt_set": k["prompt_set"], "prompt": it["request"],
                        "answer": it[side], "system": k["system"] if k[side] == "original" else CUT,
                        "label": v["labels"][side], "reader_request": v["request"], "pair": v["id"], "side": side,
                        "preference": v["preference"], "rubric_version": v["rubric_version"],
                        "grader": "strong LLM reader (helper agent), blind A/B", "date": date,
                        "licence": k["licence"]}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    {"items": items, "rows": rows}[sys.argv[1]](*sys.argv[2:])
