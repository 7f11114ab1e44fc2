"""Rollout workers: Ray actors that each host a frozen upstream LLM and run accept/reject
episodes with the newest actor MLP they have.

One ``rollout(prompts)`` call decodes a batch of episodes with stochastic actions, hands
the finished episodes to a reward actor (which scores them and inserts them into the
replay actor) WITHOUT waiting for that, and returns statistics. Between calls the worker
picks up new weights without blocking: a weight request to the learner is always in
flight, and the worker only looks whether it has answered (``ray.wait(timeout=0)``).

A worker that dies is restarted by Ray (``max_restarts``); its constructor fetches the
learner's current weights again.

With ``backend="vllm"`` the worker's LLM is a ``VllmUpstream``: its engines run in
processes the worker spawns, and all episodes of a call go through one engine. Create
such a worker with ``runtime_env={"env_vars": VLLM_ACTOR_ENV}`` (``actor_options``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import ray
import torch

from envs.mdp import KLConfig, SamplingConfig
from envs.vllm_backend import VLLM_ACTOR_ENV, VllmEngineConfig
from mara.networks import Actor


def actor_options(backend: str) -> dict:
    """Ray actor options a worker needs for its backend (vLLM: spawned engine processes)."""
    return {"runtime_env": {"env_vars": dict(VLLM_ACTOR_ENV)}} if backend == "vllm" else {}


@dataclass
class RolloutStats:
    """What one ``rollout`` call reports to the driver."""

    worker: int
    policy_version: int
    episodes: int
    transitions: int  # decisions made (= transitions sent to replay)
    accepts: int  # decisions that accepted
    tokens: int  # response tokens generated
    seconds: float  # wall time of the decoding
    episode_start: float  # time.time() when decoding started
    episode_end: float  # time.time() when it ended
    rewards: list[float] = field(default_factory=list)  # sentence rewards scored since the last call
    inserted: int = 0  # transitions the replay accepted since the last call


class RolloutWorker:
    def __init__(self, *, worker_index: int, model: str, dtype: str, device: str, mode: str,
                 sampling: SamplingConfig, kl: KLConfig, agent_hidden_size: int,
                 learner, reward_actor, greedy_baseline: bool = False,
                 max_inflight_rewards: int = 2, torch_threads: int = 1,
                 decision_delay_s: float = 0.0, seed: int = 0, backend: str = "transformers",
                 vllm: VllmEngineConfig | None = None, baseline_batch_size: int = 8) -> None:
        from mara.generation import AlignedGenerator, load_llm

        torch.set_num_threads(torch_threads)
        torch.manual_seed(seed + worker_index)
        llm = load_llm(model, backend=backend, dtype=dtype, device=device, vllm=vllm)
        actor = Actor(state_dim=llm.hidden_size, hidden_size=agent_hidden_size)
        self.generator = AlignedGenerator(llm, actor, sampling=sampling, mode=mode, greedy=False,
                                          seed=seed + 1000 * worker_index, kl=kl,
                                          decision_delay_s=decision_delay_s, backend=backend,
                                          batch_size=baseline_batch_size)  # greedy baselines of one call
        self.worker_index = worker_index
        self.learner = learner
        self.reward_actor = reward_actor
        self.greedy_baseline = greedy_baseline
        self.max_inflight_rewards = max_inflight_rewards
        self.version = -1
        self._weights_request = self.learner.latest_weights.remote(have_version=None)
        ray.wait([self._weights_request])  # start from the learner's weights, not our own random ones
        self._inflight_rewards: list[ray.ObjectRef] = []
        self._baseline_cache: dict[str, str] = {}

    def hidden_size(self) -> int:
        return self.generator.llm.hidden_size

    def rollout(self, prompts: list[str]) -> RolloutStats:
        self._maybe_take_new_weights()
        start, t0 = time.time(), time.perf_counter()
        results = self.generator.run_episodes(prompts, policy_version=self.version)
        seconds = time.perf_counter() - t0
        end = time.time()
        episodes = [r.episode for r in results]
        baselines = self._greedy_answers(prompts) if self.greedy_baseline else None
        self._inflight_rewards.append(self.reward_actor.score_and_insert.remote(episodes, baselines))
        rewards, inserted = self._collect_scored()
        return RolloutStats(
            worker=self.worker_index, policy_version=self.version, episodes=len(results),
            transitions=sum(len(e) for e in episodes), accepts=int(sum(e.actions.sum() for e in episodes)),
            tokens=sum(len(r.response_ids) for r in results), seconds=seconds,
            episode_start=start, episode_end=end, rewards=rewards, inserted=inserted,
        )

    def flush(self) -> tuple[list[float], int]:
        """Wait for every scoring call this worker started (used at shutdown)."""
        ray.wait(self._inflight_rewards, num_returns=len(self._inflight_rewards))
        return self._collect_scored()

    def close(self) -> None:
        """Stop the LLM's engine processes (vLLM backend), before the actor is killed."""
        self.generator.close()

    # ------------------------------------------------------------------ internals
    def _maybe_take_new_weights(self) -> None:
        ready, _ = ray.wait([self._weights_request], timeout=0)
        if not ready:
            return  # the learner has not answered yet: keep the current weights
        answer = ray.get(self._weights_request)
        if answer is not None:
            version, weights = answer
            state = {k: torch.as_tensor(np.array(v)) for k, v in weights.items()}
            self.generator.actor.load_state_dict(state)
            self.version = version
        self._weights_request = self.learner.latest_weights.remote(have_version=self.version)

    def _collect_scored(self) -> tuple[list[float], int]:
        """Gather finished scoring calls; wait for the oldest while too many are in flight
        (this is the backpressure from a full replay buffer back to collection)."""
        rewards: list[float] = []
        inserted = 0
        while self._inflight_rewards:
            must_wait = len(self._inflight_rewards) > self.max_inflight_rewards
            ready, _ = ray.wait(self._inflight_rewards[:1], timeout=None if must_wait else 0)
            if not ready:
                break
            self._inflight_rewards.pop(0)
            scored = ray.get(ready[0])
            rewards.extend(scored["rewards"])
            inserted += scored["inserted"]
        return rewards, inserted

    def _greedy_answers(self, prompts: list[str]) -> list[str]:
        """The upstream model's own greedy answers (for the 'upstream-greedy' baseline),
        computed once per prompt."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._baseline_cache]
        if missing:
            self._baseline_cache.update(zip(missing, self.generator.generate_upstream(missing)))
        return [self._baseline_cache[p] for p in prompts]
