"""A reward head trained on the readers' preferences alone (Bradley-Terry on non-tied pairs, no
labels), on the shipped reading (layers 10, 20, 30 averaged over the answer + the last token's final
state), trained on the reward's rows (then the reward's and the judge's), read on the others.

    python docs/results/reader-heads/pairs_only.py runs/reader/all_layers.npz
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from rewards.recipe.reader import figures, preference_pairs


class PairHead:
    """r(x, y) = w · standardised features; ``figures`` reads only ``value`` for agreement and AUC."""

    def __init__(self, weight, mean, std):
        self.weight, self.mean, self.std = weight, mean, std

    def value(self, features):
        return ((features - self.mean) / self.std) @ self.weight

    def probabilities(self, features):  # no labels: accuracy is not measured
        return np.eye(7)[np.zeros(len(features), dtype=int)]


def fit(features, rows, l2):
    mean, std = features.mean(0), features.std(0) + 1e-6
    x = torch.tensor((features - mean) / std)
    pairs = torch.tensor(preference_pairs(rows))
    weight = torch.zeros(x.shape[1], requires_grad=True)
    optimiser = torch.optim.Adam([weight], lr=3e-3)
    for _ in range(300):
        optimiser.zero_grad()
        reward = x @ weight
        loss = torch.nn.functional.softplus(reward[pairs[:, 1]] - reward[pairs[:, 0]]).mean() + l2 * weight.pow(2).sum()
        loss.backward()
        optimiser.step()
    return PairHead(weight.detach().numpy(), mean, std)


def main(cache: str) -> None:
    torch.set_num_threads(2)
    rows = [json.loads(line) for line in Path("rewards/data/reader_labels.jsonl").read_text().splitlines()]
    data = np.load(cache)
    features = np.c_[data["means"][:, [10, 20, 30]].astype(np.float32).reshape(len(rows), -1),
                     data["lasts"][:, 30].astype(np.float32)]
    split = np.array([r["split"] for r in rows])
    for trained_on in (("reward",), ("reward", "judge")):
        train = np.isin(split, trained_on)
        for l2 in (0.01, 0.1, 1.0):
            head = fit(features[train], [r for r, t in zip(rows, train) if t], l2)
            for read_on in {"validation", "judge"} - set(trained_on):
                on = split == read_on
                f = figures(head, features[on], [r for r, o in zip(rows, on) if o])
                print(json.dumps({"trained on": trained_on, "l2": l2, "read on": read_on,
                                  "pair agreement": round(f["pair_agreement"], 3), "auc": round(f["auc_unsafe"], 3)}))


if __name__ == "__main__":
    main(sys.argv[1])
