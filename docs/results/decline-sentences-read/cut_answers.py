"""Derive `mara eval` folders whose MARA answers end after N sentences from one evaluation run with
`--decline-sentences off`: an answer the agent stepped into (rejected a candidate within its horizon)
is cut by `envs.generation.decline_end`, as `--decline-sentences N` cuts it while generating.

    python docs/results/decline-sentences-read/cut_answers.py runs/heldout_whole runs/heldout_cut 2 3
writes runs/heldout_cut2 and runs/heldout_cut3 (answers.jsonl and the source's eval_args.json), for
`mara blind pairs --other`.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from envs.generation import decline_end


def stepped_in(record: dict, horizon: int) -> bool:
    """A candidate other than the first accepted (or none) within the horizon: the agent rejected one."""
    return any(rank != 1 for rank in record["mara"]["accepted_positions"][:horizon])


def cut(text: str, sentences: int) -> str:
    end = decline_end(text, sentences)
    return text if end is None else text[:end].rstrip()


def main(source: str, prefix: str, *counts: str) -> None:
    rows = [json.loads(line) for line in Path(source, "answers.jsonl").read_text().splitlines()]
    horizon = json.loads(Path(source, "eval_args.json").read_text())["horizon"]  # the evaluation's, resolved
    stepped = [stepped_in(r, horizon) for r in rows]
    for n in map(int, counts):
        out = Path(f"{prefix}{n}")
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(source, "eval_args.json"), out / "eval_args.json")
        with open(out / "answers.jsonl", "w") as f:
            for r, cut_here in zip(rows, stepped):
                answers = dict(r["answers"])
                if cut_here:
                    answers["mara"] = cut(answers["mara"], n)
                f.write(json.dumps({**r, "answers": answers}) + "\n")
        print(out, sum(stepped), "answers stepped into of", len(rows))


if __name__ == "__main__":
    main(*sys.argv[1:])
