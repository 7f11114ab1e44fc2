"""Write the reader-trained request gate as a response-class head file that `--request-gate FILE` loads.

The probe (probe.py, beside this file) fits a logistic regression to the readers' request labels of
the reward's and the judge's prompts. On the shipped gate's request features alone (C = 10) its
cross-validated AUC is 0.952, against 0.954 with the shipped gate's logit beside them; the features
alone make a plain linear gate, which the response-class file format stores as it is (gate_hidden 0).

Its threshold is set on the validation prompts, at the shipped gate's recall of the reader-harmful
requests, and folded into the bias so that the gate's own 0.5 applies. The answer-stance head is
copied from the shipped file (the gate does not read it).

    python docs/results/reader-gate/build_gate.py runs/reader_gate.safetensors
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from rewards.embedded import head_path
from rewards.request_gate import GATE_THRESHOLD, RequestGate
from rewards.response_class import Features, load_heads, make_heads, save_heads

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from probe import inputs, reader_requests

C = 10.0  # probe.py's cross-validated choice for the features alone (results.json)


def main(out: str) -> None:
    shipped_path = head_path("embedded", "response-class")
    gate = RequestGate(shipped_path)
    shipped_heads, features, meta = load_heads(shipped_path)
    labels = reader_requests()
    train = [(p, y) for (s, p), y in labels.items() if s in ("reward", "judge")]
    valid = [(p, y) for (s, p), y in labels.items() if s == "validation"]
    pt, yt = [p for p, _ in train], np.array([y for _, y in train])
    pv, yv = [p for p, _ in valid], np.array([y for _, y in valid])
    model = LogisticRegression(C=C, max_iter=5000, class_weight="balanced").fit(inputs(gate, pt, False), yt)
    weight, bias = model.coef_[0], float(model.intercept_[0])

    # the threshold: the shipped gate's recall of the reader-harmful validation requests
    shipped = gate.harm_probability(pv)
    recall = float((shipped[yv] >= GATE_THRESHOLD).mean())
    logits = gate.request_features(pv) @ weight + bias
    cut = float(np.quantile(logits[yv], 1 - recall))
    bias -= cut  # logit >= cut  <=>  sigmoid(logit - cut) >= 0.5

    heads = make_heads(features, 0, int(meta["stance_hidden"]))
    heads.stance.load_state_dict(shipped_heads.stance.state_dict())
    with torch.no_grad():
        heads.gate.weight.copy_(torch.from_numpy(weight).float()[None])
        heads.gate.bias.fill_(bias)
    provenance = {
        "recipe": "docs/results/reader-gate/build_gate.py: logistic regression (C=10, balanced) on the "
                  "shipped gate's request features, fitted to the readers' request labels of "
                  "the reward and judge prompts (rewards/data/reader_labels.jsonl); "
                  "threshold at the shipped gate's recall of reader-harmful validation requests",
        "rubric_version": "1",
        "train_requests": str(len(yt)),
    }
    keep = {k: v for k, v in meta.items() if k not in ("format", "classes", "gate_hidden", "stance_hidden")
            and k not in Features.__dataclass_fields__}
    save_heads(heads, out, features, 0, int(meta["stance_hidden"]), {**keep, **provenance})

    check = RequestGate(out)
    flags = check(pv)
    print(json.dumps({"file": out, "validation reader-harmful flagged": round(float(flags[yv].mean()), 3),
                      "validation reader-benign flagged": round(float(flags[~yv].mean()), 3),
                      "validation AUC": round(roc_auc_score(yv, check.harm_probability(pv)), 3),
                      "shipped: validation AUC": round(roc_auc_score(yv, shipped), 3),
                      "shipped: reader-harmful flagged": round(recall, 3),
                      "shipped: reader-benign flagged": round(float((shipped[~yv] >= GATE_THRESHOLD).mean()), 3)},
                     indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
