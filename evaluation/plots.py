"""The evaluation's figures, drawn on bare matplotlib Figures (no pyplot, no display needed).

    plot_accepted_positions(result.accepted_positions, "accepted_positions.png")  # paper Fig. 3
    plot_scores(result, "scores.png")  # one panel per prompt set x judge, a box per system
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evaluation.run import EvalResult, position_shares


def new_figure(width: float, height: float):
    # A bare Figure on the Agg canvas: no pyplot, no global backend switch, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_accepted_positions(accepted: dict[str, list[int]], path: str | Path) -> None:
    """Fig. 3 style: share of acceptances per candidate index (1..9, 10+), one bar group per set."""
    fig = new_figure(7, 3.5)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(accepted))
    for i, (name, positions) in enumerate(accepted.items()):
        share = position_shares(positions)
        x = np.arange(len(share)) + (i - (len(accepted) - 1) / 2) * width
        ax.bar(x, [100 * v for v in share.values()], width, label=f"{name} (n={len(positions)})")
        ax.set_xticks(np.arange(len(share)), list(share))
    ax.set_xlabel("accepted candidate index")
    ax.set_ylabel("share of acceptances (%)")
    ax.set_title("MARA accepted-position distribution")
    if not any(accepted.values()):
        ax.text(0.5, 0.5, "no accept/reject decisions", ha="center", va="center", transform=ax.transAxes)
    ax.legend()
    fig.savefig(str(path), dpi=120)


def plot_scores(result: EvalResult, path: str | Path) -> None:
    """Score distributions: one panel per prompt set (rows) and judge (columns), one box
    with its points per system."""
    judges, sets = result.judges, result.prompt_sets
    fig = new_figure(max(4.5, 1.4 * len(result.systems)) * len(judges), 3.6 * len(sets))
    rng = np.random.default_rng(0)  # jitter only
    for row, ps in enumerate(sets):
        records = [r for r in result.records if r["prompt_set"] == ps]
        for col, j in enumerate(judges):
            ax = fig.add_subplot(len(sets), len(judges), row * len(judges) + col + 1)
            data = [[r["scores"][j.name][s] for r in records] for s in result.systems]
            ax.boxplot(data, showfliers=False)
            for i, values in enumerate(data, start=1):
                ax.scatter(i + rng.uniform(-0.12, 0.12, len(values)), values, s=8, alpha=0.5)
            ax.set_xticks(np.arange(1, len(result.systems) + 1), result.systems, rotation=20)
            ax.set_title(f"{ps}: {j.name} ({j.role}; {'lower' if j.lower_is_better else 'higher'} is better)",
                         fontsize=9)
            ax.set_ylabel("score")
    fig.savefig(str(path), dpi=120)
