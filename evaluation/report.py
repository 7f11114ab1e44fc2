"""The written results of an evaluation: results.md, results.csv, answers.jsonl, and the plots.

    paths = write_outputs(result, "eval-out")   # name -> Path of each file written
    print(paths["results.md"].read_text())

``results_markdown`` is the paper-style table (rows prompt set x comparator, columns the
judges' preference rates), followed by the judges, the mean scores and refusal rates, the
accepted positions, a few answers side by side (``pick_examples``) and the settings;
``results_rows`` is the same table for results.csv.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

from core.atomic import atomic_path
from evaluation.answers_file import write_records
from evaluation.plots import plot_accepted_positions, plot_scores
from evaluation.preference import LOSE, WIN, decline_openings
from evaluation.run import MARA, EvalResult, position_shares

# results.md shows this many differing answers per prompt set where MARA wins, and as many where it loses.
EXAMPLES_PER_OUTCOME = 2


def write_outputs(result: EvalResult, out_dir: str | Path) -> dict[str, Path]:
    """Write answers.jsonl, results.csv, accepted_positions.png, scores.png and, last (it
    marks the evaluation finished, ``evaluation.answers_file.FINISHED``), results.md."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in
             ("results.md", "results.csv", "answers.jsonl", "accepted_positions.png", "scores.png")}
    write_records(paths["answers.jsonl"], result.records)  # replaces the one appended batch by batch
    header, rows = results_rows(result)
    with open(paths["results.csv"], "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    plot_accepted_positions(result.accepted_positions, paths["accepted_positions.png"])
    plot_scores(result, paths["scores.png"])
    with atomic_path(paths["results.md"]) as tmp:
        tmp.write_text(results_markdown(result), encoding="utf-8")
    return paths


def results_rows(result: EvalResult) -> tuple[list[str], list[list]]:
    """results.csv: one row per prompt set x comparator (the table's rows), with counts."""
    header = ["prompt_set", "comparator", "n"]
    for j in result.judges:
        header += [f"{j.name}_{k}" for k in ("win", "tie", "lose", "rate")]
        header += [f"{j.name}_mean_mara", f"{j.name}_mean_comparator"]
    header += ["refusal_mara", "refusal_comparator"]
    rows = []
    for ps in result.prompt_sets:
        for comp in result.comparators:
            row: list = [ps, comp, None]
            for j in result.judges:
                c = result.comparison(ps, comp, j.name)
                row[2] = c.wins + c.ties + c.losses
                row += [c.wins, c.ties, c.losses, round(c.rate, 4),
                        round(result.mean_scores[(ps, MARA, j.name)], 6),
                        round(result.mean_scores[(ps, comp, j.name)], 6)]
            row += [round(result.refusal_rates[(ps, MARA)], 4), round(result.refusal_rates[(ps, comp)], 4)]
            rows.append(row)
    return header, rows


def results_markdown(result: EvalResult) -> str:
    """The paper-style table: rows prompt set x comparator, columns the judges' preference rates."""
    lines = ["# MARA evaluation", "",
             "Preference rate of MARA over each comparator, w = (N_win - N_lose) / (N_win + N_tie + N_lose) x 100% "
             "(Eq. 12), with (win/tie/lose) counts. Positive: MARA's answers are preferred.", ""]
    head = ["Prompt set", "MARA vs.", "n"] + [f"{j.name} ({j.role})" for j in result.judges] \
        + ["refusal MARA", "refusal comparator"]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    for ps in result.prompt_sets:
        for comp in result.comparators:
            cells = [ps, comp]
            n = 0
            for j in result.judges:
                c = result.comparison(ps, comp, j.name)
                n = c.wins + c.ties + c.losses
                cells.append(f"{c.rate:+.2f}% ({c.wins}/{c.ties}/{c.losses})")
            cells.insert(2, str(n))
            cells += [f"{100 * result.refusal_rates[(ps, MARA)]:.1f}%", f"{100 * result.refusal_rates[(ps, comp)]:.1f}%"]
            lines.append("| " + " | ".join(cells) + " |")

    lines += ["", "## Judges", ""]
    for j in result.judges:
        also = result.judge_is_training_reward(j)
        note = {True: "ALSO the training reward (not independent evidence)",
                False: "not the training reward", None: "training reward unknown"}[also]
        lines.append(f"- **{j.name}**: {j.role}, {j.direction}; `{j.source or type(j.scorer).__name__}`; {note}")
    if result.training_reward is not None:
        lines.append(f"- training reward of the agent: {', '.join(f'`{s}`' for s in result.training_reward) or 'none recorded'}")
    else:
        lines.append("- training reward of the agent: unknown (not recorded in the agent file)")
    bon = result.bon_scorer
    if bon is not None:
        same = [j.name for j in result.judges if j is bon or (bon.source and j.source == bon.source)]
        lines.append(f"- best-of-N picks by: {bon.name} (`{bon.source or type(bon.scorer).__name__}`, {bon.direction})"
                     + (f"; it is also the judge {same[0]!r}, which therefore favours best-of-N" if same else ""))

    lines += ["", "## Mean judge scores and refusal rates", ""]
    head = ["Prompt set", "system"] + [j.name for j in result.judges] + ["refusal", "= upstream greedy"] \
        + (["fluency (mean log p)"] if result.fluency else []) \
        + ([f"fluency, first {result.opening_tokens} tokens"] if result.opening_fluency else [])
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    for ps in result.prompt_sets:
        for s in result.systems:
            cells = [ps, s] + [f"{result.mean_scores[(ps, s, j.name)]:.4g}" for j in result.judges] \
                + [f"{100 * result.refusal_rates[(ps, s)]:.1f}%", f"{100 * result.identical_rates[(ps, s)]:.1f}%"] \
                + ([f"{result.fluency[(ps, s)]:.3f}"] if result.fluency else []) \
                + ([f"{result.opening_fluency[(ps, s)]:.3f}"] if result.opening_fluency else [])
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Refusals are detected by a phrase heuristic (`evaluation.preference.is_refusal`). "
                 "= upstream greedy: the share of answers identical to the upstream's greedy answer.")
    if result.fluency:
        lines.append("Fluency: the upstream model's mean log-probability per token of the answers (higher is more "
                     "fluent; word salad scores far below the upstream's own sampled answers).")
    if result.opening_fluency:
        lines.append(f"Fluency, first {result.opening_tokens} tokens: the same over the part of each answer the agent "
                     "decided (its horizon); past it the upstream continues alone.")

    lines += ["", "## Decline openings", "",
              "The most common openings (first 6 words) of each system's declining answers, with their share of "
              "the system's answers in the set.", ""]
    for ps in result.prompt_sets:
        for s in result.systems:
            answers = [r["answers"][s] for r in result.records if r["prompt_set"] == ps]
            common = decline_openings(answers)
            text = "; ".join(f'"{opening} …" {100 * n / len(answers):.1f}%' for opening, n in common) or "none"
            lines.append(f"- {ps}, {s}: {text}")

    lines += ["", "## Accepted positions", ""]
    for ps, positions in result.accepted_positions.items():
        share = position_shares(positions)
        text = ", ".join(f"{k}: {100 * v:.1f}%" for k, v in share.items()) if positions else "no decisions"
        lines.append(f"- {ps} ({len(positions)} acceptances): {text}")

    lines += _examples_markdown(result)

    lines += ["", "## Settings", ""]
    lines += [f"- {k}: {v}" for k, v in result.settings.items()]
    lines += [f"- generation time, {s}: {t:.1f} s" for s, t in result.seconds.items()]
    return "\n".join(lines) + "\n"


