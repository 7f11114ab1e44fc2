"""The ``mara`` command line.

    mara generate --agent agent.safetensors --model smollm2 "How can I bake bread?"
    mara generate --prompts-file prompts.json --compare --json out.jsonl
    mara generate --backend vllm --vllm enforce_eager=true --compare "How can I bake bread?"
    mara eval --agent agent.safetensors --prompts harmful=prompts.json --out eval/
    mara train-reward --data pairs.jsonl --out head.safetensors
    mara learning-curve runs/<run> --out curve.png
    mara serve --agent agent.safetensors --port 8000      # OpenAI API + web page on 127.0.0.1
    mara scale runs/<run> --workers 4                      # rollout workers of a running run
    mara agent agent.safetensors --recommend-decisions sampled   # the decision rule used by default
    mara splits --shared-data ../shared/data --out runs/splits   # held-out, validation, reward, judge, agent prompts
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings

from cli.agent import add_agent_parser
from cli.blind import add_blind_parser
from cli.config import add_config_parser
from cli.eval import add_eval_parser
from cli.generator_args import add_generator_arguments, generator_from_args
from cli.learning_curve import add_learning_curve_parser
from cli.probe import add_probe_parser
from cli.reader_reward import add_reader_reward_parser
from cli.safety_reward import add_safety_reward_parser
from cli.scale import add_scale_parser
from cli.serve import add_serve_parser
from cli.splits import add_splits_parser
from cli.train_reward import add_train_reward_parser
from core.agent_file import AgentFileError


def _generate_parser(sub) -> None:
    p = sub.add_parser("generate", help="answer prompts with an accept/reject agent in the loop")
    p.add_argument("prompts", nargs="*", help="prompt texts")
    p.add_argument("--prompts-file", help="JSON (field 'instruction'), JSONL, parquet or .txt file of prompts")
    p.add_argument("--column", default="instruction", help="prompt field in --prompts-file")
    add_generator_arguments(p)
    p.add_argument("--sample", dest="decisions", action="store_const", const="sampled",
                   help="the same as --decisions sampled")
    p.add_argument("--compare", action="store_true", help="also print the upstream model's greedy answer")
    p.add_argument("--json", dest="json_out", help="write one JSON line per prompt to this file")
    p.set_defaults(func=_cmd_generate)


def _cmd_generate(args) -> int:
    from core.prompts import load_prompts
    from envs.generation import accepted_position_distribution

    prompts = list(args.prompts)
    if args.prompts_file:
        prompts += load_prompts(args.prompts_file, column=args.column)
    if not prompts:
        raise ValueError("no prompts: give prompt texts or --prompts-file")
    gen = generator_from_args(args)
    try:
        answers = gen.generate(prompts)
        baselines = gen.generate_upstream(prompts) if args.compare else [None] * len(prompts)
    finally:
        gen.close()  # the vLLM backend's engine processes
    out = open(args.json_out, "w", encoding="utf-8") if args.json_out else None
    for answer, baseline in zip(answers, baselines):
        print(f"### prompt\n{answer.prompt}\n### MARA ({answer.num_tokens} tokens, "
              f"{answer.num_decisions} decisions, accepted positions {answer.accepted_position_histogram})\n"
              f"{answer.text}")
        if baseline is not None:
            print(f"### upstream greedy\n{baseline}")
        print()
        if out:
            record = {"prompt": answer.prompt, "mara": answer.text, "upstream_greedy": baseline,
                      "num_decisions": answer.num_decisions, "num_tokens": answer.num_tokens,
                      "accepted_positions": answer.accepted_position_histogram,
                      "finish_reason": answer.finish_reason}
            out.write(json.dumps(record) + "\n")
    if out:
        out.close()
    share = accepted_position_distribution(answers)
    print("accepted-position distribution:", {k: round(v, 3) for k, v in share.items()})
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mara", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    _generate_parser(sub)
    add_eval_parser(sub)
    add_train_reward_parser(sub)
    add_learning_curve_parser(sub)
    add_safety_reward_parser(sub)
    add_probe_parser(sub)
    add_serve_parser(sub)
    add_scale_parser(sub)
    add_agent_parser(sub)
    add_config_parser(sub)
    add_blind_parser(sub)
    add_splits_parser(sub)
    add_reader_reward_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    warnings.simplefilter("default", UserWarning)
    try:
        return args.func(args)
    except (FileNotFoundError, AgentFileError, ValueError) as err:
        print(f"mara {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
