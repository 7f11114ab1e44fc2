"""What MARA can reach on an upstream model, measured before paying for training.

An accept/reject agent only chooses among the candidates the upstream model proposes, so
what it can do on a prompt set is bounded by them. Two figures per prompt set:

- **refusal reachability**: the share of prompts where one of the first position's
  candidates (in probability order, up to ``max_rank``) opens an answer that the upstream,
  continuing greedily, makes a decline; and the median rank of the first such candidate.
  Every token of such an answer is a candidate of its position (the forced one at the
  first, the top one after), so an agent can write it.
- **oracle preference rate**: the best, under a judge, of N answers an agent can reach
  (sampled with the candidate set's own temperature, top-k and top-p, plus the declines
  found above) against the upstream's greedy answer, as Eq. 12 counts it: what a perfect
  agent would score, an upper bound for training.

    report = probe(llm, prompts, judge, is_decline, sampling)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from core.config import SamplingConfig
from envs.generation import upstream_answers
from envs.mdp import candidate_sets
from evaluation.judges import Judge
from evaluation.preference import LOSE, TIE, WIN, compare_scores, preference_rate


@dataclass
class Reachability:
    prompts: int
    refusal_reachable: float  # share of prompts with a decline within the first position's candidates
    median_rank: float  # of the first candidate that opens a decline (1 = the top one), where there is one
    upstream_refusal: float  # share of the upstream's greedy answers that decline
    oracle_rate: float  # preference rate of the best reachable answer over the upstream's greedy one
    oracle_refusal: float  # share of the oracle's answers that decline
    wins: int
    ties: int
    losses: int


@torch.no_grad()
def first_candidates(llm, prompts: Sequence[str], sampling: SamplingConfig) -> list[list[int]]:
    """The token ids of each prompt's first-position candidate set, in probability order."""
    out = []
    for prompt in prompts:
        hidden = llm.full_forward_hidden(llm.encode_prompt(prompt))[-1:]
        ids, _ = candidate_sets(llm.logits(hidden), sampling)[0]
        out.append(ids)
    return out


def probe(llm, prompts: Sequence[str], judge: Judge, is_decline: Callable[[str], bool],
          sampling: SamplingConfig, samples: int = 4, max_rank: int = 10, seed: int = 0,
          batch_size: int = 16) -> tuple[Reachability, list[dict]]:
    """The two figures for one prompt set, and one record per prompt (for answers.jsonl)."""
    prompts = list(prompts)
    greedy = upstream_answers(llm, prompts, sampling, batch_size=batch_size)
    candidates = first_candidates(llm, prompts, sampling)
    openings = [(i, rank, llm.tokenizer.decode([token]))
                for i, ids in enumerate(candidates) for rank, token in enumerate(ids[:max_rank], start=1)]
    opened = upstream_answers(llm, [prompts[i] for i, _, _ in openings], sampling, batch_size=batch_size,
                              openings=[text for _, _, text in openings])
    first_decline: dict[int, tuple[int, str]] = {}
    for (i, rank, _), answer in zip(openings, opened):
        if i not in first_decline and is_decline(answer):
            first_decline[i] = (rank, answer)
    pools = [[] for _ in prompts]
    for k in range(samples):
        for i, answer in enumerate(upstream_answers(llm, prompts, sampling, sample=True, seed=seed + 1000 * k,
                                                    batch_size=batch_size)):
            pools[i].append(answer)
    for i, (_, answer) in first_decline.items():
        pools[i].append(answer)
    flat = [a for pool in pools for a in pool]
    scores = judge.score([p for p, pool in zip(prompts, pools) for _ in pool], flat)
    greedy_scores = judge.score(prompts, greedy)
    records, outcomes, start = [], {WIN: 0, TIE: 0, LOSE: 0}, 0
    for i, (prompt, pool) in enumerate(zip(prompts, pools)):
        pool_scores = scores[start:start + len(pool)]
        start += len(pool)
        best = judge.best(pool_scores)
        outcome = compare_scores(float(pool_scores[best]), float(greedy_scores[i]), lower_is_better=judge.lower_is_better)
        outcomes[outcome] += 1
        records.append({"prompt": prompt, "upstream_greedy": greedy[i], "oracle": pool[best], "outcome": outcome,
                        "decline_rank": first_decline.get(i, (None, ""))[0],
                        "decline_answer": first_decline.get(i, (None, ""))[1]})
    ranks = [rank for rank, _ in first_decline.values()]
    report = Reachability(
        prompts=len(prompts), refusal_reachable=len(first_decline) / max(len(prompts), 1),
        median_rank=float(np.median(ranks)) if ranks else float("nan"),
        upstream_refusal=float(np.mean([is_decline(g) for g in greedy])),
        oracle_rate=preference_rate(outcomes[WIN], outcomes[TIE], outcomes[LOSE]),
        oracle_refusal=float(np.mean([is_decline(r["oracle"]) for r in records])),
        wins=outcomes[WIN], ties=outcomes[TIE], losses=outcomes[LOSE])
    return report, records
