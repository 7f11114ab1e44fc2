"""Rollout workers: each hosts a frozen upstream LLM and runs accept/reject episodes with the
newest actor MLP it has.

One ``rollout(prompts)`` call decodes a batch of episodes with stochastic actions and
returns two things: its ``RolloutStats`` (for the driver) and the finished episodes. The
driver calls it with ``num_returns=2`` and hands the second reference, unread, to a
reward actor, so episodes travel from worker to reward actor through the object store and
never through the driver. Between calls the worker picks up new weights without blocking
(``WeightClient``).

A worker is a plain class; the driver's ``WorkerGroup`` makes it a Ray actor, restarts it
when it dies (``max_restarts``; its constructor fetches the learner's current weights
again) and hands its lost call's prompts out again.

With ``model.backend == "vllm"`` the worker's LLM is a ``VllmUpstream``: its engines run in
processes the worker spawns, and all episodes of a call go through one engine. Such a
worker needs ``runtime_env={"env_vars": VLLM_ACTOR_ENV}`` (``actor_options``).
"""

from __future__ import annotations

import time

import ray
import torch

from actors.weight_client import WeightClient
from core.config import KLConfig, ModelConfig, RolloutConfig, SamplingConfig
from core.contracts import EpisodeTransitions, RolloutStats
from core.networks import Actor
from core.state_features import state_size
from envs.vllm_backend import VLLM_ACTOR_ENV


def actor_options(model: ModelConfig) -> dict:
    """Ray actor options an LLM-hosting actor needs for its backend (vLLM: spawned engine processes)."""
    return {"runtime_env": {"env_vars": dict(VLLM_ACTOR_ENV)}} if model.backend == "vllm" else {}


class RolloutWorker:
    def __init__(self, *, worker_index: int, model: ModelConfig, sampling: SamplingConfig, kl: KLConfig,
                 rollout: RolloutConfig, agent_hidden_size: int, learner, seed: int = 0) -> None:
        from envs.generation import AlignedGenerator, llm_from_config

        torch.set_num_threads(rollout.torch_threads)
        torch.manual_seed(seed + worker_index)
        llm = llm_from_config(model)
        actor = Actor(state_dim=state_size(rollout.state_features, llm.hidden_size),
                      hidden_size=agent_hidden_size)
        self.generator = AlignedGenerator(llm, actor, sampling=sampling, mode=model.mode, greedy=False,
                                          seed=seed + 1000 * worker_index, kl=kl,
                                          backend=model.backend,
                                          state_features=rollout.state_features)
        self.worker_index = worker_index
        self.batch_rows = rollout.batch_rows or None  # None: all of a call's episodes at once
        self.weights = WeightClient(learner, actor)
        self.node = ray.get_runtime_context().get_node_id()  # reported with each call's statistics
        # model.dtype "auto" as resolved here (a vLLM upstream's states come from its engines)
        self.upstream_dtype = getattr(llm, "engine_dtype", None) or str(llm.dtype).removeprefix("torch.")

    def rollout(self, prompts: list[str]) -> tuple[RolloutStats, list[EpisodeTransitions]]:
        """Decode one batch of episodes with the newest weights that have arrived."""
        version = self.weights.update()
        start, t0 = time.time(), time.perf_counter()
        results = self.generator.run_episodes(prompts, policy_version=version, max_rows=self.batch_rows)
        seconds = time.perf_counter() - t0
        episodes = [r.episode for r in results]
        stats = RolloutStats(
            worker=self.worker_index, policy_version=version, episodes=len(results),
            transitions=sum(len(e) for e in episodes), accepts=int(sum(e.actions.sum() for e in episodes)),
            tokens=sum(len(r.response_ids) for r in results), seconds=seconds,
            episode_start=start, episode_end=time.time(),
            episode_tokens=[len(r.response_ids) for r in results],
            weight_fetches=self.weights.fetches, node=self.node, upstream_dtype=self.upstream_dtype,
        )
        return stats, episodes

    def close(self) -> None:
        """Stop the LLM's engine processes (vLLM backend), before the actor is killed."""
        self.generator.close()
