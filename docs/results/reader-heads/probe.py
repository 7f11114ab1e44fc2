"""Which reading of SmolLM2's states agrees best with the readers? Heads on every layer's features
(extract.py), trained on the reward's rows: linear heads by the recipe's own `train_head` (no pairwise term), and
an MLP with the same label loss; read on the validation rows and on the judge's.

    python docs/results/reader-heads/probe.py runs/reader/all_layers.npz
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from rewards.answer_reader import LABEL_VALUES, LABELS
from rewards.recipe.reader import figures, train_head


class MlpHead:
    """A ``ReaderHead``'s reading (probabilities, value) around a one-hidden-layer network."""

    def __init__(self, net, mean, std):
        self.net, self.mean, self.std = net.eval(), mean, std

    def probabilities(self, features):
        with torch.no_grad():
            x = torch.tensor((features - self.mean) / self.std, dtype=torch.float32)
            return torch.softmax(self.net(x), 1).numpy()

    def value(self, features):
        return self.probabilities(features) @ np.array([LABEL_VALUES[label] for label in LABELS])


def fit_mlp(features, rows, hidden, l2, dropout, epochs, seed=0):
    """The recipe's label loss (class-weighted cross-entropy, L2 on the weights) on an MLP."""
    torch.manual_seed(seed)
    mean, std = features.mean(0), features.std(0) + 1e-6
    x = torch.tensor((features - mean) / std, dtype=torch.float32)
    y = torch.tensor([LABELS.index(r["label"]) for r in rows])
    counts = torch.bincount(y, minlength=len(LABELS)).float()
    weight = torch.where(counts > 0, counts.sum() / (len(LABELS) * counts.clamp(min=1)), torch.zeros(()))
    net = torch.nn.Sequential(torch.nn.Dropout(dropout), torch.nn.Linear(x.shape[1], hidden), torch.nn.GELU(),
                              torch.nn.Dropout(dropout), torch.nn.Linear(hidden, len(LABELS)))
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(epochs):
        net.train()
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y, weight=weight)
        loss = loss + l2 * sum(p.pow(2).sum() for n, p in net.named_parameters() if n.endswith("weight"))
        loss.backward()
        optimiser.step()
    return MlpHead(net, mean, std)


def fit(features, rows, hidden=0, l2=0.1, dropout=0.0, epochs=300):
    """A linear head exactly as `mara reader-reward build` trains it (no pairwise term), or an MLP."""
    if not hidden:
        return train_head(features, rows, l2, pair_weight=0.0, epochs=epochs)
    return fit_mlp(features, rows, hidden, l2, dropout, epochs)


def main(cache: str) -> None:
    torch.set_num_threads(2)
    rows = [json.loads(line) for line in Path("rewards/data/reader_labels.jsonl").read_text().splitlines()]
    data = np.load(cache)
    means, lasts = data["means"].astype(np.float32), data["lasts"].astype(np.float32)
    split = np.array([r["split"] for r in rows])
    part = {s: (split == s) for s in ("reward", "judge", "validation")}
    sub = {s: [r for r, m in zip(rows, part[s]) if m] for s in part}
    readings = {
        "shipped: means 10,20,30 + last 30": np.c_[means[:, [10, 20, 30]].reshape(len(rows), -1), lasts[:, 30]],
        "means 5..30 by 5 + last 30": np.c_[means[:, 5::5].reshape(len(rows), -1), lasts[:, 30]],
        "means 15,20,25 + last 20,30": np.c_[means[:, [15, 20, 25]].reshape(len(rows), -1), lasts[:, [20, 30]].reshape(len(rows), -1)],
        "means every 3rd layer": means[:, 3::3].reshape(len(rows), -1),
    }
    heads = [{"hidden": 0, "l2": l2} for l2 in (0.1, 0.3, 1.0)] + \
            [{"hidden": h, "l2": l2, "dropout": 0.3, "epochs": 200} for h in (64,) for l2 in (1e-3, 1e-2)]
    results = []
    for name, features in readings.items():
        for head in heads:
            h = fit(features[part["reward"]], sub["reward"], **head)
            val = figures(h, features[part["validation"]], sub["validation"])
            judge = figures(h, features[part["judge"]], sub["judge"])
            results.append({"reading": name, **head, "validation": val["pair_agreement"], "judge rows": judge["pair_agreement"],
                            "auc validation": val["auc_unsafe"], "snr validation": val["snr"]})
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in results[-1].items()}), flush=True)
    Path(cache).with_suffix(".results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
