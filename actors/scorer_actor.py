"""Scorer actors: one reward model in an actor of its own.

A reward of several large models (the paper's beaver-7b reward and cost, 12.6 GiB each in
bfloat16) does not fit one GPU of 24 GB. A scorer whose ``ScorerSpec.num_gpus`` is set runs
in a ``ScorerActor`` with that many GPUs of its own; the reward actor holds a ``RemoteScorer``
in its place and sums every scorer's scores as Eq. 13 says (``rewards.base.CombinedReward``),
whether a scorer runs in it or in an actor of its own.

    scorer = start_actor(ScorerActor, {"num_gpus": 1}, spec=ScorerSpec("score-model", "beaver-7b-cost"))
    RemoteScorer(scorer, "beaver-7b-cost").score(prompts, responses)    # (N,) as the scorer's own
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import ray

from core.config import ScorerSpec


class ScorerActor:
    """Hosts one scorer (``rewards.base.build_scorer``) and answers its ``score`` calls."""

    def __init__(self, *, spec: ScorerSpec, torch_threads: int = 1) -> None:
        import torch

        from rewards.base import build_scorer

        torch.set_num_threads(torch_threads)
        self.scorer = build_scorer(spec)

    def score(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        return np.asarray(self.scorer.score(prompts, responses), dtype=np.float64)


class RemoteScorer:
    """A ``rewards.base.SentenceScorer`` whose scores come from a ``ScorerActor``."""

    def __init__(self, actor, name: str) -> None:
        self.actor, self.name = actor, name

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return ray.get(self.actor.score.remote(list(prompts), list(responses)))
