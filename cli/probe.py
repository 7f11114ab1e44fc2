"""``mara probe``: what MARA can reach on an upstream model, before any training
(evaluation/reachability.py).

    mara probe --prompts harmful=../shared/data/prompts/saferlhf_test.json --prompts benign=runs/heldout/benign_heldout.json

Per prompt set: the share of prompts whose first position's candidates can open a refusal
(declines are recognised by the refusal heuristic, ``evaluation.preference.is_refusal``),
and the preference rate of an oracle agent (the best reachable answer under the judge)
over the upstream's greedy answer.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_probe_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("probe", help="what an agent can reach on an upstream model, before training",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2", help="upstream LLM: 'smollm2', a hub id, a folder or a .gguf file")
    p.add_argument("--prompts", action="append", required=True, metavar="NAME=SOURCE", help="a prompt set; repeatable")
    p.add_argument("--judge", metavar="KIND:PATH[:ROLE]",
                   help="the judge of the oracle's answers (default: the project's embedded judge)")
    p.add_argument("--num-prompts", type=int, help="a seeded random subset of each set")
    p.add_argument("--samples", type=int, default=4, help="sampled answers per prompt in the oracle's pool")
    p.add_argument("--max-rank", type=int, default=10, help="first-position candidates tried as refusal openings")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="folder for probe.md and probe.jsonl")
    p.set_defaults(func=_run)
    return p


def _run(args: argparse.Namespace) -> int:
    from core.config import SamplingConfig
    from core.prompts import load_prompts
    from envs.upstream import load_upstream
    from evaluation.judges import build_judge, default_judges, parse_judge_spec
    from evaluation.preference import is_refusal
    from evaluation.reachability import probe
    from evaluation.run import subset_indices

    sets = []
    for text in args.prompts:
        name, sep, source = text.partition("=")
        if not sep or not name or not source:
            raise ValueError(f"--prompts must look like NAME=SOURCE, got {text!r}")
        prompts = list(dict.fromkeys(load_prompts(source)))
        sets.append((name, [prompts[i] for i in subset_indices(len(prompts), args.num_prompts, args.seed)]))
    judge = build_judge(parse_judge_spec(args.judge, name="judge")) if args.judge \
        else next(iter(default_judges().values()))
    llm = load_upstream(args.model, device="cpu")
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens)
    lines = ["| prompt set | n | refusal reachable | median rank | upstream refusal | oracle refusal | "
             f"oracle vs upstream ({judge.name}) |", "|---|---:|---:|---:|---:|---:|---:|"]
    records = []
    for name, prompts in sets:
        report, rows = probe(llm, prompts, judge, is_refusal, sampling, samples=args.samples,
                             max_rank=args.max_rank, seed=args.seed, batch_size=args.batch_size)
        records += [{"prompt_set": name, **r} for r in rows]
        lines.append(f"| {name} | {report.prompts} | {100 * report.refusal_reachable:.0f}% | {report.median_rank:g} | "
                     f"{100 * report.upstream_refusal:.0f}% | {100 * report.oracle_refusal:.0f}% | "
                     f"{report.oracle_rate:+.1f}% ({report.wins}/{report.ties}/{report.losses}) |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "probe.md").write_text(table + "\n", encoding="utf-8")
        (out / "probe.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return 0
