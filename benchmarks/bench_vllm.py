"""The vLLM backend against the transformers backend: rollout and aligned generation.

    python benchmarks/bench_vllm.py [--episodes 8] [--concurrency 1 8] [--max-new-tokens 32]
                                    [--mode lazy] [--enforce-eager] [--block-size 32]
                                    [--gpu-memory-utilization 0.2] [--threads 1]

On the embedded SmolLM2-135M-Instruct (CPU, float32), the same prompts, the same
untrained agent (fixed seed) and the same token budget, at each concurrency (``--episodes``
episodes in all, in groups of that size), both backends through ``AlignedGenerator``:

- rollout transitions/s: sampled agent decisions, as the rollout workers run them;
- aligned-generation tokens/s: greedy agent decisions, as ``mara eval`` runs them;
- upstream baseline tokens/s: plain greedy generation (HF ``generate`` vs vLLM ``generate``);

each printed with the vLLM / transformers ratio, plus the pooling engine's computed
tokens per request (prefix caching makes it much smaller than the sequence length).
vLLM engines start once, outside the timings. vLLM's CPU worker runs on one core (it
keeps the other for its front-end process); ``--threads`` sets transformers' intra-op
threads (1 by default: a second OpenMP thread spin-waits when another job holds a core).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from bench_generation import PROMPTS

from core.config import SamplingConfig, VllmEngineConfig
from core.networks import Actor
from envs.generation import AlignedGenerator, load_llm
from envs.vllm_backend import EngineStats

BACKENDS = ("transformers", "vllm")


def timed(fn):
    start = time.perf_counter()
    return fn(), time.perf_counter() - start


def groups(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def measure(llm, backend: str, actor: Actor, batches: list[list[str]], sampling: SamplingConfig,
            mode: str) -> dict[str, float]:
    """Rollout transitions/s, aligned-generation tokens/s and upstream greedy tokens/s of
    one backend, one group of concurrent episodes after the other."""
    size = max(len(b) for b in batches)
    rollout = AlignedGenerator(llm, actor, sampling=sampling, mode=mode, greedy=False, batch_size=size,
                               backend=backend)
    rollout.rng = np.random.default_rng(0)
    results, seconds = timed(lambda: [r for b in batches for r in rollout.run_episodes(b)])
    out = {"rollout transitions/s": sum(r.num_decisions for r in results) / seconds}
    aligned = AlignedGenerator(llm, actor, sampling=sampling, mode=mode, greedy=True, batch_size=size,
                               backend=backend)
    answers, seconds = timed(lambda: [a for b in batches for a in aligned.generate(b)])
    out["aligned generation tokens/s"] = sum(a.num_tokens for a in answers) / seconds
    texts, seconds = timed(lambda: [t for b in batches for t in aligned.generate_upstream(b)])
    tokens = sum(len(llm.tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts)  # + EOS
    out["upstream greedy tokens/s"] = tokens / seconds
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=8, help="episodes per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--mode", choices=["lazy", "eager"], default="lazy")
    parser.add_argument("--enforce-eager", action="store_true", help="vLLM without torch.compile")
    parser.add_argument("--block-size", type=int, default=None, help="default: 32 on CPU")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.2,
                        help="per vLLM engine (CPU: share of RAM for its process and KV cache)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads of the transformers backend")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    prompts = (PROMPTS * 10)[: args.episodes]
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens)
    engine = VllmEngineConfig(enforce_eager=args.enforce_eager, block_size=args.block_size, max_model_len=1024,
                              gpu_memory_utilization=args.gpu_memory_utilization)
    llms = {"transformers": load_llm("smollm2", device="cpu"),
            "vllm": load_llm("smollm2", backend="vllm", device="cpu", vllm=engine)}
    vl = llms["vllm"]
    started = time.perf_counter()
    vl.last_hidden_states([vl.encode_prompt(prompts[0])])  # starts the pooling engine
    vl.generate_upstream(prompts[:1], SamplingConfig(max_new_tokens=2))  # starts the generation engine
    print(f"vLLM engines started in {time.perf_counter() - started:.0f} s "
          f"(enforce_eager={args.enforce_eager}, block_size={args.block_size})", flush=True)
    torch.manual_seed(0)
    actor = Actor(state_dim=vl.hidden_size)  # untrained: many rejections, like early training
    AlignedGenerator(llms["transformers"], actor, sampling=sampling).run_episodes(prompts[:1])  # warm-up

    rows = []
    for c in args.concurrency:
        batches = groups(prompts, c)
        vl.stats = EngineStats()
        rates = {b: measure(llms[b], b, actor, batches, sampling, args.mode) for b in BACKENDS}
        per_request = vl.stats.computed_tokens / max(1, vl.stats.requests)
        for name in rates["vllm"]:
            note = f"vLLM pooling requests computed {per_request:.1f} tokens each" if name.startswith("rollout") else ""
            rows.append(row(f"{name}, {c} concurrent", rates["transformers"][name], rates["vllm"][name], note))
            print(rows[-1], flush=True)  # progress

    print(f"\nSmolLM2-135M, CPU, float32, {args.episodes} episodes, max {args.max_new_tokens} new tokens, "
          f"{args.mode} mode, torch threads {torch.get_num_threads()}")
    print(f"{'':44s} {'transformers':>12s} {'vLLM':>10s} {'ratio':>6s}")
    print("\n".join(rows))
    vl.close()


def row(name: str, transformers: float, vllm: float, note: str) -> str:
    return f"{name:44s} {transformers:12.1f} {vllm:10.1f} {vllm / transformers:6.2f}  {note}"


if __name__ == "__main__":
    main()