def pick_examples(records: Sequence[dict], comparator: str, judge: str,
                  per_outcome: int = EXAMPLES_PER_OUTCOME) -> list[dict]:
    """A few records where MARA's answer differs from the comparator's: the first wins, then
    the first losses under ``judge`` (both, so the examples do not only show MARA at its best)."""
    differing = [r for r in records if r["answers"][MARA] != r["answers"][comparator]]
    picked = []
    for outcome in (WIN, LOSE):
        picked += [r for r in differing if r["outcomes"][judge][comparator] == outcome][:per_outcome]
    return picked


def _examples_markdown(result: EvalResult) -> list[str]:
    """Side-by-side answers for results.md, against the first comparator under the first judge."""
    if not result.judges or not result.comparators:
        return []
    comp, judge = result.comparators[0], result.judges[0].name
    lines = ["", f"## Examples: MARA vs. {comp} (outcome by {judge})", ""]
    for ps in result.prompt_sets:
        picked = pick_examples([r for r in result.records if r["prompt_set"] == ps], comp, judge)
        for r in picked:
            lines += [f"**{ps} #{r['index']}, MARA {r['outcomes'][judge][comp]}s.** {_one_line(r['prompt'])}", "",
                      f"- MARA: {_one_line(r['answers'][MARA])}", f"- {comp}: {_one_line(r['answers'][comp])}", ""]
        if not picked:
            lines += [f"- {ps}: MARA's answers equal {comp}'s on every prompt", ""]
    return lines


def _one_line(text: str) -> str:
    """Text for a markdown list item: one line."""
    return " ".join(text.split()) or "(empty)"
