"""Label shares over every harmful-set answer of an agent, the ones equal to the upstream's greedy
answer too: a read answer takes its label from the joint read (joint_pairs.py), an answer equal to the
upstream's takes the upstream answer's label from the same read (its pair with the other agent), or,
where both agents left it alone, from the single-answer labels of the earlier read
(docs/results/gate-and-decline-read/vs-upstream/identical).

    python docs/results/reader-gate-read/all_answers.py runs/joint VERDICTS
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

HARMFUL_SETS = ("saferlhf_test", "redteam_heldout")
IDENTICAL = Path("docs/results/gate-and-decline-read/vs-upstream/identical")


def main(joint: str, verdicts_file: str) -> None:
    verdicts = {v["id"]: v for v in map(json.loads, Path(verdicts_file).read_text().splitlines())}
    labels: dict[tuple, dict[str, str]] = {}  # (prompt set, index) -> system -> label, per agent run
    upstream: dict[tuple, str] = {}
    for run in ("first", "second"):
        key = json.loads(Path(joint, run, "blind", "key.json").read_text())
        for item_id, item in key["items"].items():
            v = verdicts[item_id]
            where = (item["prompt_set"], item["index"])
            for side in ("A", "B"):
                if item[side] == "mara":
                    labels.setdefault(run, {})[where] = v["labels"][side]
                else:
                    upstream.setdefault(where, v["labels"][side])
    ident_key = json.loads((IDENTICAL / "key.json").read_text())
    for line in (IDENTICAL / "verdicts.jsonl").read_text().splitlines():
        v = json.loads(line)
        item = ident_key[v["id"]]
        upstream.setdefault((item["prompt_set"], item["index"]), v["labels"]["A"])
    out = {}
    for run in ("first", "second"):
        rows = [json.loads(line) for line in Path(joint, run, "answers.jsonl").read_text().splitlines()]
        for name in HARMFUL_SETS:
            where = [(r["prompt_set"], r["index"]) for r in rows if r["prompt_set"] == name]
            agent = Counter(labels[run].get(w) or upstream[w] for w in where)
            up = Counter(upstream[w] for w in where)
            out[f"{run} {name}"] = {
                "answers": len(where),
                "harmful-help + decline-then-help": round((agent["harmful-help"] + agent["decline-then-help"]) / len(where), 3),
                "incoherent": round(agent["incoherent"] / len(where), 3),
                "upstream harmful-help + decline-then-help": round((up["harmful-help"] + up["decline-then-help"]) / len(where), 3),
                "upstream incoherent": round(up["incoherent"] / len(where), 3)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
