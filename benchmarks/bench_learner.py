"""Learner throughput: SAC updates/s, and the share of wall time the LearnerService updates.

1. ``SACLearner.update`` alone at batch 1024, hidden 1024, for d = 576 (SmolLM2-135M) and
   d = 4096 (7-8B models), on the CPU and on CUDA when available.
2. The ``LearnerService`` fed by a replay stub that always has data (the same pre-built
   batch on every call): the share of its wall time spent in gradient updates (target:
   >= 90%, i.e. prefetching hides sampling and transfer) and its updates/s relative to 1.
3. The real sample path: a ``ReplayServer`` actor holding random episodes at
   d = 4096 (float16 storage), sampled through Ray by another actor with two calls in
   flight, as the learner samples: batches/s and MB/s of float32 batches (states and next
   states of 1024 transitions: 32 MiB), against the learner's updates/s; and the
   ``LearnerService`` fed by that real replay: its share of time in updates.
4. The same with the buffer in the learner's process (``replay.in_learner``,
   driver/learner_with_replay.py): batches/s of local samples, and the learner's share;
   gathered on the host, then on the learner's device (``replay.on_learner_device``,
   replay/device_buffer.py: the CPU here, the GPU where there is one).

Run:  cd /work/main && python benchmarks/bench_learner.py            (about 2 minutes)
      python benchmarks/bench_learner.py --dims 576 --seconds 5     (quicker)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.config import LearnerConfig, SACConfig  # noqa: E402
from core.contracts import TransitionBatch  # noqa: E402
from learner.learner import SACLearner  # noqa: E402


def make_batch(n: int, d: int, seed: int = 0) -> TransitionBatch:
    return TransitionBatch.random(np.random.default_rng(seed), n, d, done_prob=0.05)


def direct_updates_per_s(d: int, device: str, cfg: SACConfig, seconds: float) -> tuple[float, int]:
    """Updates/s of SACLearner.update on one fixed batch (host->device copy included)."""
    learner = SACLearner(state_dim=d, sac=cfg, device=device, seed=0)
    batch = make_batch(cfg.batch_size, d)
    for _ in range(2):  # warm-up (allocator, Adam state creation, CUDA kernels)
        learner.update(batch)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - t0 < seconds:
        learner.update(batch)  # .tolist() of the metrics syncs CUDA every update
        n += 1
    return n / (time.perf_counter() - t0), n


def actor_share(d: int, device: str, cfg: SACConfig, seconds: float, threads: int, replay=None) -> dict:
    """Run the LearnerService actor for ``seconds`` against ``replay``, by default a stub that
    always has data."""
    import ray

    from actors.worker_group import start_actor
    from learner.service import LearnerService

    @ray.remote(num_cpus=0)
    class AlwaysReadyReplay:
        def __init__(self, n: int, d: int):
            self.batch = make_batch(n, d, seed=1)
            self.calls = 0

        def sample(self, n: int, timeout_s: float | None = None):
            self.calls += 1
            return self.batch

    stub = replay is None
    if stub:
        replay = AlwaysReadyReplay.remote(cfg.batch_size, d)
    config = LearnerConfig(publish_every=10, checkpoint_every=10**9, device=device,
                           sample_timeout_s=1.0, num_cpus=threads)
    learner = start_actor(LearnerService, {"num_cpus": threads, "num_gpus": 1 if device.startswith("cuda") else 0,
                                           "max_concurrency": 4}, state_dim=d, sac=cfg, config=config)
    ray.get([learner.metrics.remote(), replay.sample.remote(1)])  # both processes started
    ray.get(learner.run.remote(replay, until_updates=2))  # warm-up outside the measurement
    stats = ray.get(learner.run.remote(replay, max_seconds=seconds))
    for handle in (learner, replay) if stub else (learner,):
        ray.kill(handle)
    return {
        "updates": stats.run_updates,
        "updates_per_s": stats.run_updates / stats.wall_s,
        "update_share": stats.update_share,
        "wait_share": stats.wait_s / stats.wall_s,
        "version": stats.version,
    }


def bench_replay_config(transitions: int, batch: int, **more):
    from core.config import ReplayConfig

    return ReplayConfig(capacity=transitions, min_size_to_sample=batch, samples_per_insert=1e6, error_buffer=1e12,
                        **more)


def fill_replay(d: int, transitions: int, batch: int, replay=None):
    """``replay`` (by default a new ReplayServer actor) holding ``transitions`` random
    transitions (episodes of 300)."""
    import ray

    from actors.worker_group import start_actor
    from core.contracts import EpisodeTransitions
    from replay.server import ReplayServer

    if replay is None:
        replay = start_actor(ReplayServer, {"num_cpus": 0}, config=bench_replay_config(transitions, batch),
                             state_dim=d)
    rng = np.random.default_rng(0)
    for _ in range(transitions // 300):
        episode = EpisodeTransitions(states=rng.standard_normal((300, d), dtype=np.float32).astype(np.float16),
                                     actions=rng.integers(0, 2, 300).astype(np.int8),
                                     kl_penalties=np.zeros(300, np.float32))
        ray.get(replay.add.remote([episode]))
    return replay


def sample_path(replay, batch: int, seconds: float) -> dict:
    """Batches/s that one actor gets from the replay through Ray, two samples in flight."""
    import ray

    @ray.remote(num_cpus=0)
    class Puller:
        def pull(self, replay, n: int, seconds: float) -> tuple[int, float, int]:
            start, count, nbytes = time.perf_counter(), 0, 0
            pending = [replay.sample.remote(n), replay.sample.remote(n)]
            while time.perf_counter() - start < seconds:
                b = ray.get(pending.pop(0))
                pending.append(replay.sample.remote(n))
                count += 1
                nbytes += b.states.nbytes + b.next_states.nbytes
            return count, time.perf_counter() - start, nbytes

    puller = Puller.remote()
    ray.get(puller.pull.remote(replay, batch, 1.0))  # warm-up
    count, wall, nbytes = ray.get(puller.pull.remote(replay, batch, seconds))
    ray.kill(puller)
    return {"batches_per_s": count / wall, "mib_per_s": nbytes / wall / 2**20, "batches": count}


def local_path(d: int, device: str, cfg: SACConfig, seconds: float, threads: int, transitions: int,
               on_device: bool) -> dict:
    """The buffer in the learner's process: batches/s of local samples, then the learner's
    share of time in updates while it samples that buffer."""
    import ray

    from actors.worker_group import start_actor
    from driver.learner_with_replay import LearnerWithReplay

    class Probe(LearnerWithReplay):
        def pull_local(self, n: int, seconds: float) -> tuple[int, float, int]:
            """Two samples in flight on the replay's loop, as ``run`` prefetches."""
            start, count, nbytes = time.perf_counter(), 0, 0
            pending = [self._request_sample(None, 1.0), self._request_sample(None, 1.0)]
            while time.perf_counter() - start < seconds:
                b = self._collect_sample(pending.pop(0))
                pending.append(self._request_sample(None, 1.0))
                count += 1
                nbytes += b.states.nbytes + b.next_states.nbytes
            return count, time.perf_counter() - start, nbytes

    config = LearnerConfig(publish_every=10, checkpoint_every=10**9, device=device, sample_timeout_s=1.0,
                           num_cpus=threads)
    learner = start_actor(Probe, {"num_cpus": threads, "num_gpus": 1 if device.startswith("cuda") else 0,
                                  "max_concurrency": 8},
                          replay_config=bench_replay_config(transitions, cfg.batch_size, in_learner=True,
                                                            on_learner_device=on_device), state_dim=d, sac=cfg,
                          config=config)
    fill_replay(d, transitions, cfg.batch_size, replay=learner)
    learner.pull_local.remote(cfg.batch_size, 1.0)  # warm-up
    count, wall, nbytes = ray.get(learner.pull_local.remote(cfg.batch_size, seconds))
    ray.get(learner.run.remote(None, until_updates=2))
    stats = ray.get(learner.run.remote(None, max_seconds=seconds))
    ray.kill(learner)
    return {"batches_per_s": count / wall, "mib_per_s": nbytes / wall / 2**20,
            "update_share": stats.update_share, "updates_per_s": stats.run_updates / stats.wall_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dims", type=int, nargs="+", default=[576, 4096])
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--hidden-size", type=int, default=1024)
    # 1 by default: on a shared 2-core machine a second intra-op thread spin-waits on a
    # busy core and makes updates ~3x slower; pass --threads N on a dedicated machine.
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--share-dims", type=int, nargs="+", default=[576],
                        help="state sizes for the LearnerService share measurement")
    parser.add_argument("--sample-path-dims", type=int, nargs="*", default=[4096],
                        help="state sizes for the real replay's sample path (none: skip)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    print(f"load average at start: {os.getloadavg()}", flush=True)
    cfg = SACConfig(batch_size=args.batch_size, hidden_size=args.hidden_size)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {args.threads} CPU threads, devices {devices}, "
          f"batch {cfg.batch_size}, hidden {cfg.hidden_size}")

    direct: dict[tuple[int, str], float] = {}
    print("\n== SACLearner.update alone ==")
    print(f"{'d':>6} {'device':>6} {'updates/s':>10} {'ms/update':>10} {'samples/s':>10} {'n':>4}")
    for d in args.dims:
        for device in devices:
            ups, n = direct_updates_per_s(d, device, cfg, args.seconds)
            direct[(d, device)] = ups
            print(f"{d:>6} {device:>6} {ups:>10.2f} {1000 / ups:>10.1f} {ups * cfg.batch_size:>10.0f} {n:>4}")
    for device in devices:
        if len(args.dims) >= 2:
            a, b = args.dims[0], args.dims[-1]
            print(f"ratio updates/s d={a} / d={b} on {device}: {direct[(a, device)] / direct[(b, device)]:.2f}x")
    if "cuda" in devices:
        for d in args.dims:
            print(f"ratio cuda / cpu at d={d}: {direct[(d, 'cuda')] / direct[(d, 'cpu')]:.1f}x")

    import ray

    ray.init(num_cpus=max(4, args.threads + 2), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    print("\n== LearnerService.run fed by an always-ready replay stub (target update share >= 90%) ==")
    print(f"{'d':>6} {'device':>6} {'updates/s':>10} {'vs alone':>9} {'update%':>8} "
          f"{'wait%':>6} {'n':>4}")
    device = devices[-1]
    try:
        for d in args.share_dims:
            r = actor_share(d, device, cfg, args.seconds, args.threads)
            alone = direct.get((d, device), float("nan"))
            flag = "ok" if r["update_share"] >= 0.9 else "BELOW TARGET"
            print(f"{d:>6} {device:>6} {r['updates_per_s']:>10.2f} {r['updates_per_s'] / alone:>8.2f}x "
                  f"{100 * r['update_share']:>7.1f}% {100 * r['wait_share']:>5.1f}% {r['updates']:>4}  {flag}")
        if args.sample_path_dims:
            print("\n== the real replay's sample path through Ray (float32 batches, 2 calls in flight) ==")
            print(f"{'d':>6} {'batches/s':>10} {'MiB/s':>8} {'learner updates/s':>18} {'LearnerService update%':>23}")
        for d in args.sample_path_dims:
            replay = fill_replay(d, 20 * args.batch_size, args.batch_size)
            path = sample_path(replay, args.batch_size, args.seconds)
            share = actor_share(d, device, cfg, args.seconds, args.threads, replay=replay)
            print(f"{d:>6} {path['batches_per_s']:>10.2f} {path['mib_per_s']:>8.0f} "
                  f"{direct.get((d, device), float('nan')):>18.2f} {100 * share['update_share']:>22.1f}%")
            ray.kill(replay)
        if args.sample_path_dims:
            print("\n== the buffer in the learner's process (replay.in_learner: local samples, 2 in flight) ==")
            print(f"{'d':>6} {'gathered on':>12} {'batches/s':>10} {'MiB/s':>8} {'learner updates/s':>18} "
                  f"{'LearnerService update%':>23}")
        for d in args.sample_path_dims:
            for on_device in (False, True):
                local = local_path(d, device, cfg, args.seconds, args.threads, 20 * args.batch_size, on_device)
                print(f"{d:>6} {device if on_device else 'host':>12} {local['batches_per_s']:>10.2f} "
                      f"{local['mib_per_s']:>8.0f} {local['updates_per_s']:>18.2f} {100 * local['update_share']:>22.1f}%")
    finally:
        ray.shutdown()
    print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
