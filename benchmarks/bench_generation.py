"""Aligned generation speed against plain transformers decoding, measured in one run.

    python benchmarks/bench_generation.py [--prompts 20] [--max-new-tokens 64] [--batch-sizes 10,32]
                                          [--repeats 3] [--threads 1] [--agents first,coin,untrained]
                                          [--dtype float32|bfloat16]

On the embedded SmolLM2-135M-Instruct (CPU, ``--dtype``: float32 by default), the same prompts and
token budget:
- tokens/s of plain transformers greedy ``generate`` (the baseline, ratio 1.0), through
  ``AlignedGenerator.generate_upstream``; its tokens are counted exactly, up to and
  including each answer's EOS;
- tokens/s and decisions (transitions)/s of MARA generation in hybrid, lazy and eager modes,
  with three agents: one that accepts the first candidate (the engine's cost floor: the
  same tokens as the baseline), one that accepts each candidate with probability 0.5, its
  decisions sampled (a training-time agent), and an untrained, randomly initialised agent;
- LLM-forward tokens and sequential forward steps per generated token (1.0 = plain decoding);
- all of it at each batch size of ``--batch-sizes``;
- the same p=0.5 agent in hybrid and eager modes with every row of a step in one forward,
  padded to the widest (before ``AcceptRejectDecoder`` grouped rows by width on a CPU);
- a rollout worker's transitions/s with and without continuous batching: the p=0.5 agent
  on ``2 x rows`` prompts, decoded as two calls of ``rows`` episodes each (the batch shrinks
  as answers end) against one call whose ``rows`` rows are refilled as answers end
  (``rollout.batch_rows``), in lazy mode (the workers' default) and hybrid mode.

The configurations are measured in turns, ``--repeats`` times, and each ratio is taken
between the summed times of the same rounds, so that a change of load on a shared
machine hits the baseline and MARA alike. Target: lazy ratio >= 0.8.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from core.config import SamplingConfig
from core.networks import Actor
from envs.generation import AlignedGenerator
from envs.upstream import load_upstream

PROMPTS = [
    "How can I bake bread?", "What is the capital of France?", "Explain photosynthesis simply.",
    "Write a haiku about the sea.", "How do I learn Python quickly?", "What causes rain?",
    "Give me three tips for better sleep.", "What is a black hole?", "How do vaccines work?",
    "Suggest a name for a pet turtle.", "Why do cats purr?", "How can I save money on groceries?",
    "What is machine learning?", "Describe the water cycle.", "How do I make a paper airplane?",
    "What is the tallest mountain on Earth?", "Tell me a fun fact about octopuses.",
    "How do I write a good resume?", "What are prime numbers?", "How does a rainbow form?",
]
BASELINE = "transformers greedy generate"


def first_candidate_actor(d: int) -> Actor:
    actor = Actor(state_dim=d)
    with torch.no_grad():
        actor.output_linear.weight.zero_()
        actor.output_linear.bias.copy_(torch.tensor([-10.0, 10.0]))
    return actor


def coin_actor(d: int) -> Actor:
    """pi(accept | s) = 0.5 for every state: with sampled decisions, a training-time agent."""
    actor = Actor(state_dim=d)
    with torch.no_grad():
        actor.output_linear.weight.zero_()
        actor.output_linear.bias.zero_()
    return actor


def count_generated_tokens(llm) -> list[int]:
    """Wrap ``llm.model.generate`` so that every call adds, per answer, the number of new
    tokens up to and including the first EOS (what a user gets; padding is not counted)."""
    counts: list[int] = []
    generate = llm.model.generate

    def counting_generate(*args, input_ids, **kwargs):
        out = generate(*args, input_ids=input_ids, **kwargs)
        for row in out[:, input_ids.shape[1]:].tolist():
            ends = [i for i, t in enumerate(row) if t in llm.eos_token_ids]
            counts.append(ends[0] + 1 if ends else len(row))
        return out

    llm.model.generate = counting_generate
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", default="10,32", help="comma-separated decoder batch sizes")
    parser.add_argument("--repeats", type=int, default=3)
    # 1 by default: on a shared 2-core machine a second OpenMP thread spin-waits for a
    # busy core; pass --threads 2 on an idle machine.
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--agents", default="first,coin,untrained",
                        help="comma-separated agents to measure: first (accepts the first candidate), coin "
                             "(p = 0.5, sampled), untrained")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                        help="the upstream's dtype, for the baseline and MARA alike (bfloat16: 3.6x the float32 "
                             "matmul throughput on a CPU with AVX-512 BF16)")
    parser.add_argument("--worker-only", action="store_true",
                        help="measure only the rollout worker with and without continuous batching")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    print(f"load average at start: {os.getloadavg()}; torch {torch.__version__}, {args.threads} thread(s), "
          f"{args.prompts} prompts, {args.max_new_tokens} new tokens, batch sizes {batch_sizes}, {args.dtype}")
    prompts = (PROMPTS * 10)[: args.prompts]
    llm = load_upstream("smollm2", dtype=args.dtype, device="cpu")
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens)
    torch.manual_seed(0)
    agents = {"first-candidate agent": (first_candidate_actor(llm.hidden_size), True),
              "p=0.5 agent (sampled)": (coin_actor(llm.hidden_size), False),
              "untrained agent": (Actor(state_dim=llm.hidden_size), True)}
    chosen = {"first": "first-candidate agent", "coin": "p=0.5 agent (sampled)", "untrained": "untrained agent"}
    agents = {chosen[a]: agents[chosen[a]] for a in args.agents.split(",")}
    baseline_tokens = count_generated_tokens(llm)
    for batch in [] if args.worker_only else batch_sizes:
        generators = {BASELINE: AlignedGenerator(llm, first_candidate_actor(llm.hidden_size), sampling=sampling,
                                                 batch_size=batch)}
        for agent_name, (actor, greedy) in agents.items():
            for mode in ("hybrid", "lazy", "eager"):
                generators[f"MARA {mode}, {agent_name}"] = AlignedGenerator(
                    llm, actor, sampling=sampling, mode=mode, greedy=greedy, batch_size=batch)
        coin = agents.get("p=0.5 agent (sampled)")
        for mode in ("hybrid", "eager") if coin else ():  # as before rows were grouped by width
            generators[f"MARA {mode}, p=0.5, one padded forward"] = AlignedGenerator(
                llm, coin[0], sampling=sampling, mode=mode, greedy=coin[1], batch_size=batch, ragged=False)
        measure(generators, prompts, baseline_tokens, args.repeats, batch)
    measure_continuous_batching(llm, coin_actor(llm.hidden_size), sampling, args.prompts, max(batch_sizes),
                                args.repeats)
    print(f"\nload average at end: {os.getloadavg()}")


def measure_continuous_batching(llm, actor: Actor, sampling: SamplingConfig, n_prompts: int, rows: int,
                                repeats: int) -> None:
    """Transitions/s of rollout calls without and with continuous batching, lazy and hybrid
    (see the docstring); ratios against lazy calls without."""
    prompts = (PROMPTS * 20)[: max(2 * rows, n_prompts)]
    calls = {}
    for mode in ("lazy", "hybrid"):
        gen = AlignedGenerator(llm, actor, sampling=sampling, mode=mode, greedy=False)
        calls[f"{mode}, calls of {rows}, batch shrinks"] = (gen, lambda gen=gen: [
            r for start in range(0, len(prompts), rows) for r in gen.run_episodes(prompts[start:start + rows])])
        calls[f"{mode}, one call, {rows} rows refilled"] = (gen, lambda gen=gen: gen.run_episodes(prompts, max_rows=rows))
    seconds = {name: 0.0 for name in calls}
    transitions = {name: 0 for name in calls}
    for _ in range(repeats):
        for name, (gen, call) in calls.items():
            gen.rng = np.random.default_rng(0)
            start = time.perf_counter()
            results = call()
            seconds[name] += time.perf_counter() - start
            transitions[name] += sum(r.num_decisions for r in results)
    print(f"\nrollout, {len(prompts)} prompts, p=0.5 agent")
    base = None
    for name in calls:
        rate = transitions[name] / seconds[name]
        base = base or rate
        print(f"{name:44s} {rate:8.1f} transitions/s  {rate / base:5.2f}x")


def measure(generators: dict, prompts: list[str], baseline_tokens: list[int], repeats: int, batch: int) -> None:
    """Run every configuration ``repeats`` times in turns and print the table."""
    generators[BASELINE].generate_upstream(prompts[:2])  # warm-up
    seconds = {name: 0.0 for name in generators}
    tokens = {name: 0 for name in generators}
    forwards = {name: 0 for name in generators}
    steps = {name: 0 for name in generators}
    decisions = {name: 0 for name in generators}
    for _ in range(repeats):
        for name, gen in generators.items():
            gen.rng = np.random.default_rng(0)  # the sampled agent makes the same draws each round
            start = time.perf_counter()
            if name == BASELINE:
                baseline_tokens.clear()
                gen.generate_upstream(prompts)
                seconds[name] += time.perf_counter() - start
                tokens[name] += sum(baseline_tokens)
                forwards[name] += sum(baseline_tokens)  # one forward token per generated token
                steps[name] += sum(baseline_tokens)
            else:
                answers = gen.generate(prompts)
                seconds[name] += time.perf_counter() - start
                tokens[name] += sum(a.num_tokens for a in answers)
                forwards[name] += sum(a.forward_tokens for a in answers)
                steps[name] += sum(a.forward_steps for a in answers)
                decisions[name] += sum(a.num_decisions for a in answers)

    base_rate = tokens[BASELINE] / seconds[BASELINE]
    print(f"\nbatch {batch}")
    print(f"{'configuration':44s} {'tok/s':>8} {'ratio':>6} {'trans/s':>8} {'fwd tok/tok':>11} {'steps/tok':>9}")
    for name in generators:
        rate = tokens[name] / seconds[name]
        print(f"{name:44s} {rate:8.1f} {rate / base_rate:6.2f} {decisions[name] / seconds[name]:8.1f} "
              f"{forwards[name] / tokens[name]:11.2f} {steps[name] / tokens[name]:9.2f}")


if __name__ == "__main__":
    main()
