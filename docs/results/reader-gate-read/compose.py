"""Derive the answers of a request gate and a decline cut from one `mara eval` run with
`--request-gate off --decline-sentences off`: where the gate flags a request the agent's answer
(cut by `envs.generation.decline_end` after N sentences if the agent stepped into it), elsewhere the
upstream's greedy answer, as `mara eval --request-gate GATE --decline-sentences N` answers under
greedy decisions.

    python docs/results/reader-gate-read/compose.py runs/val_nogate runs/val_reader2 GATE 2
writes runs/val_reader2 (answers.jsonl and the source's eval_args.json) for `mara blind pairs`;
GATE is "embedded" or a response-class head file. The read of ship_rule.md compared the gate of
build_gate.py with the one shipped then, the safety reward's: rewards/data/safety_reward.safetensors
(`compose.py runs/heldout_nogate runs/heldout_shipped rewards/data/safety_reward.safetensors 3`).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "decline-sentences-read"))
from cut_answers import cut, stepped_in

from rewards.request_gate import load_request_gate


def main(source: str, out: str, gate: str, sentences: str) -> None:
    rows = [json.loads(line) for line in Path(source, "answers.jsonl").read_text().splitlines()]
    horizon = json.loads(Path(source, "eval_args.json").read_text())["horizon"]
    flags = load_request_gate(gate, None)([r["prompt"] for r in rows])
    Path(out).mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(source, "eval_args.json"), Path(out, "eval_args.json"))
    counts = {"flagged": 0, "stepped into": 0}
    with open(Path(out, "answers.jsonl"), "w") as f:
        for r, flagged in zip(rows, flags):
            answers = dict(r["answers"])
            mara = dict(r["mara"])
            if not flagged:
                answers["mara"] = answers["upstream-greedy"]
                mara["accepted_positions"] = [1] * len(mara["accepted_positions"])
            elif stepped_in(r, horizon):
                answers["mara"] = cut(answers["mara"], int(sentences))
                counts["stepped into"] += 1
            counts["flagged"] += bool(flagged)
            keep = {k: r[k] for k in ("prompt_set", "index", "prompt")}
            f.write(json.dumps({**keep, "answers": answers, "mara": mara}, ensure_ascii=False) + "\n")
    print(out, counts, "of", len(rows))


if __name__ == "__main__":
    main(*sys.argv[1:])
