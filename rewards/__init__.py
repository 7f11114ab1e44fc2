"""Sentence rewards: one interface (``SentenceScorer``), several backends, and how they
are combined into the training reward (MARA.md, Eq. 13).

Backends (``ScorerSpec.kind``): ``function``, ``score-model`` (safe-rlhf / beaver),
``seq-cls`` (AutoModelForSequenceClassification), ``embedding-bt`` (Bradley-Terry head on
a frozen sentence encoder; the embedded offline reward is one), ``http`` and
``vllm-reward`` (a sequence-classification reward model served by vLLM). Heavy
libraries (transformers, sentence-transformers) are imported only when a backend is built.
"""

from __future__ import annotations

from core.config import BASELINE_UPSTREAM_GREEDY, ScorerSpec
from rewards.base import SCORER_KINDS, CombinedReward, FunctionScorer, SentenceScorer, build_reward, build_scorer
from rewards.embedded import DEFAULT_JUDGE, DEFAULT_REWARD, default_prompts_path, head_path, shipped_head_path


def _score_model(path: str, **options):
    from rewards.score_model import ScoreModelScorer

    return ScoreModelScorer(path, **options)


def _seq_cls(path: str, **options):
    from rewards.seq_cls import SeqClsScorer

    return SeqClsScorer(path, **options)


def _embedding_bt(path: str, **options):
    from rewards.embedding_bt import EmbeddingBTScorer

    return EmbeddingBTScorer(str(head_path(path)), **options)


def _http(path: str, **options):
    from rewards.http_scorer import HttpScorer

    return HttpScorer(path, **options)


def _vllm_reward(path: str, **options):
    from rewards.vllm_scorer import VllmRewardScorer

    return VllmRewardScorer(path, **options)


SCORER_KINDS.update({"score-model": _score_model, "seq-cls": _seq_cls,
                     "embedding-bt": _embedding_bt, "http": _http, "vllm-reward": _vllm_reward})

__all__ = ["BASELINE_UPSTREAM_GREEDY", "SCORER_KINDS", "CombinedReward", "FunctionScorer", "ScorerSpec",
           "SentenceScorer", "build_reward", "build_scorer", "DEFAULT_REWARD", "DEFAULT_JUDGE",
           "shipped_head_path", "default_prompts_path"]
