"""Aligned generation speed against plain transformers decoding, measured in one run.

    python benchmarks/bench_generation.py [--prompts 20] [--max-new-tokens 64] [--batch-size 10]
                                          [--repeats 3] [--threads 1]

On the embedded SmolLM2-135M-Instruct (CPU, float32), the same prompts and token budget:
- tokens/s of plain transformers greedy ``generate`` (the baseline, ratio 1.0), through
  ``AlignedGenerator.generate_upstream``; its tokens are counted exactly, up to and
  including each answer's EOS;
- tokens/s of MARA aligned greedy generation in lazy and eager modes, with two agents:
  one that accepts the first candidate (the engine's cost floor: the same tokens as the
  baseline) and an untrained, randomly initialised agent (many rejections);
- LLM-forward tokens per generated token for each mode (1.0 = plain decoding).

The configurations are measured in turns, ``--repeats`` times, and each ratio is taken
between the summed times of the same rounds, so that a change of load on a shared
machine hits the baseline and MARA alike. Issue 3's target: lazy ratio >= 0.8.
"""

from __future__ import annotations

import argparse
import os
import time

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
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    # 1 by default: on a shared 2-core machine a second OpenMP thread spin-waits for a
    # busy core; pass --threads 2 on an idle machine.
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average at start: {os.getloadavg()}; torch {torch.__version__}, {args.threads} thread(s), "
          f"{args.prompts} prompts, {args.max_new_tokens} new tokens, batch {args.batch_size}")
    prompts = (PROMPTS * 10)[: args.prompts]
    llm = load_upstream("smollm2", device="cpu")
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens)
    torch.manual_seed(0)
    agents = {"first-candidate agent": first_candidate_actor(llm.hidden_size),
              "untrained agent": Actor(state_dim=llm.hidden_size)}
    baseline_tokens = count_generated_tokens(llm)
    generators = {BASELINE: AlignedGenerator(llm, agents["first-candidate agent"], sampling=sampling,
                                             batch_size=args.batch_size)}
    for agent_name, actor in agents.items():
        for mode in ("lazy", "eager"):
            generators[f"MARA {mode}, {agent_name}"] = AlignedGenerator(
                llm, actor, sampling=sampling, mode=mode, batch_size=args.batch_size)

    generators[BASELINE].generate_upstream(prompts[:2])  # warm-up
    seconds = {name: 0.0 for name in generators}
    tokens = {name: 0 for name in generators}
    forwards = {name: 0 for name in generators}
    for _ in range(args.repeats):
        for name, gen in generators.items():
            start = time.perf_counter()
            if name == BASELINE:
                baseline_tokens.clear()
                gen.generate_upstream(prompts)
                seconds[name] += time.perf_counter() - start
                tokens[name] += sum(baseline_tokens)
                forwards[name] += sum(baseline_tokens)  # one forward token per generated token
            else:
                answers = gen.generate(prompts)
                seconds[name] += time.perf_counter() - start
                tokens[name] += sum(a.num_tokens for a in answers)
                forwards[name] += sum(a.forward_tokens for a in answers)

    base_rate = tokens[BASELINE] / seconds[BASELINE]
    print(f"\n{'configuration':44s} {'tok/s':>8} {'ratio':>6} {'fwd tok/tok':>11} {'tokens':>7}")
    for name in generators:
        rate = tokens[name] / seconds[name]
        print(f"{name:44s} {rate:8.1f} {rate / base_rate:6.2f} {forwards[name] / tokens[name]:11.2f} "
              f"{tokens[name] // args.repeats:7d}")
    print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
