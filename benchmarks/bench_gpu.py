"""The GPU paths in one table, for ``scripts/gpu_check.sh`` (one NVIDIA GPU, a few minutes).

    python benchmarks/bench_gpu.py [--seconds 10] [--run-seconds 120] [--skip vllm,run]

On the embedded SmolLM2-135M-Instruct on ``cuda``:
1. aligned generation against plain decoding: tokens/s of transformers' greedy ``generate``
   (ratio 1.0) and of MARA in lazy and hybrid mode with an agent that accepts the first
   candidate (the decoder's cost floor) and one that accepts with probability 0.5;
2. the learner's updates/s and its share of time in updates, the replay in its process and a
   copy of it on the GPU (``replay.in_learner``, ``replay.on_learner_device``);
3. a ``launch.py`` run of ``--run-seconds`` on the GPU with 2 rollout workers (a quarter GPU
   each), the learner and a reward actor: transitions/s and updates from its summary.json;
4. the vLLM backend's rollout states against transformers' (the smallest cosine similarity
   over the prompts' greedy continuations).
Ratios in rows 1 are measured in one run, in turns; the rest are absolute figures of this
machine. Writes ``benchmarks/results/bench_gpu.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from record import write_result  # noqa: E402
PROMPTS = ["How can I bake bread?", "Tell me a joke.", "Why is the sky blue?", "Name three rivers.",
           "How do vaccines work?", "Write a haiku about rain.", "What is Ray?", "Explain entropy simply."] * 4


def generation(rows: list) -> None:
    from bench_generation import coin_actor, count_generated_tokens, first_candidate_actor

    from core.config import SamplingConfig
    from envs.generation import AlignedGenerator
    from envs.upstream import load_upstream

    llm = load_upstream("smollm2", device="cuda")
    counts = count_generated_tokens(llm)
    sampling = SamplingConfig(max_new_tokens=64)
    configs = {"plain greedy decoding": None}
    for mode in ("lazy", "hybrid"):
        configs[f"MARA {mode}, first candidate"] = AlignedGenerator(llm, first_candidate_actor(llm.hidden_size),
                                                                     sampling=sampling, mode=mode, batch_size=32)
        configs[f"MARA {mode}, p = 0.5"] = AlignedGenerator(llm, coin_actor(llm.hidden_size), sampling=sampling,
                                                             mode=mode, greedy=False, batch_size=32)
    baseline = AlignedGenerator(llm, first_candidate_actor(llm.hidden_size), sampling=sampling, batch_size=32)
    rates = {}
    for name, gen in configs.items():
        (gen or baseline).generate(PROMPTS[:2])  # warm-up: kernels, allocator
        torch.cuda.synchronize()
        start = time.perf_counter()
        if gen is None:
            counts.clear()
            baseline.generate_upstream(PROMPTS)
            tokens = sum(counts)
        else:
            tokens = sum(g.num_tokens for g in gen.generate(PROMPTS))
        torch.cuda.synchronize()
        rates[name] = tokens / (time.perf_counter() - start)
    for name, rate in rates.items():
        rows.append(("generation", name, f"{rate:.0f} tokens/s", f"{rate / rates['plain greedy decoding']:.2f}x"))


def learner(rows: list, seconds: float) -> None:
    import ray
    from bench_learner import local_path

    from core.config import SACConfig

    ray.init(num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        for on_device in (False, True):
            r = local_path(576, "cuda", SACConfig(), seconds, threads=1, transitions=200_000, on_device=on_device)
            where = "on the GPU" if on_device else "in host memory"
            rows.append(("learner", f"replay in its process, {where}", f"{r['updates_per_s']:.1f} updates/s",
                         f"{r['update_share']:.0%} busy"))
    finally:
        ray.shutdown()


def training_run(rows: list, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        name = "gpu-check"
        command = [sys.executable, "launch.py", "--set", f"output_dir={tmp}", "--set", f"run_name={name}",
                   "--set", "rollout.num_workers=2", "--set", "rollout.num_gpus=0.25", "--set", "learner.device=cuda",
                   "--set", "budget.episodes=0", "--set", f"budget.seconds={seconds}"]
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 240)
        if proc.returncode != 0:
            rows.append(("launch.py", "2 rollout workers, 2 minutes", "FAILED", proc.stderr.strip()[-300:]))
            return
        summary = json.loads((Path(tmp) / name / "summary.json").read_text())
    rows.append(("launch.py", f"2 rollout workers, {seconds:.0f} s",
                 f"{summary.get('transitions_per_second', 0):.1f} transitions/s",
                 f"{summary.get('learner_updates', '?')} updates, learner busy {summary.get('learner_update_share') or 0:.0%}"))


def vllm_states(rows: list) -> None:
    from core.config import VllmEngineConfig
    from envs.upstream import load_upstream
    from envs.vllm_backend import VllmUpstream

    hf = load_upstream("smollm2", device="cuda")
    vllm = VllmUpstream("smollm2", VllmEngineConfig(gpu_memory_utilization=0.3), device="cuda")
    try:
        worst = 1.0
        for prompt in PROMPTS[:8]:
            ids = hf.encode_prompt(prompt)
            out = hf.model.generate(torch.tensor([ids], device="cuda"), max_new_tokens=8, do_sample=False,
                                    temperature=None, top_k=None, top_p=None)[0, len(ids):].tolist()
            sequence = ids + out
            reference = hf.full_forward_hidden(sequence)[len(ids) - 1:].float().cpu()
            states = vllm.last_hidden_states([sequence[:t] for t in range(len(ids), len(sequence) + 1)]).float().cpu()
            worst = min(worst, float(torch.nn.functional.cosine_similarity(states, reference, dim=-1).min()))
        rows.append(("vLLM backend", "rollout states against transformers", f"cosine >= {worst:.5f}",
                     "ok" if worst >= 0.999 else "DIFFERENT"))
    finally:
        vllm.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="per learner measurement")
    parser.add_argument("--run-seconds", type=float, default=120.0, help="the launch.py run's budget")
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out: generation,learner,run,vllm")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "bench_gpu.json"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_gpu: torch sees no CUDA device; this benchmark measures the GPU paths "
                 "(on a GPU machine: TORCH_SPEC=torch bash scripts/install.sh)")
    skip, rows = set(args.skip.split(",")), []
    parts = {"generation": lambda: generation(rows), "learner": lambda: learner(rows, args.seconds),
             "run": lambda: training_run(rows, args.run_seconds), "vllm": lambda: vllm_states(rows)}
    for name, part in parts.items():
        if name in skip:
            continue
        try:
            part()
        except Exception as err:  # one failing part must not hide the others' figures
            rows.append((name, "FAILED", type(err).__name__, str(err)[:200]))
        print(f"{name}: done", flush=True)
    print(f"\n{torch.cuda.get_device_name(0)}, torch {torch.__version__}\n")
    print("| part | what | figure | note |\n| --- | --- | ---: | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    write_result("bench_gpu", [dict(zip(("part", "what", "figure", "note"), r)) for r in rows],
                 ratios=["note (generation rows)"], path=args.json,
                 notes="generation: tokens/s and its ratio to plain greedy decoding, measured in one run")

if __name__ == "__main__":
    main()
