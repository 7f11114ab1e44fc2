"""The vLLM backend against the transformers backend: rollout and aligned generation.

    python benchmarks/bench_vllm.py [--episodes 8] [--max-new-tokens 32] [--mode lazy]
                                    [--enforce-eager] [--block-size 32]

On the embedded SmolLM2-135M-Instruct (CPU, float32), the same prompts, the same
untrained agent (fixed seed) and the same token budget, at 1 and at 8 concurrent
episodes (``--episodes`` episodes in all, in groups of that size):

- rollout transitions/s: sampled agent decisions, as the rollout workers run them;
- aligned-generation tokens/s: greedy agent decisions, as ``mara eval`` runs them;
- upstream baseline tokens/s: plain greedy generation (HF ``generate`` vs vLLM ``generate``);

each printed with the vLLM / transformers ratio, plus the pooling engine's computed
tokens per request (prefix caching makes it much smaller than the sequence length).
vLLM engines start once, outside the timings.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from envs.mdp import SamplingConfig
from envs.upstream import load_upstream
from envs.vllm_backend import EngineStats, VllmEngineConfig, VllmUpstream, run_episodes
from mara.generation import AlignedGenerator
from mara.networks import Actor

PROMPTS = [
    "How can I bake bread?", "What is the capital of France?", "Explain photosynthesis simply.",
    "Write a haiku about the sea.", "How do I learn Python quickly?", "What causes rain?",
    "Give me three tips for better sleep.", "What is a black hole?", "How do vaccines work?",
    "Suggest a name for a pet turtle.", "Why do cats purr?", "How can I save money on groceries?",
    "What is machine learning?", "Describe the water cycle.", "How do I make a paper airplane?",
    "What is the tallest mountain on Earth?",
]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def groups(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=8, help="episodes per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--mode", choices=["lazy", "eager"], default="lazy")
    parser.add_argument("--enforce-eager", action="store_true", help="vLLM without torch.compile")
    parser.add_argument("--block-size", type=int, default=None, help="default: 32 on CPU")
    args = parser.parse_args()

    prompts = (PROMPTS * 10)[: args.episodes]
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens)
    hf = load_upstream("smollm2", device="cpu")
    started = time.perf_counter()
    vl = VllmUpstream("smollm2", VllmEngineConfig(enforce_eager=args.enforce_eager, block_size=args.block_size,
                                                  max_model_len=1024), device="cpu")
    vl.last_hidden_states([vl.encode_prompt(prompts[0])])  # starts the pooling engine
    vl.generate_upstream(prompts[:1], SamplingConfig(max_new_tokens=2))  # starts the generation engine
    print(f"vLLM engines started in {time.perf_counter() - started:.0f} s "
          f"(enforce_eager={args.enforce_eager}, block_size={args.block_size})")
    torch.manual_seed(0)
    actor = Actor(state_dim=hf.hidden_size)  # untrained: many rejections, like early training

    rows = []
    for c in args.concurrency:
        batches = groups(prompts, c)
        # rollout: sampled decisions
        gen = AlignedGenerator(hf, actor, sampling=sampling, mode=args.mode, greedy=False, batch_size=c)
        gen.rng = np.random.default_rng(0)
        gen.run_episodes(batches[0][:1])  # warm-up
        res, t_hf = timed(lambda: [r for b in batches for r in gen.run_episodes(b)])
        n_hf = sum(r.num_decisions for r in res)
        vl.stats = EngineStats()
        rng = np.random.default_rng(0)
        res, t_vl = timed(lambda: [r for b in batches
                                   for r in run_episodes(vl, actor, b, sampling, mode=args.mode, greedy=False, rng=rng)])
        n_vl = sum(r.num_decisions for r in res)
        per_request = vl.stats.computed_tokens / max(1, vl.stats.requests)
        rows.append((f"rollout transitions/s, {c} concurrent", n_hf / t_hf, n_vl / t_vl,
                     f"vLLM computed tokens/request {per_request:.1f}"))
        # aligned generation: greedy decisions
        gen = AlignedGenerator(hf, actor, sampling=sampling, mode=args.mode, greedy=True, batch_size=c)
        res, t_hf = timed(lambda: [r for b in batches for r in gen.run_episodes(b)])
        k_hf = sum(len(r.response_ids) for r in res)
        res, t_vl = timed(lambda: [r for b in batches
                                   for r in run_episodes(vl, actor, b, sampling, mode=args.mode, greedy=True)])
        k_vl = sum(len(r.response_ids) for r in res)
        rows.append((f"aligned generation tokens/s, {c} concurrent", k_hf / t_hf, k_vl / t_vl, ""))
        # upstream greedy baseline
        gen = AlignedGenerator(hf, actor, sampling=sampling, batch_size=c)
        texts, t_hf = timed(lambda: [t for b in batches for t in gen.generate_upstream(b)])
        k_hf = sum(len(hf.tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts)
        ids, t_vl = timed(lambda: [r for b in batches
                                   for r in vl.generate_ids([vl.encode_prompt(p) for p in b], sampling)])
        k_vl = sum(len(r) for r in ids)
        rows.append((f"upstream greedy tokens/s, {c} concurrent", k_hf / t_hf, k_vl / t_vl, ""))

        for name, a, b, note in rows[-3:]:  # progress: this concurrency's rows
            print(f"{name:44s} {a:8.1f} {b:8.1f} {b / a:6.2f}  {note}", flush=True)

    print(f"\nSmolLM2-135M, CPU, float32, {args.episodes} episodes, max {args.max_new_tokens} new tokens, "
          f"{args.mode} mode, torch threads {torch.get_num_threads()}")
    print(f"{'':44s} {'transformers':>12s} {'vLLM':>10s} {'ratio':>6s}")
    for name, a, b, note in rows:
        print(f"{name:44s} {a:12.1f} {b:10.1f} {b / a:6.2f}  {note}")
    vl.close()


if __name__ == "__main__":
    main()
