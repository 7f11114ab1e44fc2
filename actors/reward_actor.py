"""Reward actors: score finished answers in batches, off the rollout path, and insert the
scored episodes into the replay actor.

A rollout worker hands its finished episodes over and starts its next batch at once;
the scoring (a reward model forward) and the replay insert happen here. The actor waits
for the insert to be accepted, so when the replay's rate limiter holds inserts back,
scoring calls queue up and the workers, which cap their calls in flight, slow down.
"""

from __future__ import annotations

import logging

import ray

from mara.contracts import EpisodeTransitions

log = logging.getLogger(__name__)


class RewardActor:
    def __init__(self, *, scorers, baseline, scale: float, replay, torch_threads: int = 1) -> None:
        import torch

        from mara.rewards.base import build_reward

        torch.set_num_threads(torch_threads)
        self.reward = build_reward(list(scorers), baseline=baseline, scale=scale)
        self.replay = replay

    def score_and_insert(self, episodes: list[EpisodeTransitions],
                         baseline_responses: list[str] | None = None) -> dict:
        """Attach r(x, y) to each episode's terminal decision and insert them into replay."""
        if not episodes:
            return {"rewards": [], "inserted": 0}
        prompts = [e.prompt for e in episodes]
        responses = [e.response for e in episodes]
        try:
            rewards = self.reward.score(prompts, responses, greedy_responses=baseline_responses)
        except Exception as err:  # a broken reward model must not take the run down silently
            log.error("scoring %d episodes failed, they are not inserted: %s", len(episodes), err)
            return {"rewards": [], "inserted": 0, "unscored": len(episodes), "error": str(err)}
        for episode, reward in zip(episodes, rewards):
            episode.with_sentence_reward(float(reward))
        with_decisions = [e for e in episodes if len(e)]
        inserted = ray.get(self.replay.add.remote(with_decisions)) if with_decisions else 0
        return {"rewards": [float(r) for r in rewards], "inserted": int(inserted), "unscored": 0}
