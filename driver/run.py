"""The training run: the loop that drives the components of driver/components.py.

    prompts -> rollout workers --episodes, by reference--> reward actors --scored episodes--> replay
                 |      ^                                      |                               |
     RolloutStats|      | newest weights, by reference         | ScoredBatch                   | batches
                 v      | (object store, polled)               v                               v
               driver   +------------------------------------------------------------------ learner
                 ^                                             |
                 +---------------------------------------------+

Nothing waits for a round of collection to finish before learning or the other way
round: the learner's ``run`` loop samples continuously, and every worker always has its
next calls queued. The driver hands out prompts, routes each finished rollout's episodes
(a reference: the arrays go from worker to reward actor through the object store) to the
least busy reward actor, records what the rollouts and the scorings report, prints
progress and enforces the budget. It stops handing out rollout calls while too many
decoded batches wait for their reward (a full replay slows the reward actors' inserts):
that is the backpressure from the replay back to collection.

A worker that dies is restarted by Ray (its group notices and probes it); the prompts of
its lost call go back in the queue. A reward actor that dies is restarted likewise, and
the episodes it was scoring, still in the object store, are scored again by another.
What the replay already holds stays.

The run folder's files are described in driver/run_folder.py; ``resume`` continues a run
from its folder.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import ray

from actors.worker_group import CallResult, wait_any
from core.atomic import write_json_atomic
from core.contracts import RolloutStats, ScoredBatch
from core.prompts import training_prompts
from driver.components import connect_ray, start_components
from driver.config import RunConfig, save_config
from driver.metrics import MetricsLog, MetricsSink
from driver.prompt_queue import PromptQueue
from driver.run_folder import AGENT_FILE, CONFIG_FILE, REPLAY_FILE, SUMMARY_FILE, read_state, write_state

CALLS_PER_WORKER = 2  # rollout calls queued per worker, so it never idles between calls
WAIT_S = 0.5  # longest wait for a finished call before the driver checks budget and progress
RECENT_REWARDS = 50  # episodes in the running mean reward


class WorkerStartError(RuntimeError):
    """A component cannot start or has no member left: the run stops, saving what it has."""


@dataclass
class Totals:
    """Counters over the whole run (saved in state.json and restored on resume)."""

    episodes: int = 0  # decoded (counted when their rollout call returns)
    transitions: int = 0
    inserted: int = 0  # transitions the replay stored
    tokens: int = 0
    accepts: int = 0
    worker_failures: int = 0  # rollout worker deaths, each counted once
    unscored_episodes: int = 0  # episodes the reward could not score
    seconds: float = 0.0
    recent_rewards: deque = field(default_factory=lambda: deque(maxlen=RECENT_REWARDS))
    reward_sum: float = 0.0
    rewards_seen: int = 0

    def saved(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "recent_rewards"}


class TrainingRun:
    def __init__(self, cfg: RunConfig, run_dir: Path, resume: bool = False) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.resume = resume
        self.totals = Totals()
        self.metrics_log = MetricsLog(run_dir)
        self.sink = MetricsSink()
        self._updates_reported = 0  # learner updates already counted in the metrics sink
        self._failures_before = 0  # worker deaths of the run's earlier (resumed) parts
        self._failures_reported = 0  # worker deaths already counted in the metrics sink
        self._waiting_for_reward: deque = deque()  # episodes (references) no reward actor could take yet

    # ------------------------------------------------------------------ building
    def build(self) -> None:
        cfg = self.cfg
        prompts = training_prompts(cfg.prompts)
        state = read_state(self.run_dir) if self.resume else {}
        self.queue = PromptQueue(prompts, cfg.prompts.shuffle_seed, state.get("prompt_position", 0),
                                 state.get("prompt_retry", []))
        saved = self.totals.saved()
        for name in saved:
            setattr(self.totals, name, state.get(name, saved[name]))
        self._failures_before = self._failures_reported = self.totals.worker_failures
        components = start_components(cfg, self.run_dir, self.resume)
        self.replay, self.learner = components.replay, components.learner
        self.rewards, self.rollouts = components.rewards, components.rollouts
        if self.resume and (self.run_dir / REPLAY_FILE).is_file():
            restored = ray.get(self.replay.restore.remote(str(self.run_dir / REPLAY_FILE)))
            print(f"restored {restored} transitions into the replay buffer", flush=True)

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict:
        cfg = self.cfg
        start = time.perf_counter()
        seconds_before = self.totals.seconds
        self._updates_reported = ray.get(self.learner.metrics.remote()).updates  # resumed ones
        # The update budget counts over the whole run, resumed parts included (as episodes do).
        remaining = max(cfg.budget.updates - self._updates_reported, 0) if cfg.budget.updates else None
        learner_run = self.learner.run.remote(self.replay, max_updates=remaining)
        next_report = time.perf_counter() + cfg.progress_every_s
        interrupted = False
        try:
            while not self._budget_reached(start, seconds_before, learner_run):
                self._hand_out_rollouts()
                self._route(wait_any([self.rollouts, self.rewards], timeout=WAIT_S))
                if time.perf_counter() >= next_report:
                    self._report(seconds_before + time.perf_counter() - start)
                    next_report = time.perf_counter() + cfg.progress_every_s
        except KeyboardInterrupt:
            interrupted = True
            print("\ninterrupted: stopping cleanly and saving (press Ctrl-C again to abort)", flush=True)
        summary = self._shutdown(learner_run, interrupted, start, seconds_before)
        fatal = self._fatal()
        if fatal:  # everything collected so far is saved; now say why it stopped
            raise WorkerStartError(fatal)
        return summary

    def _hand_out_rollouts(self) -> None:
        """Queue rollout calls on workers with a free slot, unless too many decoded batches
        already wait for their reward (the backpressure)."""
        unscored = self.rewards.calls_in_flight() + len(self._waiting_for_reward)
        if unscored >= self.cfg.rollout.max_unscored_calls * len(self.rollouts):
            return
        for member in self.rollouts.idle_members(CALLS_PER_WORKER):
            prompts = self.queue.take(self.cfg.rollout.episodes_per_call)
            self.rollouts.call(member, lambda worker: worker.rollout.options(num_returns=2).remote(prompts),
                               tag=prompts)

    def _route(self, results: list[CallResult]) -> None:
        for result in results:
            if result.group is self.rollouts:
                self._rollout_finished(result)
            else:
                self._scoring_finished(result)
        self._score_waiting()

    def _rollout_finished(self, result: CallResult) -> None:
        if not result.ok:
            # The worker died mid-call: its episodes never existed, its prompts go back in
            # the queue (the group counts the death and waits for Ray's restart).
            self.queue.give_back(result.tag)
            return
        stats: RolloutStats = result.value
        self._waiting_for_reward.append(result.refs[1])  # the episodes, unread
        t = self.totals
        t.episodes += stats.episodes
        t.transitions += stats.transitions
        t.tokens += stats.tokens
        t.accepts += stats.accepts
        self.sink.inc("episodes", stats.episodes)
        self.sink.inc("transitions", stats.transitions)
        self.sink.record({"tokens_per_second": stats.tokens / max(stats.seconds, 1e-9)})
        for length in stats.episode_tokens:
            self.sink.record({"episode_length": length})
        self.metrics_log.write({"event": "rollout", **asdict(stats)})

    def _score_waiting(self) -> None:
        """Hand decoded episodes to the least busy reward actor in service."""
        while self._waiting_for_reward:
            member = self.rewards.least_busy()
            if member is None:
                return  # every reward actor is restarting: keep the episodes for later
            episodes = self._waiting_for_reward.popleft()
            self.rewards.call(member, lambda actor: actor.score_and_insert.remote(episodes), tag=episodes)

    def _scoring_finished(self, result: CallResult) -> None:
        if not result.ok:
            # The reward actor died while scoring: the episodes are still in the object
            # store (this driver owns them), so another actor scores them again.
            self._waiting_for_reward.appendleft(result.tag)
            return
        scored: ScoredBatch = result.value
        t = self.totals
        t.inserted += scored.inserted
        t.recent_rewards.extend(scored.rewards)
        t.reward_sum += sum(scored.rewards)
        t.rewards_seen += len(scored.rewards)
        t.unscored_episodes += scored.unscored
        self.sink.inc("unscored_episodes", scored.unscored)
        # The sentence rewards of this batch's episodes, in order: the learning curve.
        self.metrics_log.write({"event": "scored", **asdict(scored)})
        if scored.error:
            print(f"reward: {scored.unscored} episode(s) could not be scored: {scored.error}", flush=True)

    def _fatal(self) -> str | None:
        """Why the run cannot go on, if it cannot."""
        for group in (self.rollouts, self.rewards):
            if group.fatal:
                return group.fatal
            if not group.available() and not group.restarting():
                return f"no {group.name} is left (each died and Ray did not bring it back)"
        return None

    def _budget_reached(self, start: float, seconds_before: float, learner_run) -> bool:
        if self._fatal():
            return True
        b = self.cfg.budget
        if b.episodes and self.totals.episodes >= b.episodes:
            return True
        if b.seconds and seconds_before + time.perf_counter() - start >= b.seconds:
            return True
        ready, _ = ray.wait([learner_run], timeout=0)
        return bool(ready)  # the learner reached its update budget (or failed)

    # ------------------------------------------------------------------ progress
    def _report(self, elapsed_s: float) -> dict:
        """One progress record: the same names in metrics.jsonl, the metrics sink and the display."""
        t = self.totals
        t.worker_failures = self._failures_before + self.rollouts.failures
        learner = ray.get(self.learner.metrics.remote())
        replay = ray.get(self.replay.stats.remote())
        record = {
            "event": "progress", "elapsed_s": elapsed_s, "episodes": t.episodes, "transitions": t.transitions,
            "transitions_per_second": t.transitions / max(elapsed_s, 1e-9),
            "replay_size": replay["size"], "samples_per_insert": replay["samples_per_insert"],
            "learner_updates": learner.updates, "updates_per_second": learner.updates_per_second,
            "critic_loss": learner.critic_loss, "actor_loss": learner.actor_loss, "alpha": learner.alpha,
            "entropy": learner.entropy, "weight_version": learner.version,
            "policy_version_lag": learner.policy_version_lag,
            "accept_rate": t.accepts / max(t.transitions, 1),
            "mean_reward": float(np.mean(t.recent_rewards)) if t.recent_rewards else float("nan"),
            "worker_failures": t.worker_failures, "unscored_episodes": t.unscored_episodes,
        }
        self.metrics_log.write(record)
        self.sink.inc("learner_updates", learner.updates - self._updates_reported)
        self._updates_reported = learner.updates
        self.sink.inc("worker_failures", t.worker_failures - self._failures_reported)
        self._failures_reported = t.worker_failures
        gauges = ("transitions_per_second", "replay_size", "samples_per_insert", "updates_per_second", "critic_loss",
                  "actor_loss", "alpha", "entropy", "weight_version", "policy_version_lag", "accept_rate",
                  "mean_reward")
        self.sink.record({k: record[k] for k in gauges if np.isfinite(record[k])})
        print(f"[{elapsed_s:6.0f}s] episodes {t.episodes} | transitions {t.transitions} "
              f"({record['transitions_per_second']:.1f}/s) | replay {record['replay_size']} | updates "
              f"{learner.updates} ({learner.updates_per_second:.2f}/s) | reward {record['mean_reward']:.3f} | "
              f"accept {record['accept_rate']:.2f} | weights v{learner.version} lag {learner.policy_version_lag:.1f}"
              + (f" | unscored {t.unscored_episodes}" if t.unscored_episodes else ""), flush=True)
        return record

    # ------------------------------------------------------------------ shutdown
    def _shutdown(self, learner_run, interrupted: bool, start: float, seconds_before: float) -> dict:
        try:
            # Let the calls in flight finish: their episodes are paid for, score and keep them.
            while (self.rollouts.calls_in_flight() or self.rewards.calls_in_flight() or self._waiting_for_reward) \
                    and not self._fatal():
                self._route(wait_any([self.rollouts, self.rewards], timeout=WAIT_S))
        except KeyboardInterrupt:
            print("second interrupt: not waiting for rollouts in flight", flush=True)
        self.totals.seconds = seconds_before + time.perf_counter() - start
        self._close_llms()
        self.learner.stop.remote()
        learner_stats = ray.get(learner_run)
        ray.get(self.replay.save.remote(str(self.run_dir / REPLAY_FILE)))
        ray.get(self.learner.export_agent.remote(str(self.run_dir / AGENT_FILE), **self._agent_metadata()))
        replay_stats = ray.get(self.replay.stats.remote())
        final = self._report(self.totals.seconds)
        write_state(self.run_dir, {"prompt_position": self.queue.position, "prompt_retry": list(self.queue.retry),
                                   **self.totals.saved()})
        summary = {
            **final, "interrupted": interrupted, "learner_update_share": learner_stats.update_share,
            "inserted": self.totals.inserted, "replay": replay_stats,
            "episodes_per_hour": self.totals.episodes / max(self.totals.seconds, 1e-9) * 3600,
            "mean_reward_all": self.totals.reward_sum / max(self.totals.rewards_seen, 1),
            "agent": str(self.run_dir / AGENT_FILE), "run_dir": str(self.run_dir),
        }
        write_json_atomic(self.run_dir / SUMMARY_FILE, summary)
        self.metrics_log.to_csv(self.run_dir / "metrics.csv")
        self.metrics_log.close()
        self.sink.stop()
        return summary

    def _close_llms(self) -> None:
        """Stop the engine processes of the LLMs the actors host (vLLM backend) before Ray
        kills the actors; a dead actor's call fails, which is all right here."""
        closing = [actor.close.remote() for actor in self.rollouts.actors + self.rewards.actors]
        ray.wait(closing, num_returns=len(closing), timeout=60)

    def _agent_metadata(self) -> dict[str, str]:
        """What the agent file records of its training (``mara eval`` reads "reward" to say
        whether a judge is the training reward)."""
        t = self.totals
        return {"reward": json.dumps([{"kind": s.kind, "path": s.path, "weight": s.weight}
                                      for s in self.cfg.reward.scorers]),
                "reward_baseline": json.dumps(self.cfg.reward.baseline), "reward_scale": str(self.cfg.reward.scale),
                "run": self.run_dir.name, "episodes": str(t.episodes), "transitions": str(t.transitions)}


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
                save_config(cfg, run_dir / CONFIG_FILE)
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
