"""``mara blind``: a blind pairwise read of two systems' answers from a ``mara eval`` folder.

    mara blind pairs eval/ --systems mara,upstream-greedy      # eval/blind/pairs.jsonl + key.json
    mara blind pairs new/ --systems mara,shipped --other shipped=old/:mara   # two evaluations' agents
    ... a reader writes one verdict per item (docs/RUBRIC.md) to verdicts.jsonl
    mara blind score eval/ --verdicts verdicts.jsonl            # eval/blind/results.md

The reader sees pairs.jsonl only (request, A, B): never which system wrote which answer.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_blind_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("blind", help="write blind A/B pairs of an evaluation's answers; score a reader's verdicts",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = p.add_subparsers(dest="step", required=True)
    pairs = steps.add_parser("pairs", help="shuffled A/B pairs of two systems and the hidden key")
    pairs.add_argument("eval_dir", help="a mara eval output folder (its answers.jsonl)")
    pairs.add_argument("--systems", default="mara,upstream-greedy", help="FIRST,SECOND: the two systems to compare")
    pairs.add_argument("--seed", type=int, default=0)
    pairs.add_argument("--other", metavar="NAME=EVAL_DIR:SYSTEM",
                       help="add the answers of SYSTEM in another mara eval folder of the same prompts as system NAME "
                            "(e.g. the agent of another evaluation)")
    score = steps.add_parser("score", help="unblind a verdicts file into the preference table")
    score.add_argument("eval_dir")
    score.add_argument("--verdicts", required=True, help="JSON lines: {id, labels: {A, B}, preference: A|B|tie}")
    score.add_argument("--judge", action="append", default=[], metavar="NAME=KIND:PATH",
                       help="an offline judge (a scorer of rewards/, higher is better) whose agreement with the "
                            "reader on the non-tied pairs is reported; repeatable")
    p.set_defaults(func=_cmd_blind)
    return p


def _cmd_blind(args: argparse.Namespace) -> int:
    from core.atomic import write_json_atomic
    from core.jsonl import read_jsonl
    from evaluation.answers_file import write_records
    from evaluation.blind import blind_pairs, score_verdicts, verdicts_markdown

    folder = Path(args.eval_dir) / "blind"
    if args.step == "pairs":
        first, sep, second = args.systems.partition(",")
        if not sep or not first or not second or first == second:
            raise ValueError(f"--systems must name two systems, FIRST,SECOND, got {args.systems!r}")
        other = None
        if args.other:
            name, _, where = args.other.partition("=")
            other_dir, _, system = where.rpartition(":")
            if not name or not other_dir or not system:
                raise ValueError(f"--other must be NAME=EVAL_DIR:SYSTEM, got {args.other!r}")
            other = {"name": name, "eval_dir": other_dir, "system": system}
        items, key = blind_pairs(_answers(args.eval_dir, other), first, second, args.seed)
        if other:
            key["other"] = other
        folder.mkdir(parents=True, exist_ok=True)
        write_records(folder / "pairs.jsonl", items)
        write_json_atomic(folder / "key.json", key)
        print(f"wrote {len(items)} pairs to {folder / 'pairs.jsonl'} (the key: {folder / 'key.json'}; "
              f"{sum(key['ties'].values())} identical pairs count as ties)")
        return 0
    key = json.loads((folder / "key.json").read_text(encoding="utf-8"))
    verdicts = list(read_jsonl(Path(args.verdicts)))
    text = verdicts_markdown(key, score_verdicts(key, verdicts))
    if args.judge:
        text += _judges_markdown(key, verdicts, _answers(args.eval_dir, key.get("other")), args.judge)
    (folder / "results.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


def _answers(eval_dir: str, other: dict | None) -> list[dict]:
    """An evaluation's answer records, with ``other`` (``--other``: {name, eval_dir, system})
    joined as a system of its own."""
    from core.jsonl import read_jsonl
    from evaluation.blind import with_system_from

    records = list(read_jsonl(Path(eval_dir) / "answers.jsonl"))
    if other is None:
        return records
    return with_system_from(records, list(read_jsonl(Path(other["eval_dir"]) / "answers.jsonl")),
                            other["name"], other["system"])


def _judges_markdown(key: dict, verdicts: list[dict], records: list[dict], judges: list[str]) -> str:
    """Each offline judge's agreement with the reader, per prompt set."""
    from core.config import ScorerSpec
    from evaluation.blind import judge_agreement
    from rewards import build_scorer

    lines = ["", "## Offline judges against the reader", "",
             "Share of the pairs the reader did not call a tie that each judge orders the same way.", "",
             "| judge | prompt set | pairs | agreement |", "|---|---|---:|---:|"]
    for judge in judges:
        name, _, spec = judge.partition("=")
        kind, _, path = spec.partition(":")
        if not name or not kind:
            raise ValueError(f"--judge must be NAME=KIND:PATH, got {judge!r}")
        scorer = build_scorer(ScorerSpec(kind=kind, path=path))
        table = judge_agreement(key, verdicts, records, scorer.score)
        total = {"pairs": sum(r["pairs"] for r in table.values()), "agree": sum(r["agree"] for r in table.values())}
        for prompt_set, row in [*table.items(), ("all", total)]:
            lines.append(f"| {name} | {prompt_set} | {row['pairs']} | {100 * row['agree'] / max(row['pairs'], 1):.1f}% |")
    return "\n".join(lines) + "\n"
