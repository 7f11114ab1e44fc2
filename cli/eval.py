"""``mara eval``: the command line of the evaluation (``evaluation.run.run_eval``).

    mara eval --agent agent.safetensors --prompts harmful=prompts.json --out eval/ \
        --judge length=function:evaluation.preference:length_judge
    mara eval --resume eval/          # an interrupted evaluation goes on where it stopped

It parses the options, loads the prompt sets, builds the judges and the generator, runs
the evaluation, appending each batch's answers to OUT/answers.jsonl as it finishes
(``evaluation.answers_file``), and writes its outputs (``evaluation.report.write_outputs``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cli.generator_args import add_generator_arguments, generator_from_args
from evaluation.answers_file import (
    ANSWERS,
    append_records,
    load_arguments,
    read_records,
    save_arguments,
    start_fresh,
    write_records,
)
from evaluation.judges import build_judge, default_judges, parse_judge_spec, training_reward_sources
from evaluation.report import write_outputs
from evaluation.run import run_eval

# Options that do not change what an evaluation computes: a resumed one may set them anew.
_RUN_ONLY = ("resume", "no_progress", "func", "command")


def add_eval_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``mara eval`` on the ``mara`` command's subparsers."""
    p = subparsers.add_parser(
        "eval", help="preference rate of MARA answers over the upstream model's (paper Eq. 12)",
        description="Answer prompt sets with MARA and baselines, judge every answer, and write "
                    "results.md, results.csv, answers.jsonl, accepted_positions.png and scores.png.")
    add_generator_arguments(p)
    p.add_argument("--prompts", action="append", metavar="NAME=SOURCE",
                   help="a prompt set: JSON (field 'instruction'), JSONL, parquet, .txt, or a hub dataset; repeatable")
    p.add_argument("--column", default="instruction", help="prompt field of the prompt sources")
    p.add_argument("--split", default="test", help="split of hub datasets")
    p.add_argument("--judge", action="append", default=[], metavar="NAME=KIND:PATH[:ROLE]",
                   help="a judge scorer (KIND from rewards); ROLE: helpful (default), harmless "
                        "(a cost model: lower is better), harmless-reward or overall; repeatable. "
                        "Default: the project's embedded judge (rewards.DEFAULT_JUDGE)")
    p.add_argument("--judge-options", action="append", default=[], metavar="NAME=JSON",
                   help="keyword options for one judge's scorer, e.g. cost='{\"device\": \"cuda\"}'")
    p.add_argument("--num-prompts", type=int, help="prompts per set, a seeded random subset (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tie-margin", type=float, default=0.0, help="score differences up to this are ties")
    p.add_argument("--sampled", action="store_true", help="also compare with a sampled upstream answer")
    p.add_argument("--fluency", action="store_true",
                   help="also report the upstream's mean log-likelihood per token of every system's answers "
                        "(with an agent horizon, also over their first horizon tokens, the part the agent decided)")
    p.add_argument("--best-of-n", type=int, default=0, metavar="N",
                   help="also compare with the best of N sampled upstream answers")
    p.add_argument("--bon-scorer", metavar="NAME|KIND:PATH[:ROLE]",
                   help="scorer picking the best-of-N answer: a --judge name or a scorer spec")
    p.add_argument("--out", help="output folder (required unless --resume)")
    p.add_argument("--resume", metavar="OUT",
                   help="continue the interrupted evaluation in OUT with the settings it started with "
                        "(OUT/eval_args.json); the prompts it answered are kept, the rest are answered")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=eval_main)
    return p


