"""Rollout workers (actors/rollout_worker.py) against stub learner and reward actors that
hold their answers back until the test releases them: a worker must keep decoding while
its weight poll and its scoring calls are unanswered."""

from __future__ import annotations

import time

from envs.mdp import KLConfig, SamplingConfig

PROMPTS = ["How can I bake bread?", "Tell me a joke."]
HIDDEN = 16


def _stubs(ray):
    """Stub actors, defined in a function so that Ray ships them by value (its workers
    cannot import test modules)."""

    @ray.remote(num_cpus=0, max_concurrency=4)
    class GatedLearner:
        """Answers the first weight request at once (version 0); later polls wait for
        ``release()``. Version >= 1 weights accept every candidate."""

        def __init__(self, d: int) -> None:
            import threading

            self.d, self.version, self.gate = d, 0, threading.Event()
            self.polls, self.payloads = 0, 0

        def latest_weights(self, have_version=None):
            import torch

            from mara.networks import Actor

            self.polls += 1
            if have_version is not None:
                self.gate.wait()
                if self.version <= have_version:
                    return None  # nothing newer: no weights are sent
            actor = Actor(state_dim=self.d, hidden_size=HIDDEN)
            if self.version >= 1:
                with torch.no_grad():
                    actor.output_linear.weight.zero_()
                    actor.output_linear.bias.copy_(torch.tensor([-10.0, 10.0]))
            self.payloads += 1
            return self.version, {k: v.numpy() for k, v in actor.state_dict().items()}

        def publish(self, version: int) -> None:
            self.version = version
            self.gate.set()

        def counts(self) -> tuple[int, int]:
            return self.polls, self.payloads

    @ray.remote(num_cpus=0, max_concurrency=4)
    class GatedReward:
        """Scores every answer 1.0, but only after ``release()``."""

        def __init__(self) -> None:
            import threading

            self.gate, self.started, self.finished = threading.Event(), 0, 0

        def score_and_insert(self, episodes, baselines=None) -> dict:
            self.started += 1
            self.gate.wait()
            self.finished += 1
            return {"rewards": [1.0] * len(episodes), "inserted": sum(len(e) for e in episodes)}

        def release(self) -> None:
            self.gate.set()

        def counts(self) -> tuple[int, int]:
            return self.started, self.finished

    return GatedLearner, GatedReward


def eventually(ray, ref_fn, expected, timeout_s: float = 30.0):
    """Poll an actor until it reports ``expected`` (calls between actors arrive with a delay)."""
    deadline = time.monotonic() + timeout_s
    while (value := ray.get(ref_fn())) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return value


def test_worker_never_waits_for_weights_or_scoring(ray_local, tiny_llm_path):
    ray = ray_local
    from actors.rollout_worker import RolloutWorker

    GatedLearner, GatedReward = _stubs(ray)
    learner, reward = GatedLearner.remote(64), GatedReward.remote()
    worker = ray.remote(RolloutWorker).options(num_cpus=0).remote(
        worker_index=0, model=str(tiny_llm_path), dtype="float32", device="cpu", mode="lazy",
        sampling=SamplingConfig(max_new_tokens=4), kl=KLConfig(), agent_hidden_size=HIDDEN,
        learner=learner, reward_actor=reward, max_inflight_rewards=2)

    # The learner's poll and both scoring calls stay unanswered, yet two rollouts finish.
    first = ray.get(worker.rollout.remote(PROMPTS), timeout=180)
    second = ray.get(worker.rollout.remote(PROMPTS), timeout=60)
    assert eventually(ray, reward.counts.remote, (2, 0)) == (2, 0)  # both handed over, none scored
    assert first.policy_version == second.policy_version == 0
    assert first.transitions > 0 and first.inserted == second.inserted == 0
    assert second.episode_start >= first.episode_end  # the next batch began before scoring ended

    # A third answer in flight exceeds max_inflight_rewards: now the worker waits
    # (the backpressure of a full replay buffer), until scoring resumes.
    third_ref = worker.rollout.remote(PROMPTS)
    ready, _ = ray.wait([third_ref], timeout=3)
    assert not ready
    learner.publish.remote(1)
    reward.release.remote()
    third = ray.get(third_ref, timeout=60)
    assert third.inserted >= first.transitions and third.rewards[:2] == [1.0, 1.0]

    # Version 1 reached the worker between calls, without a blocking fetch; polls that
    # find nothing newer carry no weights.
    fourth = ray.get(worker.rollout.remote(PROMPTS), timeout=60)
    fifth = ray.get(worker.rollout.remote(PROMPTS), timeout=60)
    assert fourth.policy_version == fifth.policy_version == 1
    assert fourth.accepts == fourth.transitions > 0  # the version-1 actor accepts everything
    polls, payloads = ray.get(learner.counts.remote())
    assert payloads == 2 and polls >= 4
    for handle in (worker, learner, reward):
        ray.kill(handle)
