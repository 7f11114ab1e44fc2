"""A rollout worker's transitions/s now against the code of an earlier commit, measured in one run.

    python benchmarks/bench_worker.py [--baseline 36c6d69] [--calls 2] [--episodes-per-call 32]
                                      [--max-new-tokens 20] [--repeats 2] [--modes lazy,hybrid]
                                      [--dtypes float32,bfloat16] [--refill]

The default baseline is commit 36c6d69, the worker before its speed-ups (target: >= 1.5x its
transitions/s). What a worker does per call is ``AlignedGenerator.run_episodes`` on
``episodes_per_call`` prompts with a stochastic agent (``actors/rollout_worker.py``); here the
agent accepts each candidate with probability 0.5 (a training-time agent; decisions sampled),
on the embedded SmolLM2-135M-Instruct, CPU, one torch thread, the training defaults'
candidate set (temperature 0.8, top-k 40, top-p 0.95). The baseline runs as the worker then did
(lazy, float32); today's worker in each of ``--modes`` x ``--dtypes`` (the upstream's dtype:
``model.dtype: auto`` is bfloat16 on a CPU with AVX-512 BF16), and with ``--refill`` also with
continuous batching (half the call's episodes in the KV cache at once, refilled as they end).

The baseline's code is checked out with ``git worktree`` into a temporary folder and each
configuration runs in a subprocess of its own that imports the project from its tree, so
the two versions never share a module. Configurations are measured in turns, ``--repeats``
times; ratios are taken between summed times of the same rounds, so a change of load on a
shared machine hits both alike. Each subprocess loads the model and warms up before the timed
calls; only the calls are timed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Run inside a subprocess whose working directory is the tree to measure. argv: mode, dtype,
# calls, episodes per call, max new tokens, batch rows (0: all episodes of a call at once).
RUNNER = r"""
import json, sys, time
import numpy as np, torch
import os
sys.path.insert(0, os.getcwd())
import core
assert core.__file__.startswith(os.getcwd()), f"imported {core.__file__}, not the tree in {os.getcwd()}"
from core.config import SamplingConfig
from core.networks import Actor
from envs.generation import AlignedGenerator
from envs.upstream import load_upstream
mode, dtype, calls, per_call, max_new, rows = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
torch.set_num_threads(1)
torch.manual_seed(0)
llm = load_upstream("smollm2", dtype=dtype, device="cpu")
actor = Actor(state_dim=llm.hidden_size)
with torch.no_grad():  # pi(accept | s) = 0.5 everywhere
    actor.output_linear.weight.zero_()
    actor.output_linear.bias.zero_()
gen = AlignedGenerator(llm, actor, sampling=SamplingConfig(max_new_tokens=max_new), mode=mode, greedy=False)
prompts = json.loads(sys.stdin.read())
def call(batch):
    return gen.run_episodes(batch, max_rows=rows) if rows else gen.run_episodes(batch)
call(prompts[:2])  # warm-up
gen.rng = np.random.default_rng(0)
transitions, tokens, start = 0, 0, time.perf_counter()
for c in range(calls):
    results = call(prompts[c * per_call:(c + 1) * per_call])
    transitions += sum(len(r.episode) for r in results)
    tokens += sum(len(r.response_ids) for r in results)
print(json.dumps({"seconds": time.perf_counter() - start, "transitions": transitions, "tokens": tokens}))
"""


def bench_prompts(n: int) -> list[str]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_generation import PROMPTS

    return (PROMPTS * (n // len(PROMPTS) + 1))[:n]


def run_config(tree: Path, mode: str, dtype: str, args, rows: int, prompts: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", RUNNER, mode, dtype, str(args.calls), str(args.episodes_per_call), str(args.max_new_tokens),
         str(rows)],
        cwd=tree, input=json.dumps(prompts), capture_output=True, text=True, check=False,
        env={**os.environ, "PYTHONPATH": str(tree)},
    )
    if out.returncode != 0:
        raise RuntimeError(f"{tree} {mode}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="36c6d69", help="commit of the code to compare with")
    parser.add_argument("--calls", type=int, default=2)
    parser.add_argument("--episodes-per-call", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--modes", default="lazy,hybrid", help="decoding modes of today's worker to measure")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="upstream dtypes of today's worker to measure")
    parser.add_argument("--refill", action="store_true", help="also measure today's worker with continuous batching")
    args = parser.parse_args()
    prompts = bench_prompts(args.calls * args.episodes_per_call)
    print(f"load average at start: {os.getloadavg()}; {args.calls} calls of {args.episodes_per_call} episodes, "
          f"{args.max_new_tokens} new tokens, p=0.5 agent, 1 thread")
    with tempfile.TemporaryDirectory() as tmp:
        baseline = Path(tmp) / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(baseline), args.baseline],
                       check=True, capture_output=True)
        try:
            configs = {f"{args.baseline}, lazy, float32 (the worker then)": (baseline, "lazy", "float32", 0)}
            for dtype in args.dtypes.split(","):
                for mode in args.modes.split(","):
                    configs[f"now, {mode}, {dtype}"] = (ROOT, mode, dtype, 0)
                    if args.refill:
                        configs[f"now, {mode}, {dtype}, {args.episodes_per_call // 2} rows refilled"] = (
                            ROOT, mode, dtype, args.episodes_per_call // 2)
            totals = {name: {"seconds": 0.0, "transitions": 0, "tokens": 0} for name in configs}
            for _ in range(args.repeats):
                for name, (tree, mode, dtype, rows) in configs.items():
                    for key, value in run_config(tree, mode, dtype, args, rows, prompts).items():
                        totals[name][key] += value
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline)],
                           check=False, capture_output=True)
    base = None
    print(f"\n{'worker':56s} {'trans/s':>8} {'ratio':>6} {'tok/s':>7}")
    for name, t in totals.items():
        rate = t["transitions"] / t["seconds"]
        base = base or rate
        print(f"{name:56s} {rate:8.1f} {rate / base:6.2f} {t['tokens'] / t['seconds']:7.1f}")
    print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
