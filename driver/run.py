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
least busy reward actor, records what the scorings report, prints progress, takes
snapshots and enforces the budget. It stops handing out rollout calls while too many
decoded batches wait for their reward (a full replay slows the reward actors' inserts):
that is the backpressure from the replay back to collection. An episode counts once its
reward is known, so the counters always describe what the replay received.

Failures. A worker or reward actor that dies is restarted by Ray (its group notices and
probes it); a lost rollout call's prompts go back in the queue, a lost scoring is done
again from the episodes still in the object store. The replay and the learner are
restarted by Ray too, from the newest snapshot and checkpoint, and the calls they were
answering are retried; the driver says what was restored and what was lost. When a
component cannot go on (a constructor that raises, a reward that fails on
``reward.max_failed_batches`` batches in a row), or when the run ends without one scored
episode or one learner update, the run stops, saves what it has, and ``run`` raises
``RunFailed`` with the reason: no agent is exported as if it had been trained.

The run folder's files are described in driver/run_folder.py; ``resume`` continues a run
from its folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import ray
from ray.exceptions import RayError, RayTaskError

from actors.worker_group import CallResult, wait_any
from core.agent_file import CANDIDATES, candidates_metadata
from core.atomic import write_json_atomic
from core.contracts import RolloutStats, ScoredBatch
from driver.components import connect_ray, start_components
from driver.config import RunConfig
from driver.metrics import MetricsLog, MetricsSink
from driver.preflight import RunInputs
from driver.prompt_queue import PromptQueue
from driver.run_folder import AGENT_FILE, REPLAY_FILE, SUMMARY_FILE, read_state, record_config, write_state
from driver.scaling import RolloutScaler

CALLS_PER_WORKER = 2  # rollout calls queued per worker, so it never idles between calls
DRAIN_S = 600.0  # at the end, the longest wait for the calls in flight
WAIT_S = 0.5  # longest wait for a finished call before the driver checks budget and progress
RECENT_REWARDS = 50  # episodes in the running mean reward


log = logging.getLogger(__name__)


def _last_line(err: BaseException) -> str:
    """An error's own message (a Ray error's last line: the remote exception, not its traceback)."""
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(err).__name__


class RunFailed(RuntimeError):
    """The run stopped without a result worth keeping (the reason is the message); what it
    had is saved, and ``summary`` is what it wrote to summary.json."""

    def __init__(self, reason: str, summary: dict | None = None) -> None:
        super().__init__(reason)
        self.summary = summary or {}


@dataclass
class Totals:
    """Counters over the whole run (saved in state.json and restored on resume). An episode
    counts when its reward is known (or known to be unavailable)."""

    episodes: int = 0
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


@dataclass
class Decoded:
    """A finished rollout call on its way to a reward actor."""

    prompts: list[str]
    stats: RolloutStats
    episodes: ray.ObjectRef  # the episodes themselves, in the object store (never read here)


class TrainingRun:
    def __init__(self, cfg: RunConfig, run_dir: Path, inputs: RunInputs, resume: bool = False) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.inputs = inputs
        self.resume = resume
        self.totals = Totals()
        self.metrics_log = MetricsLog(run_dir)
        self.sink = MetricsSink()
        self.stop_reason: str | None = None  # why the run must stop early, when it must
        self._updates_reported = 0  # learner updates already counted in the metrics sink
        self._failures_before = 0  # worker deaths of the run's earlier (resumed) parts
        self._failures_reported = 0  # worker deaths already counted in the metrics sink
        self._failed_batches = 0  # scored batches in a row that the reward could not score
        self._failed_calls = 0  # rollout calls in a row that raised
        self._upstream_dtype = ""  # what the workers' upstream computes in, as they report it
        self._waiting_for_reward: deque[Decoded] = deque()  # decoded calls no reward actor took yet
        self._incarnations: dict[str, str] = {}  # learner / replay -> the actor incarnation last seen
        self._last_learner_updates = 0
        self._last_replay_size = 0
        self._route_ms: deque[float] = deque(maxlen=100_000)  # the driver's time to handle finished calls

    # ------------------------------------------------------------------ building
    def build(self) -> None:
        cfg = self.cfg
        state = read_state(self.run_dir) if self.resume else {}
        self.queue = PromptQueue(self.inputs.prompts, cfg.prompts.shuffle_seed, state.get("prompt_position", 0),
                                 state.get("prompt_retry", []))
        saved = self.totals.saved()
        for name in saved:
            setattr(self.totals, name, state.get(name, saved[name]))
        self._failures_before = self._failures_reported = self.totals.worker_failures
        components = start_components(cfg, self.run_dir, self.inputs.state_dim)
        self.replay, self.learner = components.replay, components.learner
        self.rewards, self.rollouts = components.rewards, components.rollouts
        self.scaler = RolloutScaler(cfg.rollout, self.run_dir, self.rollouts)
        learner, replay = ray.get(self.learner.metrics.remote()), ray.get(self.replay.stats.remote())
        self._incarnations = {"learner": learner.incarnation, "replay": replay["incarnation"]}
        self._last_learner_updates, self._last_replay_size = learner.updates, replay["size"]
        if self.resume:
            self._say_what_was_restored(state, learner, replay)

    def _say_what_was_restored(self, state: dict, learner, replay: dict) -> None:
        lines = [f"resuming {self.run_dir}:"]
        lines.append(f"  learner: checkpoint {learner.restored} ({learner.updates} updates, weights v{learner.version})"
                     if learner.restored else "  learner: no checkpoint, it starts untrained")
        if replay["restored"]:
            lines.append(f"  replay: {replay['size']} transitions from {REPLAY_FILE}")
            saved_size = (state.get("replay") or {}).get("size")
            if saved_size is not None and saved_size != replay["size"]:
                lines.append(f"  (the state was saved with a replay of {saved_size} transitions: the run was "
                             f"stopped between two files of a snapshot)")
        else:
            lines.append("  replay: no snapshot, it starts empty")
        t = self.totals
        lines.append(f"  prompts: position {self.queue.position}, {len(self.queue.retry)} to hand out again; "
                     f"counters: {t.episodes} episodes, {t.transitions} transitions, {t.seconds:.0f} s"
                     if state else "  prompts and counters: no saved state, they start from zero")
        print("\n".join(lines), flush=True)

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict:
        cfg = self.cfg
        start = time.perf_counter()
        seconds_before = self.totals.seconds
        self._updates_reported = self._last_learner_updates  # resumed ones
        # The update budget counts over the whole run, resumed parts included (as episodes do).
        sync = cfg.mode == "sync"
        if sync:  # the driver paces the learner: no rate limiter between inserts and samples
            ray.get(self.replay.stop_limiting.remote(samples_too=True))
            learner_run = None
        else:
            learner_run = self.learner.run.remote(self.replay, until_updates=cfg.budget.updates or None)
        next_report = time.perf_counter() + cfg.progress_every_s
        snapshot_every = cfg.replay.snapshot_every_s
        next_snapshot = time.perf_counter() + snapshot_every if snapshot_every else float("inf")
        interrupted = False
        try:
            while not self._should_stop(start, seconds_before, learner_run):
                self._follow_scale_target()
                if sync:
                    self._sync_round()
                else:
                    self._hand_out_rollouts()
                    finished = wait_any([self.rollouts, self.rewards], timeout=WAIT_S)
                    handling = time.perf_counter()
                    self._route(finished)
                    if finished:
                        self._route_ms.append(1000 * (time.perf_counter() - handling))
                if time.perf_counter() >= next_report:
                    self._report(seconds_before + time.perf_counter() - start)
                    next_report = time.perf_counter() + cfg.progress_every_s
                if time.perf_counter() >= next_snapshot:
                    self.totals.seconds = seconds_before + time.perf_counter() - start
                    self._snapshot()
                    next_snapshot = time.perf_counter() + snapshot_every
        except KeyboardInterrupt:
            interrupted = True
            print("\ninterrupted: stopping cleanly and saving (press Ctrl-C again to abort)", flush=True)
        except Exception as err:  # a bug or an unexpected failure: stop, but save what the run has
            log.exception("the training loop failed")
            self.stop_reason = f"the driver failed: {type(err).__name__}: {err}"
        summary = self._shutdown(learner_run, interrupted, start, seconds_before)
        if summary["status"] == "failed":
            raise RunFailed(summary["failure"], summary)
        return summary

    def _hand_out_rollouts(self) -> None:
        """Queue rollout calls on workers with a free slot, unless too many decoded batches
        already wait for their reward (the backpressure)."""
        if self._unscored_calls() >= self.cfg.rollout.max_unscored_calls * max(len(self.rollouts.live()), 1):
            return
        for member in self.rollouts.idle_members(CALLS_PER_WORKER):
            self._start_rollout(member)

    def _start_rollout(self, member: int) -> None:
        """A rollout call of the next prompts on ``member``, tagged with them (to hand out again if lost)."""
        prompts = self.queue.take(self.cfg.rollout.episodes_per_call)
        self.rollouts.call(member, lambda worker: worker.rollout.options(num_returns=2).remote(prompts), tag=prompts)

    def _calls_outstanding(self) -> bool:
        """Rollout or scoring calls are still to come back (and their groups can answer)."""
        return bool(self.rollouts.calls_in_flight() or self._unscored_calls()) and not self._component_failure()

    def _follow_scale_target(self) -> None:
        """Start or stop rollout workers to follow the target (driver/scaling.py)."""
        for what in self.scaler.step():
            print(what, flush=True)
            self.metrics_log.write({"event": "scale", "what": what, "target": self.scaler.target,
                                    "workers": len(self.rollouts.live())})

    def _sync_round(self) -> None:
        """One round of the synchronous loop (``mode: sync``): one rollout call per worker;
        every episode scored and inserted; then ``sync_updates_per_episode`` learner updates
        per episode of the round, while no rollout runs (the learner starts once the replay
        holds ``replay.min_size_to_sample`` transitions, as in the asynchronous mode)."""
        episodes_before = self.totals.episodes
        # (again each round: a replay that Ray rebuilt starts with its rate limiter on)
        self._from_component(lambda: ray.get(self.replay.stop_limiting.remote(samples_too=True)))
        if self.stop_reason:  # the replay is gone for good
            return
        members = self.rollouts.idle_members(1)
        for member in members:
            self._start_rollout(member)
        if not members:  # every worker is starting or restarting: let the group probe them
            self._route(wait_any([self.rollouts, self.rewards], timeout=WAIT_S))
        while self._calls_outstanding():
            self._route(wait_any([self.rollouts, self.rewards], timeout=WAIT_S))
        episodes = self.totals.episodes - episodes_before
        replay = self._from_component(lambda: ray.get(self.replay.stats.remote()))
        if not episodes or replay is None or replay["size"] < self.cfg.replay.min_size_to_sample:
            return
        start = time.time()
        # The round's updates count from the learner's own count: one that Ray rebuilt from an
        # older checkpoint since the last round would otherwise catch up on the lost updates in
        # this round. (_last_learner_updates stays as it was: the restart check reports the loss.)
        learner = self._from_component(lambda: ray.get(self.learner.metrics.remote()))
        if learner is None:
            return
        target = learner.updates + self.cfg.sync_updates_per_episode * episodes
        if self.cfg.budget.updates:
            target = min(target, self.cfg.budget.updates)
        stats = self._from_component(lambda: ray.get(self.learner.run.remote(
            self.replay, until_updates=target, checkpoint_at_end=False)))
        if stats is None:
            return
        self.metrics_log.write({"event": "sync_updates", "start": start, "end": time.time(), "episodes": episodes,
                                "updates": stats.updates - learner.updates})
        self._last_learner_updates = stats.updates

    def _unscored_calls(self) -> int:
        return self.rewards.calls_in_flight() + len(self._waiting_for_reward)

    def _route(self, results: list[CallResult]) -> None:
        for result in results:
            if result.group is self.rollouts:
                self._rollout_finished(result)
            else:
                self._scoring_finished(result)
        self._score_waiting()

    def _rollout_finished(self, result: CallResult) -> None:
        if result.lost:
            # The worker died mid-call (or its node left with the result): its episodes never
            # reached us, its prompts go back in the queue (the group counts a death and waits
            # for Ray's restart).
            self.queue.give_back(result.tag)
            return
        if not result.ok:
            # The call itself raised (a prompt the model cannot take, states that are not
            # finite, ...): handing the same prompts out again would fail again.
            self._failed_calls += 1
            print(f"rollout worker {result.member}: a call failed, its {len(result.tag)} prompt(s) are skipped: "
                  f"{_last_line(result.error)}", flush=True)
            if self._failed_calls >= self.cfg.rollout.max_failed_calls and not self.stop_reason:
                self.stop_reason = (f"{self._failed_calls} rollout calls in a row failed "
                                    f"(rollout.max_failed_calls): {_last_line(result.error)}")
            return
        self._failed_calls = 0
        stats: RolloutStats = result.value
        self._upstream_dtype = stats.upstream_dtype or self._upstream_dtype
        self._waiting_for_reward.append(Decoded(prompts=result.tag, stats=stats, episodes=result.refs[1]))
        self.sink.record({"tokens_per_second": stats.tokens / max(stats.seconds, 1e-9)})
        self.metrics_log.write({"event": "rollout", **asdict(stats)})

    def _score_waiting(self) -> None:
        """Hand decoded episodes to the least busy reward actor in service."""
        while self._waiting_for_reward:
            member = self.rewards.least_busy()
            if member is None:
                return  # every reward actor is restarting: keep the episodes for later
            decoded = self._waiting_for_reward.popleft()
            self.rewards.call(member, lambda actor: actor.score_and_insert.remote(decoded.episodes), tag=decoded)

    def _scoring_finished(self, result: CallResult) -> None:
        decoded: Decoded = result.tag
        if result.actor_died:
            # The reward actor died while scoring: the episodes are still in the object
            # store (this driver owns them), so another actor scores them again (if it
            # died after its insert, they are inserted twice: at least once, never lost).
            self._waiting_for_reward.appendleft(decoded)
            return
        if result.lost:  # the episodes themselves were lost with a node: decode those prompts again
            self.queue.give_back(decoded.prompts)
            return
        if result.ok:
            scored: ScoredBatch = result.value
        else:  # the call raised outside the scorers (the replay refused the insert, say)
            n = decoded.stats.episodes
            scored = ScoredBatch(episodes=n, unscored=n, error=_last_line(result.error))
        stats, t = decoded.stats, self.totals
        t.episodes += stats.episodes
        t.transitions += stats.transitions
        t.tokens += stats.tokens
        t.accepts += stats.accepts
        t.inserted += scored.inserted
        t.recent_rewards.extend(scored.rewards)
        t.reward_sum += sum(scored.rewards)
        t.rewards_seen += len(scored.rewards)
        t.unscored_episodes += scored.unscored
        self.sink.inc("episodes", stats.episodes)
        self.sink.inc("transitions", stats.transitions)
        self.sink.inc("unscored_episodes", scored.unscored)
        for length in stats.episode_tokens:
            self.sink.record({"episode_length": length})
        # The sentence rewards of this batch's episodes, in order: the learning curve.
        self.metrics_log.write({"event": "scored", **asdict(scored)})
        if scored.error:
            print(f"reward: {scored.unscored} episode(s) could not be scored: {scored.error}", flush=True)
        self._failed_batches = self._failed_batches + 1 if scored.episodes and not scored.rewards else 0
        if self._failed_batches >= self.cfg.reward.max_failed_batches and not self.stop_reason:
            self.stop_reason = (f"the reward failed on {self._failed_batches} batches in a row "
                                f"(reward.max_failed_batches): {scored.error}")

    def _should_stop(self, start: float, seconds_before: float, learner_run) -> bool:
        self.stop_reason = self.stop_reason or self._component_failure()
        if self.stop_reason:
            return True
        b = self.cfg.budget
        if b.episodes and self.totals.episodes >= b.episodes:
            return True
        if b.seconds and seconds_before + time.perf_counter() - start >= b.seconds:
            return True
        if learner_run is None:  # sync mode: the driver counts the updates
            return bool(b.updates) and self._last_learner_updates >= b.updates
        ready, _ = ray.wait([learner_run], timeout=0)
        return bool(ready)  # the learner reached its update budget (or could not go on)

    def _component_failure(self) -> str | None:
        """Why a group of actors cannot go on, if one cannot."""
        for group in (self.rollouts, self.rewards):
            if group.fatal:
                return group.fatal
            if group is self.rollouts and not self.scaler.target:
                continue  # "auto" on a cluster with no rollout slot for now: wait for a node to join
            if not group.available() and not group.restarting():
                return f"no {group.name} is left (each died and Ray did not bring it back)"
        return None

    # ------------------------------------------------------------------ progress
    def _report(self, elapsed_s: float) -> dict | None:
        """One progress record: the same names in metrics.jsonl, the metrics sink and the display."""
        t = self.totals
        t.worker_failures = self._failures_before + self.rollouts.failures
        figures = self._from_component(lambda: ray.get([self.learner.metrics.remote(), self.replay.stats.remote()]))
        if figures is None:
            return None
        learner, replay = figures
        self._note_restarts(learner, replay)
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
            "rollout_workers": len(self.rollouts.available()), "rollout_workers_target": self.scaler.target,
        }
        self.metrics_log.write(record)
        self.sink.inc("learner_updates", max(learner.updates - self._updates_reported, 0))
        self._updates_reported = max(learner.updates, self._updates_reported)
        self.sink.inc("worker_failures", t.worker_failures - self._failures_reported)
        self._failures_reported = t.worker_failures
        gauges = ("transitions_per_second", "replay_size", "samples_per_insert", "updates_per_second", "critic_loss",
                  "actor_loss", "alpha", "entropy", "weight_version", "policy_version_lag", "accept_rate",
                  "mean_reward", "rollout_workers", "rollout_workers_target")
        self.sink.record({k: record[k] for k in gauges if np.isfinite(record[k])})
        print(f"[{elapsed_s:6.0f}s] workers {record['rollout_workers']}/{self.scaler.target} | "
              f"episodes {t.episodes} | transitions {t.transitions} "
              f"({record['transitions_per_second']:.1f}/s) | replay {record['replay_size']} | updates "
              f"{learner.updates} ({learner.updates_per_second:.2f}/s) | reward {record['mean_reward']:.3f} | "
              f"accept {record['accept_rate']:.2f} | weights v{learner.version} lag {learner.policy_version_lag:.1f}"
              + (f" | unscored {t.unscored_episodes}" if t.unscored_episodes else ""), flush=True)
        return record

    def _note_restarts(self, learner, replay: dict) -> None:
        """Say so when Ray rebuilt the learner or the replay since the last report, with what
        it restored and what was lost."""
        if learner.incarnation != self._incarnations["learner"]:
            restored = f"checkpoint {learner.restored}" if learner.restored else "no checkpoint: it starts untrained"
            lost = max(self._last_learner_updates - learner.updates, 0)
            self._say_restart("learner", f"from {restored} ({learner.updates} updates); "
                                         f"about {lost} updates since then were lost")
        if replay["incarnation"] != self._incarnations["replay"]:
            restored = f"its snapshot ({replay['restored']['size']} transitions)" if replay["restored"] \
                else "nothing: there was no snapshot yet"
            lost = max(self._last_replay_size - replay["size"], 0)
            self._say_restart("replay", f"from {restored}; it holds {replay['size']} transitions now, "
                                        f"about {lost} fewer than before it died")
        self._incarnations = {"learner": learner.incarnation, "replay": replay["incarnation"]}
        self._last_learner_updates, self._last_replay_size = learner.updates, replay["size"]

    def _say_restart(self, component: str, what: str) -> None:
        print(f"the {component} died and Ray rebuilt it {what}", flush=True)
        self.metrics_log.write({"event": "restart", "component": component, "what": what})

    # ------------------------------------------------------------------ snapshots
    def _snapshot(self) -> dict:
        """Write a complete set to resume from: the learner's checkpoint, then the replay, then
        state.json (each file atomically). The prompts of calls still in flight are saved as
        prompts to hand out again, so a killed run loses none (a few may be decoded twice).
        A part whose component is gone is left out, and the run told to stop."""
        checkpoint = self._from_component(lambda: ray.get(self.learner.checkpoint.remote()))
        saved = self._from_component(lambda: ray.get(self.replay.save.remote(str(self.run_dir / REPLAY_FILE))))
        in_flight = [p for tag in self.rollouts.tags() for p in tag]
        in_flight += [p for decoded in list(self._waiting_for_reward) + self.rewards.tags() for p in decoded.prompts]
        write_state(self.run_dir, {
            "prompt_position": self.queue.position, "prompt_retry": list(self.queue.retry) + in_flight,
            **self.totals.saved(), "replay": saved and {"size": saved["size"]}, "checkpoint": checkpoint,
            "time": time.time(),
        })
        record = {"event": "snapshot", "replay_size": saved and saved["size"],
                  "checkpoint": checkpoint and checkpoint["name"], "replay_pause_s": saved and saved["seconds"]}
        self.metrics_log.write(record)
        return record

    def _from_component(self, call):
        """``call()``, or None when its component died for good or failed (the run is then
        told to stop, with the reason)."""
        try:
            return call()
        except RayTaskError as err:
            self.stop_reason = self.stop_reason or f"a component failed: {_last_line(err)}"
        except RayError as err:
            self.stop_reason = self.stop_reason or f"a component died and Ray could not rebuild it: {_last_line(err)}"
        return None

    # ------------------------------------------------------------------ shutdown
    def _shutdown(self, learner_run, interrupted: bool, start: float, seconds_before: float) -> dict:
        # Let the calls in flight finish: their episodes are paid for, score and keep them.
        # The learner may have stopped sampling already, so inserts must not wait for it.
        self._from_component(lambda: ray.get(self.replay.stop_limiting.remote()))
        deadline = time.monotonic() + DRAIN_S
        try:
            while self._calls_outstanding():
                if time.monotonic() > deadline:
                    print(f"calls still in flight after {DRAIN_S:.0f} s: not waiting for them; "
                          f"their prompts are saved to be handed out again", flush=True)
                    break
                self._route(wait_any([self.rollouts, self.rewards], timeout=WAIT_S))
        except KeyboardInterrupt:
            print("second interrupt: not waiting for rollouts in flight", flush=True)
        self.totals.seconds = seconds_before + time.perf_counter() - start
        self._close_llms()
        self.learner.stop.remote()
        # (sync mode has no run in progress; the snapshot below checkpoints the learner)
        learner_stats = self._from_component(lambda: ray.get(learner_run)) if learner_run is not None else None
        snapshot = self._snapshot()
        final = self._report(self.totals.seconds) or {}
        failure = self.stop_reason or self._nothing_learned(final)
        if not failure:
            ray.get(self.learner.export_agent.remote(str(self.run_dir / AGENT_FILE), **self._agent_metadata()))
        summary = {
            **final, "status": "failed" if failure else "interrupted" if interrupted else "completed",
            "failure": failure, "interrupted": interrupted,
            "learner_update_share": learner_stats.update_share if learner_stats else None,
            "inserted": self.totals.inserted, "replay": self._replay_stats(),
            "snapshot": snapshot, "episodes_per_hour": self.totals.episodes / max(self.totals.seconds, 1e-9) * 3600,
            "mean_reward_all": self.totals.reward_sum / max(self.totals.rewards_seen, 1),
            "driver_route_ms": _percentiles(self._route_ms),
            "agent": None if failure else str(self.run_dir / AGENT_FILE), "run_dir": str(self.run_dir),
        }
        write_json_atomic(self.run_dir / SUMMARY_FILE, summary)
        self.metrics_log.to_csv(self.run_dir / "metrics.csv")
        self.metrics_log.close()
        self.sink.stop()
        return summary

    def _nothing_learned(self, final: dict) -> str | None:
        """A run that ends without a scored episode or a learner update has nothing to export."""
        t = self.totals
        if not t.rewards_seen:
            return (f"the reward scored no episode ({t.unscored_episodes} could not be scored): nothing to learn "
                    f"from, so no agent is exported")
        if not final.get("learner_updates"):
            return (f"the learner made no update (the replay held {final.get('replay_size', 0)} transitions; "
                    f"sampling starts at replay.min_size_to_sample={self.cfg.replay.min_size_to_sample}), "
                    f"so no agent is exported; --resume continues the run")
        return None

    def _replay_stats(self) -> dict | None:
        return self._from_component(lambda: ray.get(self.replay.stats.remote()))

    def _close_llms(self) -> None:
        """Stop the engine processes of the LLMs the actors host (vLLM backend) before Ray
        kills the actors; a dead actor's call fails, which is all right here."""
        closing = [actor.close.remote() for actor in self.rollouts.actors + self.rewards.actors]
        ray.wait(closing, num_returns=len(closing), timeout=60)

    def _agent_metadata(self) -> dict[str, str]:
        """What the agent file records of its training (``mara eval`` reads "reward" to say
        whether a judge is the training reward; "episode_tokens", the longest episode, is
        where the agent stops having seen states: the horizon to recommend, ``mara agent``;
        "candidates", the candidate set it was trained on, the one it judges wherever it answers;
        "upstream_dtype", the dtype its states were computed in, as the workers reported it, else
        as configured; "init_agent", the agent file a warm start began from)."""
        t = self.totals
        return {"reward": json.dumps([{"kind": s.kind, "path": s.path, "weight": s.weight}
                                      for s in self.cfg.reward.scorers]),
                "reward_baseline": json.dumps(self.cfg.reward.baseline), "reward_scale": str(self.cfg.reward.scale),
                "run": self.run_dir.name, "episodes": str(t.episodes), "transitions": str(t.transitions),
                "episode_tokens": str(self.cfg.sampling.max_new_tokens),
                CANDIDATES: candidates_metadata(self.cfg.sampling),
                "upstream_dtype": self._upstream_dtype or self.cfg.model.dtype,
                **({"init_agent": self.cfg.learner.init_agent} if self.cfg.learner.init_agent else {})}