def eval_main(args: argparse.Namespace) -> int:
    """Run ``mara eval`` from parsed arguments; returns the exit status."""
    from core.agent_file import UNTRAINED, read_agent_metadata
    from core.config import ScorerSpec
    from core.prompts import load_prompts

    if args.resume:
        args, done = _resumed(args)
    elif not args.prompts or not args.out:
        raise ValueError("give --prompts NAME=SOURCE and --out OUT (or --resume OUT)")
    else:
        done = []
    options = {}
    for text in args.judge_options:
        name, sep, raw = text.partition("=")
        try:
            options[name] = json.loads(raw) if sep else None
        except json.JSONDecodeError as err:
            raise ValueError(f"--judge-options {text!r}: not JSON: {err}") from err
        if not isinstance(options[name], dict):
            raise ValueError(f"--judge-options must look like NAME='{{\"key\": value}}', got {text!r}")
    specs = [parse_judge_spec(t) for t in args.judge]
    for spec in specs:  # unknown kinds are refused before anything is loaded
        ScorerSpec(spec.kind, spec.path)
    if len({s.name for s in specs}) != len(specs):
        raise ValueError(f"judge names must be unique: {[s.name for s in specs]}")
    unknown = set(options) - {s.name for s in specs}
    if unknown:
        raise ValueError(f"--judge-options for unknown judge(s) {sorted(unknown)}")
    if args.best_of_n and not args.bon_scorer:
        raise ValueError("--best-of-n needs --bon-scorer (a judge name or KIND:PATH)")
    if args.bon_scorer and not args.best_of_n:
        raise ValueError("--bon-scorer is only used with --best-of-n N")
    if args.num_prompts is not None and args.num_prompts < 1:
        raise ValueError(f"--num-prompts must be >= 1, got {args.num_prompts}")

    prompt_sets = []
    for text in args.prompts:
        name, sep, source = text.partition("=")
        if not sep:  # a bare SOURCE: named after its file
            name, source = Path(text).stem or text, text
        if not name or not source:
            raise ValueError(f"--prompts must look like NAME=SOURCE, got {text!r}")
        prompt_sets.append((name, load_prompts(source, column=args.column, split=args.split)))

    judges = {s.name: build_judge(s, options.get(s.name)) for s in specs} if specs else default_judges()
    bon = None
    if args.best_of_n:
        bon = judges.get(args.bon_scorer) or build_judge(parse_judge_spec(args.bon_scorer, name="best-of-n"))

    out = Path(args.out)
    if not done:
        start_fresh(out)
    gen = generator_from_args(args, seed=args.seed)
    if not done:
        save_arguments(out, {**{k: getattr(args, k) for k in _DEFAULTS if k not in _RUN_ONLY}, **_as_resolved(gen)})
    trained = gen.agent_path not in (None, UNTRAINED)
    training_reward = training_reward_sources(read_agent_metadata(gen.agent_path)) if trained else None
    try:
        result = run_eval(gen, prompt_sets, judges, num_prompts=args.num_prompts, seed=args.seed,
                          tie_margin=args.tie_margin, sampled=args.sampled, best_of_n=args.best_of_n,
                          bon_scorer=bon, training_reward=training_reward, fluency=args.fluency,
                          progress=not args.no_progress, done=done,
                          on_batch=lambda records: append_records(out / ANSWERS, records))
    finally:
        gen.close()  # the vLLM backend's engine processes
    result.settings = {"agent": gen.agent_path if trained else "UNTRAINED (random weights)",
                       "upstream model": gen.llm.model_id, "backend": gen.backend, **result.settings}
    paths = write_outputs(result, out)
    print(paths["results.md"].read_text(encoding="utf-8"))
    print("wrote", ", ".join(str(p) for p in paths.values()))
    return 0


def _as_resolved(gen) -> dict:
    """The settings the agent file can decide ("agent", and the shipped agent when none is
    given) as ``gen`` resolved them: a resumed evaluation answers as this one did, even where
    the agent file's recommendations or the shipped agent change in between."""
    from core.agent_file import ALL_TOKENS, NO_CUT, NO_GATE

    return {"agent": gen.agent_path, "decisions": "greedy" if gen.greedy else "sampled",
            "horizon": ALL_TOKENS if gen.horizon is None else gen.horizon, "accept_threshold": gen.accept_threshold,
            "request_gate": NO_GATE if gen.request_gate is None else str(gen.request_gate),
            "decline_sentences": NO_CUT if gen.decline_sentences is None else gen.decline_sentences}


def _resumed(args: argparse.Namespace) -> tuple[argparse.Namespace, list[dict]]:
    """The arguments an interrupted evaluation started with, and the records it finished (its
    answers.jsonl rewritten without a last line cut short, so that new batches append cleanly)."""
    given = [k for k, default in _DEFAULTS.items() if k not in _RUN_ONLY and getattr(args, k, default) != default]
    if given:
        raise ValueError(f"--resume takes the evaluation's settings from its folder; drop {sorted(given)}")
    out = Path(args.resume)
    saved = load_arguments(out)
    unknown = set(saved) - set(_DEFAULTS)
    if unknown:
        raise ValueError(f"{out}: eval_args.json has settings this mara eval does not know: {sorted(unknown)}")
    resumed = argparse.Namespace(**{**vars(args), **saved, "out": str(out)})
    done = read_records(out / ANSWERS)
    write_records(out / ANSWERS, done)
    print(f"resuming the evaluation in {out}: {len(done)} prompts answered", flush=True)
    return resumed, done


def _defaults() -> dict:
    """Every ``mara eval`` option's default."""
    eval_parser = add_eval_parser(argparse.ArgumentParser().add_subparsers())
    return vars(eval_parser.parse_args([]))


_DEFAULTS = _defaults()
