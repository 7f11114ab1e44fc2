"""Replay buffer throughput and memory against the reference's buffer (a script, not a test).

Measures, at d = 576 (SmolLM2-135M) and d = 4096 (7-8B models), in one run:
- our ``ReplayBuffer``: insert throughput in transitions/s (whole episodes of 300
  decisions, float32 states as rollout workers send them, validation included), sample
  throughput for batches of 1024 (float32 out, next states gathered), bytes per
  transition;
- the baseline, the reference implementation's layout: a ``collections.deque`` of
  ``[state, action, reward, next_state, done]`` with states as Python float lists, a
  batch drawn with ``random.sample`` and turned into float32 arrays for the learner. Its
  bytes per transition are measured with tracemalloc (MARA.md estimates 2 * d * 8).
Ratios are ours / reference (higher is better for throughput, lower for bytes).

    python benchmarks/bench_replay.py            # ~1-2 minutes on 2 CPU cores
    python benchmarks/bench_replay.py --snapshot # the pause a snapshot costs the learner

``--snapshot`` measures how long a replay snapshot holds inserts and samples back (the
learner's pause, ``ReplayServer.save``) for buffers of several sizes, against the time of
one SAC update of batch 256 measured in the same run: the pause in updates.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import tracemalloc
from collections import deque
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.contracts import EpisodeTransitions  # noqa: E402
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


class ReferenceReplay:
    """The reference's replay memory: one Python list per transition, states as float lists."""

    def __init__(self, capacity: int) -> None:
        self.memory: deque = deque(maxlen=capacity)

    def add(self, episodes: list[EpisodeTransitions]) -> int:
        for ep in episodes:
            states, next_states, rewards, dones = ep.states, ep.next_states, ep.rewards, ep.dones
            for t in range(len(ep)):
                self.memory.append([states[t].tolist(), int(ep.actions[t]), float(rewards[t]),
                                    next_states[t].tolist(), bool(dones[t])])
        return sum(len(ep) for ep in episodes)

    def sample(self, n: int) -> tuple[np.ndarray, ...]:
        states, actions, rewards, next_states, dones = zip(*random.sample(self.memory, n))
        return (np.array(states, np.float32), np.array(actions), np.array(rewards, np.float32),
                np.array(next_states, np.float32), np.array(dones, np.float32))


def throughput(add, sample, episodes, seconds: float) -> tuple[float, float]:
    """(inserted transitions/s, sampled batches/s), each timed for ``seconds``."""
    n_inserted, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        n_inserted += add(episodes)
    insert_s = time.perf_counter() - start
    n_batches, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        sample()
        n_batches += 1
    return n_inserted / insert_s, n_batches / (time.perf_counter() - start)


def bench_ours(d: int, capacity: int, dtype: str, seconds: float) -> dict[str, float]:
    rng = np.random.default_rng(0)
    episodes = make_episodes(d, 8, rng)
    buffer = ReplayBuffer(capacity=capacity, state_dim=d, state_dtype=dtype)
    while buffer.size() < capacity:  # fill the ring once (touches every page); inserts then overwrite
        buffer.add(episodes[:1])
    insert, sample = throughput(buffer.add, lambda: buffer.sample(BATCH, rng), episodes, seconds)
    return {"insert": insert, "sample": sample, "bytes": buffer.bytes_per_transition()}


def bench_reference(d: int, capacity: int, seconds: float) -> dict[str, float]:
    random.seed(0)
    episodes = make_episodes(d, 2, np.random.default_rng(0))
    ref = ReferenceReplay(capacity)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    ref.add(episodes)  # 600 transitions, measured
    bytes_per_transition = (tracemalloc.get_traced_memory()[0] - before) / len(ref.memory)
    tracemalloc.stop()
    while len(ref.memory) < capacity:
        ref.add(episodes[:1])
    insert, sample = throughput(ref.add, lambda: ref.sample(BATCH), episodes, seconds)
    return {"insert": insert, "sample": sample, "bytes": bytes_per_transition}


def snapshot_pauses() -> None:
    import asyncio
    import tempfile

    from core.config import ReplayConfig, SACConfig
    from core.contracts import TransitionBatch
    from learner.learner import SACLearner
    from replay.server import ReplayServer

    print(f"{'d':>5} {'transitions':>12} {'MB':>8} {'pause s':>8} {'MB/s':>8} {'SAC update ms':>14} {'pause in updates':>17}")
    rng = np.random.default_rng(0)
    for d, sizes in ((576, (10_000, 100_000, 200_000)), (4096, (10_000, 50_000))):
        learner = SACLearner(state_dim=d, sac=SACConfig(batch_size=256), device="cpu")
        batch = TransitionBatch.random(rng, 256, d)
        learner.update(batch)  # warm-up
        t0 = time.perf_counter()
        for _ in range(5):
            learner.update(batch)
        update_s = (time.perf_counter() - t0) / 5
        for size in sizes:
            server = ReplayServer(config=ReplayConfig(capacity=size, min_size_to_sample=1), state_dim=d)
            for start in range(0, size, 10 * EPISODE_LEN):
                server._buffer.write(make_episodes(d, min(10, (size - start) // EPISODE_LEN) or 1, rng))
            with tempfile.TemporaryDirectory() as tmp:
                saved = asyncio.run(server.save(Path(tmp) / "replay.arrow"))
                mb = (Path(tmp) / "replay.arrow").stat().st_size / 1e6
            print(f"{d:>5} {saved['size']:>12,} {mb:>8.1f} {saved['seconds']:>8.2f} {mb / saved['seconds']:>8.0f} "
                  f"{1000 * update_s:>14.1f} {saved['seconds'] / update_s:>17.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per measurement")
    parser.add_argument("--snapshot", action="store_true", help="measure the snapshot pause instead")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    if args.snapshot:
        snapshot_pauses()
        print(f"load average at end: {os.getloadavg()}")
        return
    print(f"episodes of {EPISODE_LEN} decisions, sample batch {BATCH}, {args.seconds:.1f} s per measurement")
    print(f"{'d':>5} {'buffer':>17} {'capacity':>9} {'insert trans/s':>15} {'sample batch/s':>15} "
          f"{'sample trans/s':>15} {'B/trans':>8} {'insert x':>9} {'sample x':>9} {'bytes x':>8}")
    # The reference's buffer holds ~2 * d * 32 bytes per transition (float objects plus
    # pointers), so its capacity is kept small; sampling cost does not depend on it.
    for d, capacity, ref_capacity in ((576, 131_072, 4096), (4096, 32_768, 1536)):
        ref = bench_reference(d, ref_capacity, args.seconds)
        rows = [("reference (deque)", ref_capacity, ref)]
        rows += [(f"ours {dtype}", capacity, bench_ours(d, capacity, dtype, args.seconds))
                 for dtype in ("float16", "float32")]
        for name, cap, r in rows:
            print(f"{d:>5} {name:>17} {cap:>9} {r['insert']:>15,.0f} {r['sample']:>15,.1f} "
                  f"{r['sample'] * BATCH:>15,.0f} {r['bytes']:>8,.0f} {r['insert'] / ref['insert']:>8.1f}x "
                  f"{r['sample'] / ref['sample']:>8.1f}x {r['bytes'] / ref['bytes']:>8.3f}")
        print(f"{d:>5} MARA.md's estimate for the reference: 2 * d * 8 = {2 * d * 8} bytes per transition")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
