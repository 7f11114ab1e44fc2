"""The training run: builds the Ray components from a RunConfig and drives them.

    rollout workers --episodes--> reward actors --scored episodes--> replay actor
          ^                                                            |
          |  newest weights (polled, never awaited)                    | batches (rate limited)
          +------------------------- learner actor <-------------------+

Nothing here waits for a round of collection to finish before learning or the other way
round: the learner's ``run`` loop samples continuously, every worker always has its next
``rollout`` call queued, and the driver only hands out prompts, collects statistics,
prints progress and enforces the budget. A worker that dies is restarted by Ray; its
prompts of the lost call go back in the queue, and what was already inserted stays.

Run folder: config.yaml, metrics.jsonl (+ metrics.csv at the end), checkpoints/ (learner),
replay.arrow (replay snapshot), state.json (prompt position and counters), agent.safetensors
(the trained actor) and summary.json. ``resume`` continues from such a folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import ray

from actors.reward_actor import RewardActor
from actors.rollout_worker import RolloutStats, RolloutWorker, actor_options
from envs.upstream import model_hidden_size
from learner.actor import make_learner_actor
from mara.atomic import write_json_atomic
from mara.config import RunConfig, save_config
from mara.metrics import MetricsLog, MetricsSink
from mara.prompts import training_prompts
from replay.actor import ReplayActor

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
REPLAY_FILE = "replay.arrow"
AGENT_FILE = "agent.safetensors"
CALLS_PER_WORKER = 2  # rollout calls queued per worker, so it never idles between calls
RESTART_BACKOFF_S = 0.5


class WorkerStartError(RuntimeError):
    """A rollout worker's constructor raised: Ray does not restart it, so the run stops."""


class PromptQueue:
    """Hands out prompts in a fixed shuffled order, without overlap between workers; the
    position (and prompts of failed calls, handed out again first) is saved for resume."""

    def __init__(self, prompts: list[str], seed: int, position: int = 0, retry: list[str] = ()) -> None:
        self.prompts = list(prompts)
        random.Random(seed).shuffle(self.prompts)
        self.position = position
        self.retry = deque(retry)

    def take(self, n: int) -> list[str]:
        out = [self.retry.popleft() for _ in range(min(n, len(self.retry)))]
        while len(out) < n:
            out.append(self.prompts[self.position % len(self.prompts)])
            self.position += 1
        return out

    def give_back(self, prompts: list[str]) -> None:
        self.retry.extend(prompts)


@dataclass
class Totals:
    """Counters over the whole run (restored on resume)."""

    episodes: int = 0
    transitions: int = 0
    inserted: int = 0
    tokens: int = 0
    accepts: int = 0
    worker_failures: int = 0
    seconds: float = 0.0
    recent_rewards: deque = field(default_factory=lambda: deque(maxlen=50))
    reward_sum: float = 0.0
    rewards_seen: int = 0


