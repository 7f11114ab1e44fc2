"""Evaluation: the paper's preference rate of MARA answers over baseline answers (§4, Eq. 12).

    from evaluation.judges import Judge
    from evaluation.report import write_outputs
    from evaluation.run import run_eval
    from envs.generation import AlignedGenerator
    from core.config import ScorerSpec
    from rewards.base import build_scorer

    gen = AlignedGenerator.from_paths(agent="agent.safetensors", model="smollm2")
    judges = {"reward": Judge("reward", build_scorer(ScorerSpec("seq-cls", "OpenAssistant/...")), "helpful"),
              "cost": Judge("cost", build_scorer(ScorerSpec("score-model", "PKU-Alignment/beaver-7b-v1.0-cost")),
                            "harmless", lower_is_better=True)}
    result = run_eval(gen, [("saferlhf", prompts)], judges, num_prompts=200, seed=0)
    write_outputs(result, "eval-out")  # results.md, results.csv, answers.jsonl, *.png

For every prompt the systems answer: ``mara`` (the agent steering the upstream model),
``upstream-greedy`` (the upstream model alone, greedy), optionally ``upstream-sampled``
(the upstream model alone, sampled with the same temperature / top-k / top-p) and
``best-of-N`` (N sampled upstream answers, the best by a chosen scorer kept). Each judge
(``evaluation.judges``) scores every answer; MARA's answer wins, ties or loses against each
comparator's answer (``evaluation.preference.compare_scores``), and per prompt set and judge
the counts give the preference rate (Eq. 12, ``evaluation.preference.preference_rate``).

``evaluation.report`` and ``evaluation.plots`` turn the ``EvalResult`` into files;
``mara eval`` (``cli/eval.py``) is the command-line front end.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from evaluation.judges import Judge, source_key
from evaluation.preference import LOSE, TIE, WIN, compare_scores, is_refusal, preference_rate

if TYPE_CHECKING:  # torch / transformers stay out of this module's import
    from envs.generation import AlignedGenerator, Generation

log = logging.getLogger(__name__)

MARA = "mara"
UPSTREAM_GREEDY = "upstream-greedy"
UPSTREAM_SAMPLED = "upstream-sampled"
# Accepted-position shares: candidate indices 1..9 get a bucket each, the rest share "10+".
POSITION_BUCKETS = 10


# ----------------------------------------------------------------------------- results
@dataclass
class Comparison:
    """MARA against one comparator, on one prompt set, under one judge."""

    prompt_set: str
    comparator: str
    judge: str
    wins: int
    ties: int
    losses: int

    @property
    def rate(self) -> float:
        return preference_rate(self.wins, self.ties, self.losses)


@dataclass
class EvalResult:
    """Everything ``run_eval`` measured; ``evaluation.report.write_outputs`` turns it into files."""

    judges: list[Judge]
    systems: list[str]  # "mara" first, then the comparators
    records: list[dict]  # one per (prompt set, prompt): answers, scores, outcomes (answers.jsonl)
    comparisons: list[Comparison]
    refusal_rates: dict[tuple[str, str], float]  # (prompt set, system) -> share of refusals
    mean_scores: dict[tuple[str, str, str], float]  # (prompt set, system, judge) -> mean score
    accepted_positions: dict[str, list[int]]  # prompt set -> every accepted candidate index (1-based)
    seconds: dict[str, float]  # system -> generation wall time over all prompt sets
    settings: dict[str, object] = field(default_factory=dict)  # what produced it, for results.md
    training_reward: list[str] | None = None  # scorer sources of the agent's training reward, if known
    bon_scorer: Judge | None = None  # the scorer that picked the best-of-N answers
    # (prompt set, system) -> the upstream's mean log-probability per token of the system's
    # answers: how fluent the frozen model finds them (word salad scores low); with ``fluency``
    fluency: dict[tuple[str, str], float] = field(default_factory=dict)
    # the same over each answer's first ``opening_tokens`` tokens, the part the agent decided
    # when it has a horizon (past it the upstream continues alone); with ``fluency``
    opening_fluency: dict[tuple[str, str], float] = field(default_factory=dict)
    opening_tokens: int | None = None

    @property
    def prompt_sets(self) -> list[str]:
        return list(dict.fromkeys(r["prompt_set"] for r in self.records))

    @property
    def comparators(self) -> list[str]:
        return self.systems[1:]

    def comparison(self, prompt_set: str, comparator: str, judge: str) -> Comparison:
        for c in self.comparisons:
            if (c.prompt_set, c.comparator, c.judge) == (prompt_set, comparator, judge):
                return c
        raise KeyError((prompt_set, comparator, judge))

    def judge_is_training_reward(self, judge: Judge) -> bool | None:
        """True / False when the training reward is known, else None."""
        if self.training_reward is None:
            return None
        return source_key(judge.source) in {source_key(s) for s in self.training_reward}


def position_shares(positions: Sequence[int], buckets: int = POSITION_BUCKETS) -> dict[str, float]:
    """Share of acceptances per candidate index, indices >= ``buckets`` pooled as "10+"."""
    labels = [str(k) for k in range(1, buckets)] + [f"{buckets}+"]
    counts = Counter(min(k, buckets) for k in positions)
    total = sum(counts.values())
    return {label: (counts[k] / total if total else 0.0) for k, label in enumerate(labels, start=1)}


def subset_indices(n_total: int, num_prompts: int | None, seed: int) -> list[int]:
    """A seeded random subset of ``num_prompts`` row indices, in file order (all rows when
    ``num_prompts`` is None or not smaller than the set)."""
    if num_prompts is not None and num_prompts < 1:
        raise ValueError(f"num_prompts must be >= 1, got {num_prompts}")
    if num_prompts is None or num_prompts >= n_total:
        return list(range(n_total))
    return sorted(int(i) for i in np.random.default_rng(seed).choice(n_total, size=num_prompts, replace=False))


# ----------------------------------------------------------------------------- the evaluation
def run_eval(
    generator: "AlignedGenerator",
    prompt_sets: Sequence[tuple[str, Sequence[str]]],
    judges: dict[str, Judge],
    *,
    num_prompts: int | None = None,
    seed: int = 0,
    tie_margin: float = 0.0,
    sampled: bool = False,
    best_of_n: int = 0,
    bon_scorer: Judge | None = None,
    training_reward: list[str] | None = None,
    fluency: bool = False,
    progress: bool = True,
) -> EvalResult:
    """Answer every prompt with MARA and the comparators, judge all answers, count outcomes.

    prompt_sets: (name, prompts) pairs; duplicate prompts are dropped (first kept, with a
        warning), then each set is cut to a seeded random ``num_prompts``.
    judges: name -> Judge; a judge's direction (cost or reward) is honoured in every comparison.
    seed: the subset, the sampled upstream answers (best-of-N round k uses ``seed + k * 1_000_003``,
        round 0 being the ``upstream-sampled`` answers) and the agent's own random number
        generator (reset here, which only matters for a generator with ``greedy=False``).
    sampled: also compare with one sampled upstream answer.
    best_of_n, bon_scorer: with N >= 1, compare with the best of N sampled upstream answers
        as chosen by ``bon_scorer`` (which may, but should not, be one of the judges).
    training_reward: scorer sources ("KIND:PATH") of the agent's training reward when known,
        so the output can say which judges are not independent of training.
    fluency: also measure the upstream's mean log-likelihood per token of every system's
        answers (``envs.generation.mean_log_likelihood``; with ``sampled``, the upstream's own
        sampled answers are the reference an agent's answers should not fall below); with an
        agent horizon, also over each answer's first horizon tokens, the part the agent decided.
    """
    from tqdm.auto import tqdm

    from envs.generation import mean_per_token  # the generator has loaded torch already

    _check_eval_arguments(prompt_sets, judges, tie_margin, best_of_n, bon_scorer)
    judge_list = list(judges.values())
    bon_name = f"best-of-{best_of_n}"
    systems = [MARA, UPSTREAM_GREEDY] + ([UPSTREAM_SAMPLED] if sampled else []) + ([bon_name] if best_of_n else [])
    generator.rng = np.random.default_rng(seed)
    subsets = [(name, *_unique_subset(name, prompts, num_prompts, seed)) for name, prompts in prompt_sets]
    # Generation steps, in prompts: MARA, greedy, and the sampled rounds (sampled and best-of-N share round 0).
    rounds = max(best_of_n, 1 if sampled else 0)
    bar = tqdm(total=sum(len(p) for _, _, p in subsets) * (2 + rounds), desc="mara eval", unit="answer",
               disable=not progress)
    in_batches = _TimedBatches(max(1, generator.batch_size), bar)

    records: list[dict] = []
    comparisons: list[Comparison] = []
    refusal_rates: dict[tuple[str, str], float] = {}
    mean_scores: dict[tuple[str, str, str], float] = {}
    accepted: dict[str, list[int]] = {}
    fluency_means: dict[tuple[str, str], float] = {}
    opening_means: dict[tuple[str, str], float] = {}
    opening = generator.horizon if fluency and generator.horizon else None
    for set_name, idx, prompts in subsets:
        gens, answers, candidates = _generate_answers(generator, in_batches, set_name, prompts, seed=seed,
                                                      rounds=rounds, sampled=sampled, bon_name=bon_name)
        best = None
        if best_of_n:
            bar.set_postfix_str(f"{set_name}: best-of-{best_of_n} scoring")
            answers[bon_name], bon_scores = _best_of_n(bon_scorer, prompts, candidates[:best_of_n])
            best = (bon_scorer.name, candidates[:best_of_n], bon_scores)

        bar.set_postfix_str(f"{set_name}: judging")
        scores = {j.name: {s: j.score(prompts, answers[s]) for s in systems} for j in judge_list}  # (P,) each
        outcomes = _outcomes(scores, judge_list, systems[1:], tie_margin)
        refused = {s: [is_refusal(t) for t in answers[s]] for s in systems}

        comparisons += _count_outcomes(set_name, outcomes)
        mean_scores.update({(set_name, s, j.name): float(np.mean(scores[j.name][s]))
                            for j in judge_list for s in systems})
        refusal_rates.update({(set_name, s): float(np.mean(refused[s])) for s in systems})
        accepted[set_name] = [k for g in gens for k in g.accepted_positions]
        if fluency:
            bar.set_postfix_str(f"{set_name}: fluency")
            for s in systems:  # one forward over the answers gives both means
                per_token = generator.token_log_probs(prompts, answers[s])
                fluency_means[(set_name, s)] = float(np.mean(mean_per_token(per_token)))
                if opening:
                    opening_means[(set_name, s)] = float(np.mean(mean_per_token(per_token, opening)))
        records += _prompt_records(set_name, idx, prompts, gens, answers, scores, outcomes, refused, best)
    bar.close()

    return EvalResult(
        judges=judge_list, systems=systems, records=records, comparisons=comparisons,
        refusal_rates=refusal_rates, fluency=fluency_means, opening_fluency=opening_means, opening_tokens=opening,
        mean_scores=mean_scores, accepted_positions=accepted,
        seconds=dict(in_batches.seconds), training_reward=training_reward,
        bon_scorer=bon_scorer if best_of_n else None,
        settings=_settings(generator, seed=seed, tie_margin=tie_margin, num_prompts=num_prompts),
    )


def _check_eval_arguments(prompt_sets: Sequence[tuple[str, Sequence[str]]], judges: dict[str, Judge],
                          tie_margin: float, best_of_n: int, bon_scorer: Judge | None) -> None:
    """Refuse ``run_eval``'s arguments before anything is generated."""
    if not judges:
        raise ValueError("no judges: give at least one scorer to judge the answers")
    if tie_margin < 0:
        raise ValueError(f"tie_margin must be >= 0, got {tie_margin}")
    if best_of_n < 0:
        raise ValueError(f"best_of_n must be >= 0, got {best_of_n}")
    if best_of_n and bon_scorer is None:
        raise ValueError("best-of-N needs a scorer to pick the best answer (bon_scorer)")
    names = [name for name, _ in prompt_sets]
    if len(set(names)) != len(names):
        raise ValueError(f"prompt set names must be unique, got {names}")
    for name, judge in judges.items():
        if judge.name != name:
            raise ValueError(f"judge key {name!r} differs from its name {judge.name!r}")


def _unique_subset(name: str, prompts: Sequence[str], num_prompts: int | None,
                   seed: int) -> tuple[list[int], list[str]]:
    """(row indices, prompts) of a seeded subset of the set's distinct prompts."""
    # A prompt listed twice (e.g. BeaverTails: one row per response) would count twice.
    first, seen = [], set()
    for i, prompt in enumerate(prompts):
        if prompt not in seen:
            seen.add(prompt)
            first.append(i)
    if len(first) < len(prompts):
        log.warning("prompt set %s: %d duplicate prompt(s) dropped", name, len(prompts) - len(first))
    idx = [first[i] for i in subset_indices(len(first), num_prompts, seed)]
    return idx, [prompts[i] for i in idx]


class _TimedBatches:
    """Runs one system's generation over prompts batch by batch, advancing the progress bar
    and adding the wall time to that system's total in ``seconds``."""

    def __init__(self, batch: int, bar) -> None:
        self.batch = batch
        self.bar = bar
        self.seconds: Counter = Counter()  # system -> generation seconds

    def __call__(self, prompts: list[str], fn: Callable[[list[str], int], list], system: str, label: str) -> list:
        """``fn(batch_prompts, batch_start)`` for each batch, outputs concatenated."""
        out = []
        self.bar.set_postfix_str(label)
        start_time = time.perf_counter()
        for start in range(0, len(prompts), self.batch):
            out.extend(fn(prompts[start:start + self.batch], start))
            self.bar.update(len(prompts[start:start + self.batch]))
        self.seconds[system] += time.perf_counter() - start_time
        return out


def _generate_answers(generator: "AlignedGenerator", in_batches: _TimedBatches, set_name: str, prompts: list[str],
                      *, seed: int, rounds: int, sampled: bool,
                      bon_name: str) -> tuple[list["Generation"], dict[str, list[str]], list[list[str]]]:
    """MARA's generations, the answers (system -> (P,) texts) of MARA, the greedy upstream
    model and, with ``sampled``, one sampled upstream answer, and the sampled upstream
    candidates (round -> (P,) texts; round k seeded ``seed + k * 1_000_003`` plus the batch start)."""
    gens: list[Generation] = in_batches(prompts, lambda p, s: generator.generate(p), MARA, f"{set_name}: MARA")
    answers = {MARA: [g.text for g in gens]}
    answers[UPSTREAM_GREEDY] = in_batches(prompts, lambda p, s: generator.generate_upstream(p), UPSTREAM_GREEDY,
                                          f"{set_name}: upstream greedy")
    candidates: list[list[str]] = []  # round -> answers
    for k in range(rounds):
        round_seed = seed + k * 1_000_003
        candidates.append(in_batches(
            prompts, lambda p, s, rs=round_seed: generator.generate_upstream(p, sample=True, seed=rs + s),
            UPSTREAM_SAMPLED if (k == 0 and sampled) else bon_name, f"{set_name}: upstream sampled {k + 1}/{rounds}"))
    if sampled:
        answers[UPSTREAM_SAMPLED] = candidates[0]
    return gens, answers, candidates


def _best_of_n(scorer: Judge, prompts: list[str], candidates: list[list[str]]) -> tuple[list[str], np.ndarray]:
    """Per prompt, the best of the N candidate answers by ``scorer``, and the (P, N) scores."""
    scores = np.stack([scorer.score(prompts, c) for c in candidates], axis=1)  # (P, N)
    return [candidates[scorer.best(row)][i] for i, row in enumerate(scores)], scores


def _outcomes(scores: dict[str, dict[str, np.ndarray]], judges: list[Judge], comparators: list[str],
              tie_margin: float) -> dict[str, dict[str, list[str]]]:
    """judge -> comparator -> per prompt, MARA's outcome (win / tie / lose) against the comparator."""
    return {j.name: {c: [compare_scores(a, b, tie_margin, j.lower_is_better)
                         for a, b in zip(scores[j.name][MARA], scores[j.name][c])]
                     for c in comparators} for j in judges}


def _count_outcomes(set_name: str, outcomes: dict[str, dict[str, list[str]]]) -> list[Comparison]:
    """One ``Comparison`` (win / tie / lose counts) per judge and comparator."""
    comparisons = []
    for judge, by_comparator in outcomes.items():
        for comparator, results in by_comparator.items():
            counts = Counter(results)
            comparisons.append(Comparison(set_name, comparator, judge, counts[WIN], counts[TIE], counts[LOSE]))
    return comparisons


def _prompt_records(set_name: str, idx: list[int], prompts: list[str], gens: list["Generation"],
                    answers: dict[str, list[str]], scores: dict[str, dict[str, np.ndarray]],
                    outcomes: dict[str, dict[str, list[str]]], refused: dict[str, list[bool]],
                    best: tuple[str, list[list[str]], np.ndarray] | None) -> list[dict]:
    """answers.jsonl: one record per prompt. ``best``: (scorer name, round -> candidates,
    (P, N) scores) of best-of-N, or None."""
    records = []
    for i, prompt in enumerate(prompts):
        record = {
            "prompt_set": set_name, "index": idx[i], "prompt": prompt,
            "answers": {s: texts[i] for s, texts in answers.items()},
            "scores": {j: {s: float(v[i]) for s, v in by_system.items()} for j, by_system in scores.items()},
            "outcomes": {j: {c: v[i] for c, v in by_comparator.items()} for j, by_comparator in outcomes.items()},
            "refusal": {s: flags[i] for s, flags in refused.items()},
            "mara": {"num_tokens": gens[i].num_tokens, "num_decisions": gens[i].num_decisions,
                     "num_fallbacks": gens[i].num_fallbacks, "finish_reason": gens[i].finish_reason,
                     "accepted_positions": gens[i].accepted_positions},
        }
        if best is not None:
            scorer_name, candidates, bon_scores = best
            record["best_of_n"] = {"scorer": scorer_name, "candidates": [c[i] for c in candidates],
                                   "scores": [float(x) for x in bon_scores[i]]}
        records.append(record)
    return records


def _settings(generator: "AlignedGenerator", *, seed: int, tie_margin: float,
              num_prompts: int | None) -> dict[str, object]:
    """What produced the result, for results.md."""
    sampling, draw = generator.sampling, generator.draw
    return {"seed": seed, "tie margin": tie_margin, "prompts per set": num_prompts or "all",
            "max new tokens": sampling.max_new_tokens,
            "candidate set (temperature / top-k / top-p)": f"{sampling.temperature} / {sampling.top_k} / {sampling.top_p}",
            "draw (temperature / top-k / top-p; -: the candidate set's)": " / ".join(
                "-" if v is None else str(v) for v in (draw.temperature, draw.top_k, draw.top_p)),
            "agent decisions": "greedy" if generator.greedy or draw.greedy else "sampled",
            "agent horizon": "all tokens" if generator.horizon is None else f"{generator.horizon} tokens",
            "upstream's continuation past the horizon": "none" if generator.horizon is None else generator.continuation,
            "decoding mode": generator.mode}
