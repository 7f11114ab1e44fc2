"""The request gate's recipe: which requests the agent may touch, as the strong readers judge them.

The readers say of every request they read whether it is harmful or benign (docs/RUBRIC.md §1;
``reader_request`` of the labelled rows), and they call about 40% of the harmful prompt pools'
requests benign. The gate is fitted to those verdicts rather than to where a prompt came from:

    g(x) = sigmoid(w . f(x) + b)

on the request features f(x) of the safety reward's gate (``rewards.response_class.Features``:
the MiniLM embedding and hashed word n-grams), by logistic regression with balanced class weights
and an L2 penalty, on the ``reward`` and ``judge`` rows' requests (the majority verdict of each).
Its threshold is set on the ``validation`` requests: the gate flags as many of the reader-harmful
ones as a reference gate does (the safety reward's), and leaves alone as many reader-benign ones as
it can at that recall. The threshold is folded into b, so the gate's own 0.5 applies
(``rewards.request_gate.GATE_THRESHOLD``).
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np

FIT_SPLITS = ("reward", "judge")
L2_C = 10.0  # inverse L2 strength: 5-fold cross-validation on the fit requests (docs/results/reader-gate/probe.py)


def reader_requests(rows: Sequence[dict]) -> dict[tuple[str, str], bool]:
    """(split, prompt) -> harmful, by the majority of the readers' verdicts on the request."""
    votes: dict[tuple[str, str], Counter] = {}
    for number, row in enumerate(rows, 1):
        verdict = row.get("reader_request") if isinstance(row, dict) else None
        if verdict not in ("harmful", "benign") or not isinstance(row.get("prompt"), str) or "split" not in row:
            raise ValueError(f"labelled row {number}: needs a split, a prompt and reader_request 'harmful' or "
                             f"'benign', got {verdict!r}")
        votes.setdefault((row["split"], row["prompt"]), Counter())[verdict] += 1
    return {key: v.most_common(1)[0][0] == "harmful" for key, v in votes.items()}


def fit_logistic(x: np.ndarray, harmful: np.ndarray, c: float = L2_C) -> tuple[np.ndarray, float]:
    """(w, b) minimising 1/2 |w|^2 + c * sum_i m_i * logloss_i, m_i balancing the two classes
    (n / (2 n_class)); the problem is convex, so L-BFGS finds its one minimum."""
    import torch

    if harmful.all() or not harmful.any():
        raise ValueError("the gate needs both harmful and benign requests to fit")
    xt = torch.tensor(x, dtype=torch.float64)
    y = torch.tensor(harmful, dtype=torch.float64)
    n_harmful = float(harmful.sum())
    weight = torch.where(y > 0, len(y) / (2 * n_harmful), len(y) / (2 * (len(y) - n_harmful)))
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([w, b], max_iter=5000, tolerance_grad=1e-10, tolerance_change=1e-14,
                                  history_size=50, line_search_fn="strong_wolfe")

    def objective():
        optimiser.zero_grad()
        logloss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, y, reduction="none")
        loss = 0.5 * w.pow(2).sum() + c * (weight * logloss).sum()
        loss.backward()
        return loss

    optimiser.step(objective)
    return w.detach().numpy(), float(b.detach())


def threshold_at_recall(logits: np.ndarray, harmful: np.ndarray, recall: float) -> float:
    """The logit above which the gate flags ``recall`` of the harmful requests."""
    return float(np.quantile(logits[harmful], 1 - recall))


def fit_gate(fit_features: np.ndarray, fit_harmful: np.ndarray, valid_features: np.ndarray,
             valid_harmful: np.ndarray, recall: float, c: float = L2_C) -> tuple[np.ndarray, float]:
    """(w, b) of the gate: fitted on the fit requests, its threshold (folded into b) flagging
    ``recall`` of the harmful validation requests."""
    if not valid_harmful.any() or not 0 < recall <= 1:
        raise ValueError(f"the gate's threshold needs harmful validation requests and a recall in (0, 1], got "
                         f"{int(valid_harmful.sum())} and {recall}")
    w, b = fit_logistic(fit_features, fit_harmful, c)
    return w, b - threshold_at_recall(valid_features @ w + b, valid_harmful, recall)


def write_gate(path, reference_path, weight: np.ndarray, bias: float, metadata: dict):
    """A response-class head file whose gate is the linear (w, b) over the reference file's
    request features; the reference's answer-stance head is kept (the gate does not read it)."""
    import torch

    from rewards.response_class import Features, load_heads, make_heads, save_heads

    reference, features, meta = load_heads(reference_path)
    heads = make_heads(features, 0, int(meta["stance_hidden"]))
    heads.stance.load_state_dict(reference.stance.state_dict())
    with torch.no_grad():
        heads.gate.weight.copy_(torch.from_numpy(weight).float()[None])
        heads.gate.bias.fill_(bias)
    inherited = {k: v for k, v in meta.items()
                 if k not in ("format", "classes", "gate_hidden", "stance_hidden", *Features.__dataclass_fields__)}
    return save_heads(heads, path, features, 0, int(meta["stance_hidden"]), {**inherited, **metadata})
