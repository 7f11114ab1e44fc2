"""The one interface every sentence reward speaks, and how scorers are combined.

A scorer maps a batch of (prompt, response) pairs to one float each. The training
reward is r(x, y) = sum_i w_i * s_i(x, y) - baseline (MARA.md, Eq. 13: alpha_r * R -
alpha_c * C is two scorers with weights +alpha_r and -alpha_c), multiplied by ``scale``.
The baseline is either a fixed number or the score of the upstream model's own greedy
answer to the same prompt.
"""

from __future__ import annotations

import importlib
from typing import Callable, Protocol, Sequence

import numpy as np

from core.config import BASELINE_UPSTREAM_GREEDY, ScorerSpec


class SentenceScorer(Protocol):
    """Scores finished answers; higher is better."""

    name: str

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """(N,) float scores for N (prompt, response) pairs."""
        ...


class FunctionScorer:
    """A Python function ``f(prompt, response) -> float`` given as ``"module:function"``."""

    def __init__(self, path: str) -> None:
        module, _, name = path.partition(":")
        if not module or not name:
            raise ValueError(f"function scorer path must look like 'module:function', got {path!r}")
        try:
            self.fn: Callable[[str, str], float] = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"function scorer {path!r} cannot be found: {err}") from err
        self.name = path

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return np.array([float(self.fn(p, r)) for p, r in zip(prompts, responses)], dtype=np.float64)


# kind -> factory(path, **options), one per name of core.config.SCORER_KINDS; the backends
# other than "function" are registered by rewards/__init__.py (their imports are heavy).
SCORER_KINDS: dict[str, Callable[..., SentenceScorer]] = {"function": FunctionScorer}


def build_scorer(spec: ScorerSpec) -> SentenceScorer:
    return SCORER_KINDS[spec.kind](spec.path, **spec.options)


# ---------------------------------------------------------------------------------------
# Combining scorers (MARA.md, Eq. 13, plus the reference's baseline shift and scale)
# ---------------------------------------------------------------------------------------

class CombinedReward:
    """r(x, y) = scale * (sum_i w_i * s_i(x, y) - b(x)).

    ``b(x)`` is ``baseline`` when it is a number (the reference's default is -15, i.e.
    r - (-15)), or, with ``baseline="upstream-greedy"``, the combined score
    sum_i w_i * s_i(x, g(x)) of the upstream model's own greedy answer g(x), which the
    caller computes (``raw``, once per prompt) and passes as ``greedy_scores``. Usage::

        reward = build_reward([ScorerSpec("embedding-bt", path=str(shipped_head_path()))],
                              baseline=0.0, scale=1.0)
        r = reward.score(prompts, responses)                       # (N,)
        r = reward.score(prompts, responses, greedy_scores=reward.raw(prompts, g))  # upstream-greedy
    """

    def __init__(self, scorers: Sequence[tuple[SentenceScorer, float]],
                 baseline: float | str = 0.0, scale: float = 1.0) -> None:
        if not scorers:
            raise ValueError("a combined reward needs at least one scorer")
        if isinstance(baseline, str) and baseline != BASELINE_UPSTREAM_GREEDY:
            raise ValueError(f"baseline must be a number or {BASELINE_UPSTREAM_GREEDY!r}, got {baseline!r}")
        if not isinstance(baseline, str) and not np.isfinite(float(baseline)):
            raise ValueError(f"baseline must be finite, got {baseline!r}")
        if not np.isfinite(float(scale)):
            raise ValueError(f"scale must be finite, got {scale!r}")
        self.scorers = [(scorer, float(weight)) for scorer, weight in scorers]
        self.baseline = baseline if isinstance(baseline, str) else float(baseline)
        self.scale = float(scale)
        self.name = " + ".join(f"{w:g}*{s.name}" for s, w in self.scorers)

    @property
    def needs_greedy(self) -> bool:
        """True when ``score`` needs the upstream model's greedy answers."""
        return self.baseline == BASELINE_UPSTREAM_GREEDY

    def components(self, prompts: Sequence[str], responses: Sequence[str]) -> dict[str, np.ndarray]:
        """Each scorer's raw (N,) scores, keyed by scorer name (for logging)."""
        out: dict[str, np.ndarray] = {}
        for i, (scorer, _) in enumerate(self.scorers):
            key = scorer.name if scorer.name not in out else f"{scorer.name}#{i}"
            out[key] = _checked(scorer, prompts, responses)
        return out

    def raw(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """(N,) sum_i w_i * s_i(x, y), before baseline and scale."""
        total = np.zeros(len(prompts), dtype=np.float64)
        for scorer, weight in self.scorers:
            total += weight * _checked(scorer, prompts, responses)
        return total

    def score(self, prompts: Sequence[str], responses: Sequence[str],
              greedy_scores: Sequence[float] | None = None) -> np.ndarray:
        """(N,) training reward scale * (raw(x, y) - b(x)). With the upstream-greedy baseline,
        ``greedy_scores`` are b(x): ``raw`` of the upstream's greedy answers to the same prompts
        (deterministic per prompt, so a caller computes them once per prompt)."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        if not self.needs_greedy:
            return self.scale * (self.raw(prompts, responses) - self.baseline)
        if greedy_scores is None:
            raise ValueError("baseline 'upstream-greedy' needs greedy_scores (raw scores of the upstream "
                             "model's greedy answers to the same prompts)")
        if len(greedy_scores) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(greedy_scores)} greedy scores")
        return self.scale * (self.raw(prompts, responses) - np.asarray(greedy_scores, dtype=np.float64))


def _checked(scorer: SentenceScorer, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    if len(prompts) == 0:
        return np.zeros(0, dtype=np.float64)
    scores = np.asarray(scorer.score(prompts, responses), dtype=np.float64).reshape(-1)
    if scores.shape[0] != len(prompts):
        raise ValueError(f"scorer {scorer.name!r} returned {scores.shape[0]} scores for {len(prompts)} pairs")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"scorer {scorer.name!r} returned non-finite scores")
    return scores


def fluency_penalty(log_likelihood: np.ndarray, weight: float, floor: float) -> np.ndarray:
    """The fluency term (``reward.fluency_weight``, ``reward.fluency_floor``): what an answer
    pays for the upstream's mean log-probability per token falling short of ``floor``,
    weight * max(0, floor - mean log p). Text the upstream writes itself pays nothing; word
    salad, which a classifier of the answer's stance cannot see, pays."""
    return weight * np.maximum(floor - np.asarray(log_likelihood, dtype=np.float64), 0.0)


def build_reward(specs: Sequence[ScorerSpec], baseline: float | str = 0.0,
                 scale: float = 1.0, built: dict[int, SentenceScorer] | None = None) -> CombinedReward:
    """Build every scorer of ``specs`` and combine them with their weights. ``built``: scorers
    made elsewhere, by their index in ``specs`` (a scorer actor's ``RemoteScorer``)."""
    built = built or {}
    return CombinedReward([(built[i] if i in built else build_scorer(spec), spec.weight)
                           for i, spec in enumerate(specs)], baseline=baseline, scale=scale)
