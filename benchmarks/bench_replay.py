"""Replay buffer throughput and memory (a script, not a test).

Measures, for the plain ``ReplayBuffer`` at d = 576 (SmolLM2-135M) and d = 4096 (7-8B
models): insert throughput in transitions/s (whole episodes of 300 decisions, float32
states as rollout workers send them, validation included), sample throughput for
batches of 1024 (float32 out, next states gathered), and bytes per transition against
the reference's Python-float deque (~2 * d * 8 bytes).

    python benchmarks/bench_replay.py            # ~30-60 s on 2 CPU cores
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mara.contracts import EpisodeTransitions  # noqa: E402
from replay.buffer import ReplayBuffer  # noqa: E402

EPISODE_LEN = 300
BATCH = 1024


def make_episodes(d: int, count: int, rng: np.random.Generator) -> list[EpisodeTransitions]:
    return [
        EpisodeTransitions(
            states=rng.standard_normal((EPISODE_LEN, d)).astype(np.float32),
            actions=rng.integers(0, 2, EPISODE_LEN).astype(np.int8),
            kl_penalties=-rng.random(EPISODE_LEN).astype(np.float32),
            policy_version=i,
            sentence_reward=1.0,
        )
        for i in range(count)
    ]


def bench(d: int, capacity: int, dtype: str, seconds: float) -> dict[str, float]:
    rng = np.random.default_rng(0)
    episodes = make_episodes(d, 8, rng)
    buffer = ReplayBuffer(capacity=capacity, state_dim=d, state_dtype=dtype)
    # Fill the ring once (touches every page), then time inserts that overwrite.
    while buffer.size() < capacity:
        buffer.add(episodes[:1])
    n_inserted, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        n_inserted += buffer.add(episodes)
    insert_s = time.perf_counter() - start
    n_sampled, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        n_sampled += len(buffer.sample(BATCH, rng))
    sample_s = time.perf_counter() - start
    return {
        "insert_tps": n_inserted / insert_s,
        "sample_bps": n_sampled / BATCH / sample_s,
        "bytes": buffer.bytes_per_transition(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="timing per measurement")
    args = parser.parse_args()
    print(f"episodes of {EPISODE_LEN} decisions, sample batch {BATCH}, "
          f"{args.seconds:.1f} s per measurement")
    print(f"{'d':>5} {'dtype':>8} {'capacity':>9} {'insert trans/s':>15} "
          f"{'sample batch/s':>15} {'sample trans/s':>15} {'B/trans':>8} "
          f"{'ref 2*d*8':>10} {'ref/ours':>9}")
    for d, capacity in ((576, 131_072), (4096, 32_768)):
        for dtype in ("float16", "float32"):
            r = bench(d, capacity, dtype, args.seconds)
            ref = 2 * d * 8
            print(f"{d:>5} {dtype:>8} {capacity:>9} {r['insert_tps']:>15,.0f} "
                  f"{r['sample_bps']:>15,.1f} {r['sample_bps'] * BATCH:>15,.0f} "
                  f"{r['bytes']:>8} {ref:>10} {ref / r['bytes']:>8.2f}x")


if __name__ == "__main__":
    main()
