"""What a scored answer costs: the embedded rewards' time per answer, in one run.

    python benchmarks/bench_reward_cost.py [--answers 64] [--tokens 128] [--batch 16]
                                           [--json benchmarks/results/bench_reward_cost.json]

Each shipped reward scores the same answers of about ``--tokens`` tokens (written to that
length, on the project's default prompts) after one warm-up call: the reader reward
(``answer-reader``: the upstream SmolLM2 reads request + answer), the rule-trained safety
reward (``response-class``: n-grams and MiniLM of the answer's opening) and the first
embedded reward (``embedding-bt``: MiniLM Bradley–Terry heads). Times come from one process
on one machine, so their ratios hold where the absolute seconds do not.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from record import write_result

ROOT = Path(__file__).resolve().parent.parent

SCORERS = {"answer-reader (reader reward)": ("answer-reader", "embedded"),
           "response-class (safety reward)": ("response-class", "embedded"),
           "embedding-bt (first embedded reward)": ("embedding-bt", "embedded")}


def answers_of_length(tokenizer, n: int, tokens: int) -> list[str]:
    sentence = ("Here is what you can do: start with the simplest step, check that it worked, and then "
                "go on to the next one, keeping notes as you go. ")
    ids = tokenizer(sentence * (tokens // 20 + 2), add_special_tokens=False)["input_ids"][:tokens]
    text = tokenizer.decode(ids)
    return [f"({i}) {text}" for i in range(n)]


def main() -> None:
    import sys

    sys.path.insert(0, str(ROOT))  # run as python benchmarks/bench_reward_cost.py from anywhere
    from transformers import AutoTokenizer

    from core.model_files import embedded_model_path
    from rewards import ScorerSpec, build_scorer, default_prompts_path

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--answers", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "bench_reward_cost.json"))
    args = parser.parse_args()
    prompts = [r["instruction"] for r in json.loads(default_prompts_path().read_text())][: args.answers]
    prompts = (prompts * (args.answers // len(prompts) + 1))[: args.answers]
    answers = answers_of_length(AutoTokenizer.from_pretrained(str(embedded_model_path())), args.answers, args.tokens)
    rows = []
    for name, (kind, path) in SCORERS.items():
        options = {"batch_size": args.batch} if kind == "answer-reader" else {}
        scorer = build_scorer(ScorerSpec(kind=kind, path=path, options=options))
        scorer.score(prompts[:4], answers[:4])  # warm-up: lazy loads, first-call allocations
        start = time.perf_counter()
        scorer.score(prompts, answers)
        seconds = time.perf_counter() - start
        rows.append({"reward": name, "answers": args.answers, "seconds": round(seconds, 2),
                     "ms per answer": round(1000 * seconds / args.answers, 1)})
        print(json.dumps(rows[-1]), flush=True)
    base = rows[1]["seconds"]
    for row in rows:
        row["time / safety reward"] = round(row["seconds"] / base, 2)
    print("\n| reward | answers | seconds | ms per answer | time / safety reward |\n| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['reward']} | {r['answers']} | {r['seconds']} | {r['ms per answer']} | {r['time / safety reward']} |")
    write_result("bench_reward_cost", rows, ratios=["time / safety reward"], path=args.json,
                 notes=f"answers of {args.tokens} tokens on the default prompts, batch {args.batch} for the reader; "
                       "CPU threads as torch sets them")
    print("wrote", args.json)


if __name__ == "__main__":
    main()
