"""Reward actors: score finished answers in batches, off the rollout path, insert the scored
episodes into the replay, and report each batch to the driver.

The driver hands a reward actor the reference to a rollout call's episodes (they come
from the object store, never through the driver) and gets back a ``ScoredBatch``: the
sentence rewards, the transitions the replay stored, and how many episodes could not be
scored and why. A reward model that fails is therefore visible to the driver, batch by
batch.

With ``reward.baseline: upstream-greedy`` the reward is relative to the upstream model's
own greedy answer to the same prompt, so the actor hosts the upstream LLM too and computes
those answers itself (once per prompt): the baseline is part of the reward, and lives
where the reward is.

The actor waits for the replay to accept an insert; when the replay's rate limiter holds
inserts back, scored batches arrive later and the driver hands out fewer rollout calls.
"""

from __future__ import annotations

import logging

import ray

from core.config import ModelConfig, RewardConfig, SamplingConfig
from core.contracts import EpisodeTransitions, ScoredBatch

log = logging.getLogger(__name__)


class GreedyBaselines:
    """The upstream model's greedy answers, computed once per prompt (loaded on first use)."""

    def __init__(self, model: ModelConfig, sampling: SamplingConfig) -> None:
        self._model = model
        self._sampling = sampling
        self._llm = None
        self._answers: dict[str, str] = {}

    def answers(self, prompts: list[str]) -> list[str]:
        from envs.generation import llm_from_config, upstream_answers

        missing = [p for p in dict.fromkeys(prompts) if p not in self._answers]
        if missing:
            if self._llm is None:
                self._llm = llm_from_config(self._model)
            self._answers.update(zip(missing, upstream_answers(self._llm, missing, self._sampling,
                                                               batch_size=len(missing))))
        return [self._answers[p] for p in prompts]

    def close(self) -> None:
        """Stop the LLM's engine processes (vLLM backend)."""
        if self._llm is not None and hasattr(self._llm, "close"):
            self._llm.close()


class RewardActor:
    def __init__(self, *, reward: RewardConfig, replay, model: ModelConfig, sampling: SamplingConfig,
                 torch_threads: int = 1) -> None:
        import torch

        from rewards.base import build_reward

        torch.set_num_threads(torch_threads)
        self.reward = build_reward(list(reward.scorers), baseline=reward.baseline, scale=reward.scale)
        self.replay = replay
        self.baselines = GreedyBaselines(model, sampling) if reward.needs_greedy_baseline else None

    def score_and_insert(self, episodes: list[EpisodeTransitions]) -> ScoredBatch:
        """Attach r(x, y) to each episode's terminal decision and insert them into replay."""
        if not episodes:
            return ScoredBatch(episodes=0)
        prompts = [e.prompt for e in episodes]
        responses = [e.response for e in episodes]
        try:
            greedy = self.baselines.answers(prompts) if self.baselines else None
            rewards = self.reward.score(prompts, responses, greedy_responses=greedy)
        except Exception as err:  # a broken reward model must not take the run down silently
            log.error("scoring %d episodes failed, they are not inserted: %s", len(episodes), err)
            return ScoredBatch(episodes=len(episodes), unscored=len(episodes), error=f"{type(err).__name__}: {err}")
        for episode, reward in zip(episodes, rewards):
            episode.with_sentence_reward(float(reward))
        with_decisions = [e for e in episodes if len(e)]
        inserted = ray.get(self.replay.add.remote(with_decisions)) if with_decisions else 0
        return ScoredBatch(episodes=len(episodes), rewards=[float(r) for r in rewards], inserted=int(inserted))

    def close(self) -> None:
        """Stop the engine processes of the LLM it hosts for the greedy baseline (vLLM backend)."""
        if self.baselines is not None:
            self.baselines.close()