def _percentiles(values) -> dict | None:
    """p50 / p99 / max of a series (None when empty)."""
    if not values:
        return None
    p50, p99 = np.percentile(list(values), [50, 99])
    return {"p50": float(p50), "p99": float(p99), "max": float(max(values)), "n": len(values)}


@contextlib.contextmanager
def stop_on_sigterm():
    """While a run starts and trains, SIGTERM (a job scheduler, ``kill``) stops it as Ctrl-C
    does: as a KeyboardInterrupt, which the run answers by stopping cleanly and saving what
    ``--resume`` needs. Ctrl-C is re-enabled too, since a shell starts background jobs with
    SIGINT ignored. ``ray.init`` installs a SIGTERM handler of its own, so call
    ``catch_sigterm`` again after it. The previous handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    catch_sigterm()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])


def catch_sigterm() -> None:
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def train(cfg: RunConfig, run_dir: Path, inputs: RunInputs, resume: bool = False) -> dict:
    """Run training to its budget; returns the summary written to run_dir/summary.json, or
    raises RunFailed (after saving) when the run could not learn. ``inputs`` come from
    ``driver.preflight.check_inputs``; a KeyboardInterrupt before the loop starts propagates."""
    with stop_on_sigterm():
        started_ray = False
        try:
            started_ray = connect_ray(cfg)
            catch_sigterm()  # ray.init replaced our SIGTERM handler with its own
            changed = record_config(cfg, run_dir)
            if resume and changed:
                print("resumed with changed settings (the earlier ones are kept as config.<k>.yaml): "
                      + "; ".join(changed), flush=True)
            run = TrainingRun(cfg, run_dir, inputs, resume=resume)
            if cfg.metrics_port >= 0:
                port = run.sink.start_http_server(cfg.metrics_port, host=cfg.metrics_host)
                print(f"Prometheus metrics: http://{cfg.metrics_host}:{port}/metrics", flush=True)
            run.build()
            print(f"run folder: {run_dir}", flush=True)
            return run.run()
        finally:
            if started_ray:
                ray.shutdown()
