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


def _response_class(path: str, **options):
    from rewards.response_class import ResponseClassScorer

    return ResponseClassScorer(str(head_path(path, "response-class")), **options)


def _answer_reader(path: str, **options):
    from rewards.answer_reader import AnswerReaderScorer

    return AnswerReaderScorer(str(head_path(path, "answer-reader")), **options)


def _http(path: str, **options):
    from rewards.http_scorer import HttpScorer

    return HttpScorer(path, **options)


def _vllm_reward(path: str, **options):
    from rewards.vllm_scorer import VllmRewardScorer

    return VllmRewardScorer(path, **options)


def check_scorer_spec(spec: ScorerSpec) -> None:
    """What can be checked of a scorer without loading its model: a function that imports, a
    head or checkpoint folder that exists, an http(s) URL. Raises ValueError or
    FileNotFoundError naming the scorer; hub ids are left for the backend to fetch."""
    from pathlib import Path
    from urllib.parse import urlsplit

    if spec.kind == "function":
        FunctionScorer(spec.path)  # imports the module and finds the function
    elif spec.kind in ("embedding-bt", "response-class", "answer-reader"):
        path = head_path(spec.path, spec.kind)
        if not path.is_file():
            raise FileNotFoundError(f"{spec.kind} scorer: head file not found: {path}")
        if spec.kind == "answer-reader" and spec.options.get("values") is not None:
            from rewards.answer_reader import ReaderHead, check_label_values

            check_label_values(spec.options["values"], ReaderHead.load(path).labels)
    elif spec.kind == "http":
        url = urlsplit(spec.path)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"http scorer needs an http(s) URL, got {spec.path!r}")
    elif spec.path.startswith((".", "/", "~")) and not Path(spec.path).expanduser().exists():
        raise FileNotFoundError(f"{spec.kind} scorer: model folder not found: {spec.path}")


SCORER_KINDS.update({"score-model": _score_model, "seq-cls": _seq_cls,
                     "embedding-bt": _embedding_bt, "http": _http, "vllm-reward": _vllm_reward,
                     "response-class": _response_class, "answer-reader": _answer_reader})

__all__ = ["BASELINE_UPSTREAM_GREEDY", "SCORER_KINDS", "CombinedReward", "FunctionScorer", "ScorerSpec",
           "check_scorer_spec",
           "SentenceScorer", "build_reward", "build_scorer", "DEFAULT_REWARD", "DEFAULT_JUDGE",
           "shipped_head_path", "default_prompts_path"]
