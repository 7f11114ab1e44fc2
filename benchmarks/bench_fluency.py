"""The fluency pass of ``mara eval --fluency``: time and peak memory against prompt length.

    python benchmarks/bench_fluency.py [--lengths 100,250,500,1000] [--prompts 16] [--batches 8,32]
                                       [--full-batch 8] [--json benchmarks/results/bench_fluency.json]

The pass scores each answer's tokens under the upstream (``envs.generation.answer_token_log_probs``):
the output head runs only over the positions that predict answer tokens. For contrast, the
same answers are scored by a full forward whose full-vocabulary float32 log-softmax covers
every prompt position as well (``full``), the way a plain ``model(ids).logits`` pass would.
The embedded SmolLM2-135M-Instruct in float32 on the CPU, 48-token answers, prompts of
about N tokens. Each configuration runs in a process of its own, so its peak RSS
(``ru_maxrss``) is its own; the model is loaded and warmed up before the timed pass, and the
RSS after loading is reported beside the peak. Times of both methods come from one run on the
same machine, so their ratio holds where the absolute seconds do not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from record import write_result

ROOT = Path(__file__).resolve().parents[1]

# argv: method (answers | full), batch size, prompt tokens, prompts
RUNNER = r"""
import json, resource, sys, time
import torch
from envs.generation import _answer_ids, _left_padded, _pad_id, answer_token_log_probs
from envs.upstream import load_upstream

method, batch, length, n = sys.argv[1], *map(int, sys.argv[2:5])
llm = load_upstream("smollm2", dtype="float32", device="cpu")
words = " ".join(f"word{i}" for i in range(length * 10))
ids = llm.tokenizer(words, add_special_tokens=False)["input_ids"]
prompts = [f"{i}: " + llm.tokenizer.decode(ids[:length]) for i in range(n)]
answers = ["Here is a short answer of about forty-eight tokens, written to be scored by the upstream "
           "model: it says what it means, and then it says a little more about it, and then it ends."] * n

@torch.no_grad()
def full(prompts, answers):
    out = []
    for start in range(0, len(prompts), batch):
        encoded = [_answer_ids(llm, p, r) for p, r in zip(prompts[start:start + batch], answers[start:start + batch])]
        ids, mask = _left_padded([p + r for p, r in encoded], _pad_id(llm))
        logits = llm.model(input_ids=ids, attention_mask=mask).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
        out += [logp[row, ids.shape[1] - 1 - len(a):] for row, (_, a) in enumerate(encoded)]
    return out

score = full if method == "full" else (lambda p, a: answer_token_log_probs(llm, p, a, batch_size=batch))
score(prompts[:1], answers[:1])  # warm-up
loaded_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
scores = score(prompts, answers)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "loaded_rss_gib": loaded_kib / 2**20, "prompt_tokens": len(llm.encode_prompt(prompts[0])),
                  "mean_log_p": float(torch.cat(scores).mean())}))
"""


def run(method: str, batch: int, length: int, prompts: int) -> dict:
    out = subprocess.run([sys.executable, "-c", RUNNER, method, str(batch), str(length), str(prompts)],
                         cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if out.returncode != 0:
        raise RuntimeError(f"{method} batch {batch} length {length}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="100,250,500,1000", help="prompt lengths in tokens")
    parser.add_argument("--prompts", type=int, default=16, help="answers scored per configuration")
    parser.add_argument("--batches", default="8,32", help="batch sizes of the answers-only pass")
    parser.add_argument("--full-batch", type=int, default=8,
                        help="batch size of the full-vocabulary contrast (0: skip it; its memory grows as "
                             "batch x prompt length x 49,152 floats)")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "bench_fluency.json"))
    args = parser.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    configs = [("answers", int(b)) for b in args.batches.split(",")]
    configs += [("full", args.full_batch)] if args.full_batch else []
    rows = []
    for length in lengths:
        for method, batch in configs:
            r = {"method": method, "batch": batch, "length": length, **run(method, batch, length, args.prompts)}
            rows.append(r)
            print(json.dumps(r), flush=True)
    print("\n| prompt tokens | method | batch | seconds | peak RSS (GiB) | RSS after load (GiB) | time / full |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        full = next((f for f in rows if f["method"] == "full" and f["length"] == r["length"]), None)
        ratio = f"{r['seconds'] / full['seconds']:.2f}" if full else "-"
        print(f"| {r['prompt_tokens']} | {r['method']} | {r['batch']} | {r['seconds']:.1f} | {r['peak_rss_gib']:.2f} | "
              f"{r['loaded_rss_gib']:.2f} | {ratio} |")
    for r in rows:
        full = next((f for f in rows if f["method"] == "full" and f["length"] == r["length"]), None)
        r["time / full"] = round(r["seconds"] / full["seconds"], 2) if full else None
    write_result("bench_fluency", rows, ratios=["time / full"], path=args.json,
                 notes=f"{args.prompts} answers of 48 tokens per configuration; answers: only the positions that "
                       "predict answer tokens through the output head (envs.generation.answer_token_log_probs); "
                       "full: every position's full-vocabulary float32 log-softmax")
    print("wrote", args.json)


if __name__ == "__main__":
    main()
