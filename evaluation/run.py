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

import contextlib
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
    # (prompt set, system) -> share of the system's answers identical to the upstream's greedy answer
    # (an aligner should leave alone what needs no fixing)
    identical_rates: dict[tuple[str, str], float] = field(default_factory=dict)

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
    done: Sequence[dict] = (),
    on_batch: Callable[[list[dict]], None] | None = None,
) -> EvalResult:
    """Answer every prompt with MARA and the comparators, judge all answers, count outcomes.

    The work goes batch by batch (``generator.batch_size`` prompts of a set): each batch's
    prompts are answered by every system, judged and (with ``fluency``) scored, and their
    records go to ``on_batch`` (``mara eval`` appends them to answers.jsonl), so an
    interrupted evaluation loses at most one batch. ``done``: records of an earlier,
    interrupted run with the same arguments (``mara eval --resume``); their batches are not
    answered again. Every figure of the result is computed from the records
    (``summarise``), so a resumed evaluation ends with the table an uninterrupted one gives.

    prompt_sets: (name, prompts) pairs; duplicate prompts are dropped (first kept, with a
        warning), then each set is cut to a seeded random ``num_prompts``.
    judges: name -> Judge; a judge's direction (cost or reward) is honoured in every comparison.
    seed: the subset, the sampled upstream answers (best-of-N round k uses ``seed + k * 1_000_003``,
        round 0 being the ``upstream-sampled`` answers, plus the batch's start in its set) and
        the agent's own random number generator (seeded per batch, which only matters for a
        generator with sampled decisions).
    sampled: also compare with one sampled upstream answer.
    best_of_n, bon_scorer: with N >= 1, compare with the best of N sampled upstream answers
        as chosen by ``bon_scorer`` (which may, but should not, be one of the judges).
    training_reward: scorer sources ("KIND:PATH") of the agent's training reward when known,
        so the output can say which judges are not independent of training.
    fluency: also measure the upstream's mean log-likelihood per token of every system's
        answers (``envs.generation.answer_token_log_probs``; with ``sampled``, the upstream's own
        sampled answers are the reference an agent's answers should not fall below); with an
        agent horizon, also over each answer's first horizon tokens, the part the agent decided.
    """
    from tqdm.auto import tqdm

    _check_eval_arguments(prompt_sets, judges, tie_margin, best_of_n, bon_scorer)
    judge_list = list(judges.values())
    bon_name = f"best-of-{best_of_n}"
    systems = [MARA, UPSTREAM_GREEDY] + ([UPSTREAM_SAMPLED] if sampled else []) + ([bon_name] if best_of_n else [])
    subsets = [(name, *_unique_subset(name, prompts, num_prompts, seed)) for name, prompts in prompt_sets]
    opening = generator.horizon if fluency and generator.horizon else None
    batch = _BatchAnswers(generator, judge_list, systems, seed=seed, tie_margin=tie_margin, sampled=sampled,
                          best_of_n=best_of_n, bon_scorer=bon_scorer, fluency=fluency, opening=opening)
    finished = {(r["prompt_set"], r["index"]): r for r in done}
    bar = tqdm(total=sum(len(p) for _, _, p in subsets), desc="mara eval", unit="prompt", disable=not progress)
    records: list[dict] = []
    for set_number, (set_name, idx, prompts) in enumerate(subsets):
        for start in range(0, len(prompts), max(1, generator.batch_size)):
            rows = range(start, min(start + max(1, generator.batch_size), len(prompts)))
            if all((set_name, idx[i]) in finished for i in rows):
                new = [finished[(set_name, idx[i])] for i in rows]
                changed = [r["index"] for r, i in zip(new, rows) if r["prompt"] != prompts[i]]
                if changed:
                    raise ValueError(f"prompt set {set_name} changed since its answers were recorded "
                                     f"(rows {changed[:5]}): start a new evaluation")
            else:
                bar.set_postfix_str(f"{set_name}: prompts {start + 1}-{rows[-1] + 1}")
                new = batch(set_name, set_number, [idx[i] for i in rows], [prompts[i] for i in rows], start)
                if on_batch is not None:
                    on_batch(new)
            records += new
            bar.update(len(rows))
    bar.close()
    return summarise(records, judge_list, systems, opening_tokens=opening, training_reward=training_reward,
                     bon_scorer=bon_scorer if best_of_n else None,
                     settings=_settings(generator, seed=seed, tie_margin=tie_margin, num_prompts=num_prompts))