class TrainingRun:
    def __init__(self, cfg: RunConfig, run_dir: Path, resume: bool = False) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.resume = resume
        self.totals = Totals()
        self.metrics_log = MetricsLog(run_dir)
        self.sink = MetricsSink()
        self._updates_reported = 0  # learner updates already counted in the metrics sink
        self._fatal: str | None = None  # why the run must stop early (a worker cannot start)

    # ------------------------------------------------------------------ building
    def build(self) -> None:
        cfg = self.cfg
        prompts = training_prompts(cfg.prompts)
        state = self._read_state() if self.resume else {}
        self.queue = PromptQueue(prompts, cfg.prompts.shuffle_seed, state.get("prompt_position", 0),
                                 state.get("prompt_retry", []))
        for name in ("episodes", "transitions", "inserted", "tokens", "accepts", "worker_failures", "seconds"):
            setattr(self.totals, name, state.get(name, 0))

        state_dim = model_hidden_size(cfg.model.name)
        self.replay = ReplayActor.options(num_cpus=0).remote(config=cfg.replay, state_dim=state_dim)
        if self.resume and (self.run_dir / REPLAY_FILE).is_file():
            restored = ray.get(self.replay.restore.remote(str(self.run_dir / REPLAY_FILE)))
            log.info("restored %s transitions into the replay buffer", restored)
        self.learner = make_learner_actor(
            state_dim=state_dim, sac=cfg.sac, config=cfg.learner, seed=cfg.seed,
            upstream_model=cfg.model.name, run_dir=str(self.run_dir), resume=self.resume,
            num_cpus=cfg.learner_num_cpus,
        )
        self.reward_actors = [
            ray.remote(RewardActor).options(num_cpus=cfg.reward.num_cpus, num_gpus=cfg.reward.num_gpus,
                                            max_restarts=-1).remote(
                scorers=cfg.reward.scorers, baseline=cfg.reward.baseline, scale=cfg.reward.scale,
                replay=self.replay)
            for _ in range(cfg.reward.num_actors)
        ]
        self.workers = [self._make_worker(i) for i in range(cfg.rollout.num_workers)]

    def _make_worker(self, index: int):
        cfg, r = self.cfg, self.cfg.rollout
        options = dict(num_cpus=r.num_cpus, num_gpus=r.num_gpus, max_restarts=r.max_restarts,
                       max_concurrency=1)
        if r.resource:
            options["resources"] = {r.resource: 1}
        options.update(actor_options(cfg.model.backend))
        return ray.remote(RolloutWorker).options(**options).remote(
            worker_index=index, model=cfg.model.name, dtype=cfg.model.dtype, device=cfg.model.device,
            mode=cfg.model.mode, backend=cfg.model.backend, sampling=cfg.sampling,
            vllm=cfg.model.vllm if cfg.model.backend == "vllm" else None,  # load_llm refuses it otherwise
            kl=cfg.kl, agent_hidden_size=r.agent_hidden_size,
            learner=self.learner, reward_actor=self.reward_actors[index % len(self.reward_actors)],
            greedy_baseline=cfg.reward.baseline == "upstream-greedy",
            max_inflight_rewards=r.max_inflight_rewards, torch_threads=r.torch_threads,
            decision_delay_s=r.decision_delay_s, seed=cfg.seed, baseline_batch_size=r.episodes_per_call,
        )

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict:
        cfg = self.cfg
        start = time.perf_counter()
        seconds_before = self.totals.seconds
        self._updates_reported = ray.get(self.learner.metrics.remote()).updates  # resumed ones
        # The update budget counts over the whole run, resumed parts included (as episodes do).
        remaining = max(cfg.budget.updates - self._updates_reported, 0) if cfg.budget.updates else None
        learner_run = self.learner.run.remote(self.replay, max_updates=remaining)
        inflight: dict[ray.ObjectRef, tuple[int, list[str]]] = {}
        for index, worker in enumerate(self.workers):
            for _ in range(CALLS_PER_WORKER):
                self._submit(inflight, index)
        next_report = time.perf_counter() + cfg.progress_every_s
        interrupted = False
        try:
            while not self._budget_reached(start, seconds_before, learner_run):
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
                for ref in ready:
                    index, prompts = inflight.pop(ref)
                    self._collect(ref, index, prompts)
                    if not self._budget_reached(start, seconds_before, learner_run):
                        self._submit(inflight, index)
                if time.perf_counter() >= next_report:
                    self._report(start, seconds_before)
                    next_report = time.perf_counter() + cfg.progress_every_s
        except KeyboardInterrupt:
            interrupted = True
            print("\ninterrupted: stopping cleanly and saving (press Ctrl-C again to abort)", flush=True)
        self.totals.seconds = seconds_before + time.perf_counter() - start
        summary = self._shutdown(inflight, learner_run, interrupted)
        if self._fatal:  # everything collected so far is saved; now say why it stopped
            raise WorkerStartError(self._fatal)
        return summary

    def _submit(self, inflight: dict, index: int) -> None:
        prompts = self.queue.take(self.cfg.rollout.episodes_per_call)
        inflight[self.workers[index].rollout.remote(prompts)] = (index, prompts)

    def _collect(self, ref, index: int, prompts: list[str]) -> RolloutStats | None:
        try:
            stats: RolloutStats = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as err:
            # The worker died mid-call: Ray restarts it; its episodes were never sent,
            # so its prompts go back in the queue. Everything inserted earlier stays.
            self.totals.worker_failures += 1
            self.queue.give_back(prompts)
            if getattr(err, "actor_init_failed", False):  # a bad model path, say: no restart helps
                cause = str(err).strip().splitlines()[-1]
                self._fatal = f"rollout worker {index} cannot start: {cause}"
                return None
            log.warning("rollout worker %d failed (%s); Ray restarts it", index, type(err).__name__)
            print(f"rollout worker {index} died; Ray is restarting it, its prompts are requeued", flush=True)
            time.sleep(RESTART_BACKOFF_S)  # calls to a restarting actor fail at once; don't spin
            return None
        self._add_stats(stats)
        return stats

    def _add_stats(self, stats: RolloutStats) -> None:
        t = self.totals
        t.episodes += stats.episodes
        t.transitions += stats.transitions
        t.tokens += stats.tokens
        t.accepts += stats.accepts
        self._add_rewards(stats.rewards, stats.inserted)
        self.sink.inc("episodes", stats.episodes)
        self.sink.inc("transitions", stats.transitions)
        self.sink.record({"tokens_per_second": stats.tokens / max(stats.seconds, 1e-9)})
        # The sentence rewards of the episodes scored since the last call (the learning curve).
        self.metrics_log.write({"event": "rollout", **vars(stats),
                                "mean_reward": float(np.mean(stats.rewards)) if stats.rewards else None})

    def _add_rewards(self, rewards: list[float], inserted: int) -> None:
        t = self.totals
        t.inserted += inserted
        t.recent_rewards.extend(rewards)
        t.reward_sum += sum(rewards)
        t.rewards_seen += len(rewards)

    def _budget_reached(self, start: float, seconds_before: float, learner_run) -> bool:
        if self._fatal:
            return True
        b = self.cfg.budget
        if b.episodes and self.totals.episodes >= b.episodes:
            return True
        if b.seconds and seconds_before + time.perf_counter() - start >= b.seconds:
            return True
        ready, _ = ray.wait([learner_run], timeout=0)
        return bool(ready)  # the learner reached its update budget (or failed)

    def _report(self, start: float, seconds_before: float) -> dict:
        t = self.totals
        learner = ray.get(self.learner.metrics.remote())
        replay = ray.get(self.replay.stats.remote())
        elapsed = max(time.perf_counter() - start, 1e-9)
        record = {
            "event": "progress", "elapsed_s": seconds_before + elapsed, "episodes": t.episodes,
            "transitions": t.transitions, "transitions_per_s": t.transitions / (seconds_before + elapsed),
            "replay_size": replay["size"], "samples_per_insert": replay.get("samples_per_insert", 0.0),
            "updates": learner.updates, "updates_per_s": learner.updates_per_s,
            "critic_loss": learner.critic_loss, "actor_loss": learner.actor_loss, "alpha": learner.alpha,
            "entropy": learner.entropy, "weight_version": learner.version, "policy_lag": learner.policy_lag,
            "accept_rate": t.accepts / max(t.transitions, 1),
            "mean_reward": float(np.mean(t.recent_rewards)) if t.recent_rewards else float("nan"),
            "worker_failures": t.worker_failures,
        }
        self.metrics_log.write(record)
        self.sink.inc("learner_updates", learner.updates - self._updates_reported)
        self._updates_reported = learner.updates
        self.sink.record({k: v for k, v in {
            "replay_size": record["replay_size"], "samples_per_insert": record["samples_per_insert"],
            "updates_per_second": record["updates_per_s"], "critic_loss": record["critic_loss"],
            "actor_loss": record["actor_loss"], "alpha": record["alpha"], "entropy": record["entropy"],
            "accept_rate": record["accept_rate"], "mean_reward": record["mean_reward"],
            "weight_version": record["weight_version"], "policy_version_lag": record["policy_lag"],
        }.items() if np.isfinite(v)})
        print(f"[{record['elapsed_s']:6.0f}s] episodes {t.episodes} | transitions {t.transitions} "
              f"({record['transitions_per_s']:.1f}/s) | replay {record['replay_size']} | updates "
              f"{learner.updates} ({learner.updates_per_s:.2f}/s) | reward {record['mean_reward']:.3f} | "
              f"accept {record['accept_rate']:.2f} | weights v{learner.version} lag {learner.policy_lag:.1f}",
              flush=True)
        return record

    # ------------------------------------------------------------------ shutdown
    def _shutdown(self, inflight: dict, learner_run, interrupted: bool) -> dict:
        try:
            # Let the calls in flight finish: their episodes are paid for, keep them.
            for ref, (index, prompts) in list(inflight.items()):
                self._collect(ref, index, prompts)
            for worker in self.workers:
                try:
                    rewards, inserted = ray.get(worker.flush.remote())
                    self._add_rewards(rewards, inserted)
                except ray.exceptions.RayActorError:
                    pass
        except KeyboardInterrupt:
            print("second interrupt: not waiting for rollouts in flight", flush=True)
        self.learner.stop.remote()
        learner_stats = ray.get(learner_run)
        ray.get(self.replay.save.remote(str(self.run_dir / REPLAY_FILE)))
        ray.get(self.learner.export_agent.remote(str(self.run_dir / AGENT_FILE), **self._agent_metadata()))
        replay_stats = ray.get(self.replay.stats.remote())
        self._write_state()
        final = self._report(time.perf_counter(), self.totals.seconds)
        summary = {
            **final, "interrupted": interrupted, "learner_updates": learner_stats.updates,
            "learner_update_share": learner_stats.update_share, "inserted": self.totals.inserted,
            "replay": replay_stats, "episodes_per_hour": self.totals.episodes / max(self.totals.seconds, 1e-9) * 3600,
            "mean_reward_all": self.totals.reward_sum / max(self.totals.rewards_seen, 1),
            "agent": str(self.run_dir / AGENT_FILE), "run_dir": str(self.run_dir),
        }
        write_json_atomic(self.run_dir / "summary.json", summary)
        self.metrics_log.to_csv(self.run_dir / "metrics.csv")
        self.metrics_log.close()
        self.sink.stop()
        return summary

    def _agent_metadata(self) -> dict[str, str]:
        """What the agent file records of its training (``mara eval`` reads "reward" to say
        whether a judge is the training reward)."""
        t = self.totals
        return {"reward": json.dumps([{"kind": s.kind, "path": s.path, "weight": s.weight}
                                      for s in self.cfg.reward.scorers]),
                "reward_baseline": json.dumps(self.cfg.reward.baseline), "reward_scale": str(self.cfg.reward.scale),
                "run": self.run_dir.name, "episodes": str(t.episodes), "transitions": str(t.transitions)}

    def _read_state(self) -> dict:
        path = self.run_dir / STATE_FILE
        return json.loads(path.read_text()) if path.is_file() else {}

    def _write_state(self) -> None:
        t = self.totals
        write_json_atomic(self.run_dir / STATE_FILE, {
            "prompt_position": self.queue.position, "prompt_retry": list(self.queue.retry),
            "episodes": t.episodes, "transitions": t.transitions, "inserted": t.inserted,
            "tokens": t.tokens, "accepts": t.accepts, "worker_failures": t.worker_failures,
            "seconds": t.seconds,
        })


