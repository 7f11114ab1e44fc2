"""Would a request gate trained on the readers' own request labels leave more benign requests alone?

The gate shipped until then (the safety reward's, rewards/data/safety_reward.safetensors) was
trained on where a prompt came from (PKU-SafeRLHF / HH red-team: harmful, HH helpful: benign). The strong readers judged every request
they read as harmful or benign by docs/RUBRIC.md (rewards/data/reader_labels.jsonl: reader_request),
and called about 40% of the harmful pools' prompts benign. This probe fits a logistic regression on
the shipped gate's own request features (MiniLM embedding + hashed word n-grams), optionally with the
shipped gate's logit beside them, on the reader labels of the reward's and the judge's prompts; its
L2 strength and inputs are chosen by 5-fold cross-validation there; then it is read once on the
validation prompts, at the harmful recall of the shipped gate.

    python docs/results/reader-gate/probe.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from rewards.embedded import head_path
from rewards.recipe.request_gate import reader_requests as majority_requests
from rewards.request_gate import GATE_THRESHOLD, RequestGate

GRID = [(c, stack) for c in (0.01, 0.1, 1.0, 10.0) for stack in (False, True)]


def reader_requests(path="rewards/data/reader_labels.jsonl"):
    """(split, prompt) -> the readers' majority verdict: harmful?"""
    return majority_requests([json.loads(line) for line in Path(path).read_text().splitlines()])


def inputs(gate, prompts, stack):
    features = gate.request_features(prompts)
    if not stack:
        return features
    p = np.clip(gate.harm_probability(prompts), 1e-6, 1 - 1e-6)
    return np.c_[features, np.log(p / (1 - p))]


def main():
    gate = RequestGate(head_path("embedded", "response-class"))
    labels = reader_requests()
    train = [(p, y) for (s, p), y in labels.items() if s in ("reward", "judge")]
    valid = [(p, y) for (s, p), y in labels.items() if s == "validation"]
    pt, yt = [p for p, _ in train], np.array([y for _, y in train])
    pv, yv = [p for p, _ in valid], np.array([y for _, y in valid])
    X = {stack: inputs(gate, pt, stack) for stack in (False, True)}
    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(pt, yt))

    def cv_auc(c, stack):
        scores = np.zeros(len(yt))
        for fit, held in folds:
            m = LogisticRegression(C=c, max_iter=5000, class_weight="balanced").fit(X[stack][fit], yt[fit])
            scores[held] = m.predict_proba(X[stack][held])[:, 1]
        return roc_auc_score(yt, scores)

    grid = {(c, s): cv_auc(c, s) for c, s in GRID}
    c, stack = max(grid, key=grid.get)
    model = LogisticRegression(C=c, max_iter=5000, class_weight="balanced").fit(X[stack], yt)
    shipped = gate.harm_probability(pv)
    new = model.predict_proba(inputs(gate, pv, stack))[:, 1]
    recall = float((shipped[yv] >= GATE_THRESHOLD).mean())
    threshold = float(np.quantile(new[yv], 1 - recall))  # the same share of reader-harmful requests flagged
    out = {
        "cross-validation AUC (reward + judge prompts)": {f"C={c} stack={s}": round(a, 3) for (c, s), a in grid.items()},
        "chosen": {"C": c, "stack": stack},
        "validation": {"requests": len(yv), "reader-harmful": int(yv.sum()), "reader-benign": int((~yv).sum())},
        "shipped gate": {"AUC": round(roc_auc_score(yv, shipped), 3), "harmful flagged": round(recall, 3),
                         "benign flagged": round(float((shipped[~yv] >= GATE_THRESHOLD).mean()), 3)},
        "reader-trained gate, same harmful recall": {
            "AUC": round(roc_auc_score(yv, new), 3),
            "harmful flagged": round(float((new[yv] >= threshold).mean()), 3),
            "benign flagged": round(float((new[~yv] >= threshold).mean()), 3)},
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