def summarise(records: list[dict], judges: list[Judge], systems: list[str], *, opening_tokens: int | None = None,
              training_reward: list[str] | None = None, bon_scorer: Judge | None = None,
              settings: dict | None = None) -> EvalResult:
    """Every figure of an evaluation from its records (answers.jsonl): outcome counts, mean
    scores, refusal rates and fluency per prompt set, accepted positions, generation time."""
    comparisons: list[Comparison] = []
    mean_scores: dict[tuple[str, str, str], float] = {}
    refusal_rates: dict[tuple[str, str], float] = {}
    identical: dict[tuple[str, str], float] = {}
    fluency: dict[tuple[str, str], float] = {}
    opening: dict[tuple[str, str], float] = {}
    accepted: dict[str, list[int]] = {}
    for set_name in dict.fromkeys(r["prompt_set"] for r in records):
        rows = [r for r in records if r["prompt_set"] == set_name]
        for j in judges:
            for comparator in systems[1:]:
                counts = Counter(r["outcomes"][j.name][comparator] for r in rows)
                comparisons.append(Comparison(set_name, comparator, j.name, counts[WIN], counts[TIE], counts[LOSE]))
            mean_scores.update({(set_name, s, j.name): float(np.mean([r["scores"][j.name][s] for r in rows]))
                                for s in systems})
        refusal_rates.update({(set_name, s): float(np.mean([r["refusal"][s] for r in rows])) for s in systems})
        identical.update({(set_name, s): float(np.mean([r["answers"][s] == r["answers"][UPSTREAM_GREEDY] for r in rows]))
                          for s in systems})
        if "fluency" in rows[0]:
            fluency.update({(set_name, s): float(np.mean([r["fluency"][s] for r in rows])) for s in systems})
        if opening_tokens and "opening_fluency" in rows[0]:
            opening.update({(set_name, s): float(np.mean([r["opening_fluency"][s] for r in rows])) for s in systems})
        accepted[set_name] = [k for r in rows for k in r["mara"]["accepted_positions"]]
    seconds = Counter()
    for r in records:
        seconds.update(r.get("seconds", {}))
    return EvalResult(
        judges=judges, systems=systems, records=records, comparisons=comparisons, refusal_rates=refusal_rates,
        identical_rates=identical,
        fluency=fluency, opening_fluency=opening, opening_tokens=opening_tokens if opening else None,
        mean_scores=mean_scores, accepted_positions=accepted, seconds={s: seconds[s] for s in systems if s in seconds},
        training_reward=training_reward, bon_scorer=bon_scorer, settings=dict(settings or {}),
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


@dataclass
class _BatchAnswers:
    """One batch of a prompt set, answered by every system, judged and scored: its records."""

    generator: "AlignedGenerator"
    judges: list[Judge]
    systems: list[str]
    seed: int
    tie_margin: float
    sampled: bool
    best_of_n: int
    bon_scorer: Judge | None
    fluency: bool
    opening: int | None  # with fluency: also over the answers' first tokens (the agent's horizon)

    def __call__(self, set_name: str, set_number: int, idx: list[int], prompts: list[str], start: int) -> list[dict]:
        """``start``: the batch's first row in its set (seeds the sampled answers as the set's
        position, so a batch answers the same whenever it runs)."""
        from envs.generation import mean_per_token  # the generator has loaded torch already

        gen = self.generator
        gen.rng = np.random.default_rng([self.seed, set_number, start])  # the agent's sampled decisions
        seconds: Counter = Counter()
        with _timed(seconds, MARA):
            gens = gen.generate(prompts)
        answers = {MARA: [g.text for g in gens]}
        with _timed(seconds, UPSTREAM_GREEDY):
            answers[UPSTREAM_GREEDY] = gen.generate_upstream(prompts)
        candidates: list[list[str]] = []  # round -> answers
        bon_name = f"best-of-{self.best_of_n}"
        for k in range(max(self.best_of_n, 1 if self.sampled else 0)):
            with _timed(seconds, UPSTREAM_SAMPLED if (k == 0 and self.sampled) else bon_name):
                candidates.append(gen.generate_upstream(prompts, sample=True, seed=self.seed + k * 1_000_003 + start))
        if self.sampled:
            answers[UPSTREAM_SAMPLED] = candidates[0]
        best = None
        if self.best_of_n:
            answers[bon_name], bon_scores = _best_of_n(self.bon_scorer, prompts, candidates[:self.best_of_n])
            best = (self.bon_scorer.name, candidates[:self.best_of_n], bon_scores)
        scores = {j.name: {s: j.score(prompts, answers[s]) for s in self.systems} for j in self.judges}  # (P,) each
        outcomes = _outcomes(scores, self.judges, self.systems[1:], self.tie_margin)
        refused = {s: [is_refusal(t) for t in answers[s]] for s in self.systems}
        records = _prompt_records(set_name, idx, prompts, gens, answers, scores, outcomes, refused, best)
        if self.fluency:
            for s in self.systems:  # one forward over the answers gives both means
                per_token = gen.token_log_probs(prompts, answers[s])
                for record, whole in zip(records, mean_per_token(per_token)):
                    record.setdefault("fluency", {})[s] = float(whole)
                if self.opening:
                    for record, first in zip(records, mean_per_token(per_token, self.opening)):
                        record.setdefault("opening_fluency", {})[s] = float(first)
        for record in records:  # the batch's generation time, shared by its prompts
            record["seconds"] = {s: t / len(records) for s, t in seconds.items()}
        return records


@contextlib.contextmanager
def _timed(seconds: Counter, system: str):
    """Add the wall time of the block to ``seconds[system]``."""
    started = time.perf_counter()
    yield
    seconds[system] += time.perf_counter() - started


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
            "agent decisions": ("sampled" if not (generator.greedy or draw.greedy)
                                else f"greedy (accept threshold {generator.accept_threshold}: "
                                     "then 0.5 after the agent's first rejection)"),
            "request gate (the agent decides only the requests it flags)":
                "off (every request)" if generator.request_gate is None else str(generator.request_gate),
            "a declined answer ends with its sentence": "off" if generator.decline_sentences is None
                else generator.decline_sentences,
            "agent horizon": "all tokens" if generator.horizon is None else f"{generator.horizon} tokens",
            "upstream's continuation past the horizon": "none" if generator.horizon is None else generator.continuation,
            "decoding mode": generator.mode}