def new_run_dir(cfg: RunConfig) -> Path:
    name = cfg.run_name or time.strftime("%Y%m%d-%H%M%S")
    path = Path(cfg.output_dir) / name
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"run folder {path} exists and is not empty: pick another run_name or --resume it")
    path.mkdir(parents=True, exist_ok=True)
    return path


def connect_ray(cfg: RunConfig) -> bool:
    """Join a cluster (``address`` or $RAY_ADDRESS) or start a local one. True if started here."""
    if ray.is_initialized():
        return False
    address = cfg.address or os.environ.get("RAY_ADDRESS", "")
    if address:
        ray.init(address=address)
        print(f"joined Ray cluster at {address}", flush=True)
        return True
    needed = cfg.rollout.num_workers * cfg.rollout.num_cpus + cfg.learner_num_cpus \
        + cfg.reward.num_actors * cfg.reward.num_cpus
    context = ray.init(num_cpus=max(os.cpu_count() or 1, int(np.ceil(needed))),
                       include_dashboard=cfg.dashboard, log_to_driver=True)
    if cfg.dashboard and context.dashboard_url:
        print(f"Ray dashboard: http://{context.dashboard_url}", flush=True)
    return True


@contextlib.contextmanager
def _stop_on_sigterm():
    """While training, SIGTERM (a job scheduler, ``kill``) stops the run as Ctrl-C does:
    cleanly, saving what ``--resume`` needs. Ctrl-C is re-enabled too, since a shell
    starts background jobs with SIGINT ignored. The previous handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt), signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])


def train(cfg: RunConfig, run_dir: Path, resume: bool = False) -> dict:
    """Run training to its budget; returns the summary written to run_dir/summary.json."""
    started_ray = connect_ray(cfg)
    try:
        with _stop_on_sigterm():  # after ray.init, which installs a SIGTERM handler of its own
            if not resume:
                save_config(cfg, run_dir / "config.yaml")
            run = TrainingRun(cfg, run_dir, resume=resume)
            if cfg.metrics_port >= 0:
                port = run.sink.start_http_server(cfg.metrics_port, host=cfg.metrics_host)
                print(f"Prometheus metrics: http://{cfg.metrics_host}:{port}/metrics", flush=True)
            run.build()
            print(f"run folder: {run_dir}", flush=True)
            return run.run()
    finally:
        if started_ray:
            ray.shutdown()
