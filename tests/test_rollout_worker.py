"""Rollout workers (actors/rollout_worker.py) and their weight client (actors/weight_client.py):
a worker keeps decoding while its weight poll is unanswered, picks new weights up between
calls without a blocking fetch, and weights travel by reference, put into the object store
once per version."""

from __future__ import annotations

import time

import numpy as np

from core.config import KLConfig, LearnerConfig, ModelConfig, RolloutConfig, SACConfig, SamplingConfig
from envs.upstream import resolve_dtype

PROMPTS = ["How can I bake bread?", "Tell me a joke."]
HIDDEN = 16


def _gated_learner(ray):
    """A stub learner, defined in a function so that Ray ships it by value (its workers
    cannot import test modules). It answers the first weight poll at once (version 0);
    later polls wait until ``publish``. Version >= 1 weights accept every candidate."""

    @ray.remote(num_cpus=0, max_concurrency=4)
    class GatedLearner:
        def __init__(self, d: int) -> None:
            import threading

            self.d, self.version, self.gate = d, 0, threading.Event()
            self.polls, self.puts = 0, 0

        def latest_weights(self, have_version=None, have_incarnation=None):
            import ray
            import torch

            from core.networks import Actor

            self.polls += 1
            if have_version is not None:
                self.gate.wait()
                if self.version <= have_version:
                    return None  # nothing newer
            actor = Actor(state_dim=self.d, hidden_size=HIDDEN)
            if self.version >= 1:
                with torch.no_grad():
                    actor.output_linear.weight.zero_()
                    actor.output_linear.bias.copy_(torch.tensor([-10.0, 10.0]))
            self.puts += 1
            return self.version, "stub", ray.put({k: v.numpy() for k, v in actor.state_dict().items()})

        def publish(self, version: int) -> None:
            self.version = version
            self.gate.set()

        def counts(self) -> tuple[int, int]:
            return self.polls, self.puts

    return GatedLearner


def test_worker_never_waits_for_weights(ray_local, tiny_llm_path):
    ray = ray_local
    from actors.rollout_worker import RolloutWorker
    from actors.worker_group import start_actor

    learner = _gated_learner(ray).remote(64)
    worker = start_actor(RolloutWorker, {"num_cpus": 0}, worker_index=0,
                         model=ModelConfig(name=str(tiny_llm_path), device="cpu"),
                         sampling=SamplingConfig(max_new_tokens=4), kl=KLConfig(),
                         rollout=RolloutConfig(), agent_hidden_size=HIDDEN, learner=learner)

    def rollout():
        stats_ref, episodes_ref = worker.rollout.options(num_returns=2).remote(PROMPTS)
        return ray.get(stats_ref, timeout=180), ray.get(episodes_ref)

    # The learner's poll stays unanswered, yet two rollouts finish with the first weights.
    (first, episodes), (second, _) = rollout(), rollout()
    assert first.policy_version == second.policy_version == 0
    assert first.episodes == len(episodes) == 2 and first.transitions == sum(len(e) for e in episodes) > 0
    assert [e.prompt for e in episodes] == PROMPTS and all(e.policy_version == 0 for e in episodes)
    assert sum(first.episode_tokens) == first.tokens and all(1 <= t <= 4 for t in first.episode_tokens)
    assert first.upstream_dtype == resolve_dtype("auto", "cpu")  # model.dtype's default, resolved here

    # Version 1 reaches the worker between calls: poll until a call uses it (the poll and
    # the fetch finish in the background, so which call that is depends on timing).
    learner.publish.remote(1)
    deadline = time.monotonic() + 120
    while (stats := rollout()[0]).policy_version == 0 and time.monotonic() < deadline:
        pass
    assert stats.policy_version == 1
    assert stats.accepts == stats.transitions > 0  # the version-1 actor accepts everything
    later = rollout()[0]
    assert later.policy_version == 1
    polls, puts = ray.get(learner.counts.remote())
    assert puts == 2 and polls >= 3  # polls that found nothing newer carried no weights
    for handle in (worker, learner):
        ray.kill(handle)


def test_weights_are_put_once_per_version_and_fetched_by_reference(ray_local):
    ray = ray_local
    from actors.worker_group import start_actor
    from learner.service import LearnerService

    learner = start_actor(LearnerService, {"num_cpus": 0, "max_concurrency": 2}, state_dim=8,
                          sac=SACConfig(hidden_size=HIDDEN, batch_size=4), config=LearnerConfig(device="cpu"))
    version, incarnation, ref = ray.get(learner.latest_weights.remote(have_version=None))
    again_version, _, again_ref = ray.get(learner.latest_weights.remote(have_version=None))
    assert version == again_version == 0
    assert isinstance(ref, ray.ObjectRef) and ref == again_ref  # one object per version, not one per poll
    assert ray.get(learner.latest_weights.remote(0, incarnation)) is None  # nothing newer: no reply payload
    weights = ray.get(ref)
    assert set(weights) >= {"ln.weight", "linear1.weight", "output_linear.bias"}
    # Read from the node's shared object store (zero-copy): workers on a node share one copy.
    assert not weights["linear1.weight"].flags.writeable
    assert isinstance(weights["linear1.weight"], np.ndarray)
    ray.kill(learner)
