"""Serving benchmark: `mara serve` under a bounded load, against in-process generation.

    python benchmarks/bench_serve.py [--clients 1,4,16] [--requests-per-client 2] [--max-tokens 64]

On the embedded SmolLM2-135M-Instruct with the shipped agent, one replica (1 CPU, one
torch thread) on a local Ray, loopback HTTP only. For each number of concurrent clients C,
each client sends ``--requests-per-client`` streaming chat requests one after another
(``max_tokens`` new tokens each, prompts of core/data/default_prompts.json), first all
to ``mara`` (aligned, greedy decisions), then all to ``upstream`` (the frozen model,
greedy). Measured: requests/s, answer tokens/s (``usage``), p50/p99 latency and time to
first token. The serving overhead compares ``mara`` at C clients with the in-process
``AlignedGenerator.generate`` of the same prompts at batch size C, in this process, with
one torch thread. Last, the same C=max load with ``--admission static`` (a batch admits
requests only when empty, as request-window batching does) against continuous batching.

Targets: aligned tokens/s at 16 clients >= 0.8x upstream's on the same server;
serving overhead <= 15%.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(round(q * (len(ordered) - 1))), len(ordered) - 1)]


def load(url: str, model: str, prompts: list[str], clients: int, per_client: int, max_tokens: int) -> dict:
    """C clients, each sending its requests one after another; streaming, so that the
    time to first token is seen by the client."""
    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
    records: list[dict] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)
    extra = {"temperature": 0} if model == "upstream" else {}

    def run_client(c: int) -> None:
        barrier.wait()
        for r in range(per_client):
            prompt = prompts[(c * per_client + r) % len(prompts)]
            start = time.perf_counter()
            first, tokens = None, 0
            stream = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, stream=True,
                stream_options={"include_usage": True}, **extra)
            for chunk in stream:
                if first is None and any(ch.delta.content for ch in chunk.choices):
                    first = time.perf_counter() - start
                if chunk.usage is not None:
                    tokens = chunk.usage.completion_tokens
            with lock:
                records.append({"latency": time.perf_counter() - start, "ttft": first or 0.0, "tokens": tokens})

    threads = [threading.Thread(target=run_client, args=(c,)) for c in range(clients)]
    wall = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - wall
    latencies, ttfts = [r["latency"] for r in records], [r["ttft"] for r in records]
    tokens = sum(r["tokens"] for r in records)
    return {"model": model, "clients": clients, "requests": len(records), "tokens": tokens, "wall_s": wall,
            "requests_per_s": len(records) / wall, "tokens_per_s": tokens / wall,
            "p50_latency_s": statistics.median(latencies), "p99_latency_s": percentile(latencies, 0.99),
            "p50_ttft_s": statistics.median(ttfts), "p99_ttft_s": percentile(ttfts, 0.99)}


def in_process(generator, prompts: list[str]) -> dict:
    start = time.perf_counter()
    answers = generator.generate(prompts)
    wall = time.perf_counter() - start
    tokens = sum(a.num_tokens for a in answers)
    return {"tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--json", help="write the figures here as JSON")
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]

    import ray
    import torch

    from core.prompts import load_prompts
    from envs.generation import AlignedGenerator
    from serving.app import ServeSettings, start_server, stop_server

    torch.set_num_threads(1)
    prompts = load_prompts(Path(__file__).resolve().parents[1] / "core" / "data" / "default_prompts.json")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    settings = ServeSettings(port=free_port(), max_rows=max(levels), max_tokens=args.max_tokens)
    print(f"load average at start: {os.getloadavg()}; {len(prompts)} prompts, {args.max_tokens} new tokens, "
          f"clients {levels} x {args.requests_per_client} requests", flush=True)

    results: dict = {"served": [], "in_process": {}, "admission": {}}
    url = start_server(settings)
    for clients in levels:
        for model in ("mara", "upstream"):
            row = load(url, model, prompts, clients, args.requests_per_client, args.max_tokens)
            results["served"].append(row)
            print(json.dumps(row), flush=True)
    results["admission"]["continuous"] = results["served"][-2]

    # The same load with static admission (a running batch admits no one).
    serve_static = dataclasses.replace(settings, admission="static")
    from ray import serve

    from serving.app import APP_NAME, build_app

    serve.run(build_app(serve_static), name=APP_NAME, route_prefix="/", blocking=False)
    results["admission"]["static"] = load(url, "mara", prompts, max(levels), args.requests_per_client,
                                          args.max_tokens)
    print("static:", json.dumps(results["admission"]["static"]), flush=True)
    stop_server()
    ray.shutdown()

    generator = AlignedGenerator.from_paths(max_new_tokens=args.max_tokens)
    for clients in levels:
        batch = [prompts[i % len(prompts)] for i in range(clients * args.requests_per_client)]
        generator.batch_size = clients
        results["in_process"][clients] = in_process(generator, batch)
        print(f"in-process batch {clients}:", json.dumps(results["in_process"][clients]), flush=True)

    print("\n| clients | model | requests/s | tokens/s | p50 latency (s) | p99 latency (s) | p50 TTFT (s) "
          "| p99 TTFT (s) |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results["served"]:
        print(f"| {r['clients']} | {r['model']} | {r['requests_per_s']:.2f} | {r['tokens_per_s']:.1f} | "
              f"{r['p50_latency_s']:.2f} | {r['p99_latency_s']:.2f} | {r['p50_ttft_s']:.3f} | {r['p99_ttft_s']:.3f} |")
    print("\n| clients | mara served tokens/s | upstream served tokens/s | ratio | in-process tokens/s "
          "| serving overhead |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    by = {(r["clients"], r["model"]): r for r in results["served"]}
    for clients in levels:
        m, u, p = by[clients, "mara"], by[clients, "upstream"], results["in_process"][clients]
        overhead = 1 - m["tokens_per_s"] / p["tokens_per_s"]
        print(f"| {clients} | {m['tokens_per_s']:.1f} | {u['tokens_per_s']:.1f} | "
              f"{m['tokens_per_s'] / u['tokens_per_s']:.2f} | {p['tokens_per_s']:.1f} | {overhead:+.1%} |")
    cont, stat = results["admission"]["continuous"], results["admission"]["static"]
    print(f"\nadmission at {max(levels)} clients: continuous {cont['tokens_per_s']:.1f} tokens/s, p99 latency "
          f"{cont['p99_latency_s']:.2f} s; static {stat['tokens_per_s']:.1f} tokens/s, p99 latency "
          f"{stat['p99_latency_s']:.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
