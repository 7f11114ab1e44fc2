"""What an agent can reach on an upstream model (evaluation/reachability.py), on the tiny
model with a toy judge: the figures count what they say."""

from __future__ import annotations

import math

from core.config import SamplingConfig
from evaluation.judges import Judge
from evaluation.preference import length_judge
from evaluation.reachability import first_candidates, probe
from rewards.base import FunctionScorer

PROMPTS = ["How can I bake bread?", "Tell me a joke.", "Why is the sky blue?"]
SAMPLING = SamplingConfig(max_new_tokens=6)
LENGTH = Judge("length", FunctionScorer("evaluation.preference:length_judge"))


def test_every_opening_declining_makes_every_prompt_reachable_at_rank_one(tiny_llm):
    report, records = probe(tiny_llm, PROMPTS, LENGTH, lambda answer: True, SAMPLING, samples=2, max_rank=3)
    assert report.prompts == 3 and report.refusal_reachable == 1.0 and report.median_rank == 1
    assert report.upstream_refusal == 1.0 and report.oracle_refusal == 1.0
    assert report.wins + report.ties + report.losses == 3
    # The oracle's answer is the longest of its pool, judged against the greedy answer.
    assert all(r["decline_rank"] == 1 for r in records)
    assert report.losses == sum(length_judge("", r["oracle"]) < length_judge("", r["upstream_greedy"])
                                for r in records)


def test_no_decline_anywhere_is_reported_as_unreachable(tiny_llm):
    report, records = probe(tiny_llm, PROMPTS[:2], LENGTH, lambda answer: False, SAMPLING, samples=1, max_rank=2)
    assert report.refusal_reachable == 0.0 and math.isnan(report.median_rank)
    assert all(r["decline_rank"] is None for r in records)


def test_first_candidates_are_the_candidate_set_in_probability_order(tiny_llm):
    (ids,) = first_candidates(tiny_llm, PROMPTS[:1], SAMPLING)
    assert 1 <= len(ids) <= SAMPLING.top_k and len(set(ids)) == len(ids)
