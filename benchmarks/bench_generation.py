"""Aligned generation speed against plain transformers decoding, measured in one run.

    python benchmarks/bench_generation.py [--prompts 20] [--max-new-tokens 64] [--batch-size 10]

On the embedded SmolLM2-135M-Instruct (CPU, float32), the same prompts and token budget:
- tokens/s of plain transformers greedy ``generate`` (the baseline, ratio 1.0);
- tokens/s of MARA aligned greedy generation in lazy and eager modes, with two agents:
  one that accepts the first candidate (the engine's cost floor: the same tokens as the
  baseline) and an untrained, randomly initialised agent (many rejections);
- LLM-forward tokens per generated token for each mode (1.0 = plain decoding).
"""

from __future__ import annotations

import argparse
import time

import torch

from envs.mdp import SamplingConfig
from envs.upstream import load_upstream
from mara.generation import AlignedGenerator
from mara.networks import Actor

PROMPTS = [
    "How can I bake bread?", "What is the capital of France?", "Explain photosynthesis simply.",
    "Write a haiku about the sea.", "How do I learn Python quickly?", "What causes rain?",
    "Give me three tips for better sleep.", "What is a black hole?", "How do vaccines work?",
    "Suggest a name for a pet turtle.", "Why do cats purr?", "How can I save money on groceries?",
    "What is machine learning?", "Describe the water cycle.", "How do I make a paper airplane?",
    "What is the tallest mountain on Earth?", "Tell me a fun fact about octopuses.",
    "How do I write a good resume?", "What are prime numbers?", "How does a rainbow form?",
]


def first_candidate_actor(d: int) -> Actor:
    actor = Actor(state_dim=d)
    with torch.no_grad():
        actor.output_linear.weight.zero_()
        actor.output_linear.bias.copy_(torch.tensor([-10.0, 10.0]))
    return actor


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=10)
    args = parser.parse_args()
    prompts = (PROMPTS * 10)[: args.prompts]
    llm = load_upstream("smollm2", device="cpu")
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens)
    torch.manual_seed(0)
    agents = {"first-candidate agent": first_candidate_actor(llm.hidden_size),
              "untrained agent": Actor(state_dim=llm.hidden_size)}

    base = AlignedGenerator(llm, agents["first-candidate agent"], sampling=sampling, batch_size=args.batch_size)
    base.generate_upstream(prompts[:2])  # warm-up
    texts, seconds = timed(lambda: base.generate_upstream(prompts))
    base_tokens = sum(len(llm.tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts)
    base_rate = base_tokens / seconds
    print(f"{'transformers greedy generate':44s} {base_rate:8.1f} tok/s  ratio 1.00  forward tokens/token 1.00")
    for agent_name, actor in agents.items():
        for mode in ("lazy", "eager"):
            gen = AlignedGenerator(llm, actor, sampling=sampling, mode=mode, batch_size=args.batch_size)
            answers, seconds = timed(lambda: gen.generate(prompts))
            tokens = sum(a.num_tokens for a in answers)
            forwards = sum(a.forward_tokens for a in answers)
            rate = tokens / seconds
            print(f"{'MARA ' + mode + ', ' + agent_name:44s} {rate:8.1f} tok/s  ratio {rate / base_rate:4.2f}"
                  f"  forward tokens/token {forwards / tokens:5.2f}")


if __name__ == "__main__":
    main()
