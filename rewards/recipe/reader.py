"""The reader reward's recipe: heads over a frozen LLM's reading of whole answers
(rewards/answer_reader.py), trained on answers a strong reader labelled blind
(docs/RUBRIC.md; the rows of ``mara reader-data labels``).

Rows carry their ``split`` (``core.splits``): the training reward learns from the
``reward`` rows, the judge from the ``judge`` rows (disjoint prompts), and every choice
(the L2 strength, the weight of the pairwise term) is made on the ``validation`` rows.

Each head is a linear softmax over the labels, trained on

    loss = CE(label) + β · mean over the reader's non-tied pairs of softplus(−(r(x, y_w) − r(x, y_l)))

where r = Σ_ℓ p(ℓ | x, y) v(ℓ) is the reward (the head's expected label value) and y_w the
answer the reader would send: the reward must rank the pair as the reader does, not only
name each answer's label.

Figures (``figures``), on any labelled rows:

- ``pair_agreement``: share of the reader's non-tied pairs the reward orders the same way;
- ``auc_unsafe``: AUC of the reward separating safe declines from harmful help and
  decline-then-help (harmful requests);
- ``accuracy``: the head's most likely label against the reader's;
- ``snr``: margin / noise, margin = mean over requests of (mean reward of the wanted answers
  − mean reward of the failures), noise = standard deviation of the reward difference between
  two answers with the same label to the same request.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from itertools import combinations

import numpy as np

from rewards.answer_reader import LABEL_VALUES, LABELS, ReaderHead

WANTED = ("safe-decline", "helpful")
FAILURES = ("harmful-help", "decline-then-help", "incoherent", "unhelpful-refusal")
UNSAFE = ("harmful-help", "decline-then-help")


def row_key(row: dict) -> str:
    return hashlib.sha1((row["prompt"] + "\x00" + row["answer"]).encode("utf-8")).hexdigest()


def preference_pairs(rows: list[dict]) -> list[tuple[int, int]]:
    """(index of the answer the reader would send, index of the other) for each non-tied pair."""
    by_pair: dict[str, dict[str, int]] = defaultdict(dict)
    for i, row in enumerate(rows):
        by_pair[row["pair"]][row["side"]] = i
    out = []
    for sides in by_pair.values():
        preferred = rows[next(iter(sides.values()))]["preference"]
        if preferred in ("A", "B") and len(sides) == 2:
            out.append((sides[preferred], sides["B" if preferred == "A" else "A"]))
    return out


def train_head(features: np.ndarray, rows: list[dict], l2: float, pair_weight: float, epochs: int = 300,
               seed: int = 0) -> ReaderHead:
    """A ``ReaderHead`` fitted on ``rows`` (full-batch Adam on the loss above)."""
    import torch

    # A model this small trains fastest on one thread: several would spend their time waiting
    # on each other (and on whatever else shares the CPU).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit(features, rows, l2, pair_weight, epochs, seed)
    finally:
        torch.set_num_threads(threads)


def _fit(features: np.ndarray, rows: list[dict], l2: float, pair_weight: float, epochs: int, seed: int) -> ReaderHead:
    import torch

    torch.manual_seed(seed)
    mean = features.mean(0)
    std = features.std(0) + 1e-6
    x = torch.tensor((features - mean) / std, dtype=torch.float32)
    y = torch.tensor([LABELS.index(r["label"]) for r in rows])
    values = torch.tensor([LABEL_VALUES[label] for label in LABELS], dtype=torch.float32)
    pairs = torch.tensor(preference_pairs(rows) or [[0, 0]])
    has_pairs = bool(preference_pairs(rows))
    counts = torch.bincount(y, minlength=len(LABELS)).float()
    class_weight = torch.where(counts > 0, counts.sum() / (len(LABELS) * counts.clamp(min=1)), torch.zeros(()))
    linear = torch.nn.Linear(x.shape[1], len(LABELS))
    optimiser = torch.optim.Adam(linear.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(epochs):
        optimiser.zero_grad()
        logits = linear(x)
        loss = torch.nn.functional.cross_entropy(logits, y, weight=class_weight)
        if has_pairs and pair_weight:
            reward = torch.softmax(logits, dim=1) @ values
            loss = loss + pair_weight * torch.nn.functional.softplus(-(reward[pairs[:, 0]] - reward[pairs[:, 1]])).mean()
        loss = loss + l2 * linear.weight.pow(2).sum()
        loss.backward()
        optimiser.step()
    return ReaderHead(linear.weight.detach().numpy(), linear.bias.detach().numpy(), mean, std)


def _auc(positive: np.ndarray, negative: np.ndarray) -> float:
    if not len(positive) or not len(negative):
        return float("nan")
    greater = (positive[:, None] > negative[None, :]).mean()
    equal = (positive[:, None] == negative[None, :]).mean()
    return float(greater + 0.5 * equal)


def figures(head: ReaderHead, features: np.ndarray, rows: list[dict]) -> dict[str, float]:
    reward = head.value(features)
    predicted = head.probabilities(features).argmax(1)
    labels = np.array([r["label"] for r in rows])
    pairs = preference_pairs(rows)
    agree = [reward[w] > reward[lo] for w, lo in pairs]
    harmful = np.array([r.get("reader_request", "harmful") == "harmful" for r in rows])
    auc = _auc(reward[(labels == "safe-decline") & harmful], reward[np.isin(labels, UNSAFE) & harmful])
    by_prompt: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_prompt[row["prompt"]].append(i)
    margins, same_label_differences = [], []
    for indices in by_prompt.values():
        wanted = [reward[i] for i in indices if labels[i] in WANTED]
        failed = [reward[i] for i in indices if labels[i] in FAILURES]
        if wanted and failed:
            margins.append(np.mean(wanted) - np.mean(failed))
        for i, j in combinations(indices, 2):
            if labels[i] == labels[j]:
                same_label_differences.append(reward[i] - reward[j])
    noise = float(np.std(same_label_differences)) if len(same_label_differences) > 1 else float("nan")
    margin = float(np.mean(margins)) if margins else float("nan")
    return {"answers": len(rows), "pairs": len(pairs), "pair_agreement": float(np.mean(agree)) if agree else float("nan"),
            "auc_unsafe": auc, "accuracy": float(np.mean(np.array(LABELS)[predicted] == labels)),
            "margin": margin, "noise": noise, "snr": margin / noise if noise and noise == noise else float("nan")}


def choose_and_train(features: np.ndarray, rows: list[dict], train_split: str,
                     grid: dict[str, tuple] | None = None, seed: int = 0) -> tuple[ReaderHead, dict, list[dict]]:
    """The head trained on ``train_split``'s rows with the (l2, pair_weight) that does best on
    the validation rows (pair agreement, then AUC); returns it, the choice, and the grid's
    validation figures."""
    grid = grid or {"l2": (1e-3, 1e-2, 3e-2, 1e-1, 3e-1), "pair_weight": (0.0, 1.0)}
    train = np.array([r["split"] == train_split for r in rows])
    valid = np.array([r["split"] == "validation" for r in rows])
    train_rows = [r for r, t in zip(rows, train) if t]
    valid_rows = [r for r, v in zip(rows, valid) if v]
    tried = []
    for l2 in grid["l2"]:
        for pair_weight in grid["pair_weight"]:
            head = train_head(features[train], train_rows, l2, pair_weight, seed=seed)
            tried.append({"l2": l2, "pair_weight": pair_weight, **figures(head, features[valid], valid_rows)})
    best = max(tried, key=lambda t: (round(t["pair_agreement"], 3), t["auc_unsafe"]))
    head = train_head(features[train], train_rows, best["l2"], best["pair_weight"], seed=seed)
    return head, {"l2": best["l2"], "pair_weight": best["pair_weight"]}, tried
