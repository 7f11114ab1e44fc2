"""Sentence rewards: one interface (``SentenceScorer``), several backends, and how they
are combined into the training reward (MARA.md, Eq. 13).

Backends (``ScorerSpec.kind``): ``function``, ``score-model`` (safe-rlhf / beaver),
``seq-cls`` (AutoModelForSequenceClassification), ``embedding-bt`` (Bradley-Terry head on
a frozen sentence encoder; the embedded offline reward is one), ``http`` and
``vllm-reward`` (a sequence-classification reward model served by vLLM). Heavy
libraries (transformers, sentence-transformers) are imported only when a backend is built.
"""

from __future__ import annotations

from mara.rewards.base import (BASELINE_UPSTREAM_GREEDY, SCORER_KINDS, CombinedReward, FunctionScorer,
                               ScorerSpec, SentenceScorer, build_reward, build_scorer)


def _score_model(path: str, **options):
    from mara.rewards.score_model import ScoreModelScorer

    return ScoreModelScorer(path, **options)


def _seq_cls(path: str, **options):
    from mara.rewards.seq_cls import SeqClsScorer

    return SeqClsScorer(path, **options)


def _embedding_bt(path: str, **options):
    from mara.rewards.embedding_bt import EmbeddingBTScorer

    return EmbeddingBTScorer(path or str(shipped_head_path("reward")), **options)


def _http(path: str, **options):
    from mara.rewards.http_scorer import HttpScorer

    return HttpScorer(path, **options)


def _vllm_reward(path: str, **options):
    from mara.rewards.vllm_scorer import VllmRewardScorer

    return VllmRewardScorer(path, **options)


SCORER_KINDS.update({"score-model": _score_model, "seq-cls": _seq_cls,
                     "embedding-bt": _embedding_bt, "http": _http, "vllm-reward": _vllm_reward})

from mara.rewards.embedded import (DEFAULT_JUDGE, DEFAULT_REWARD, default_prompts_path,  # noqa: E402
                                   shipped_head_path)

__all__ = ["BASELINE_UPSTREAM_GREEDY", "SCORER_KINDS", "CombinedReward", "FunctionScorer", "ScorerSpec",
           "SentenceScorer", "build_reward", "build_scorer", "DEFAULT_REWARD", "DEFAULT_JUDGE",
           "shipped_head_path", "default_prompts_path"]
