"""What else a reader head could read: validation pair agreement of heads over the shipped
features plus other inputs, and of the reward with the fluency term a training config adds.

The rows are rewards/data/reader_labels.jsonl + reader_turn_labels.jsonl; heads train on the
reward rows and are measured on the validation rows (rewards/recipe/reader.py: figures). The
reader features come from the cache of `mara reader-reward build --cache runs/reader/features.npz`;
the upstream's mean log-likelihood of each answer (envs/generation.py: mean_log_likelihood, as
the reward actor's fluency term computes it) is cached in runs/reader/fluency.json (25 min on 2
cores to compute).

    PYTHONPATH=. python docs/results/reader-head-probe/probe.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.jsonl import read_jsonl
from rewards.answer_reader import ReaderHead
from rewards.recipe import reader
from rewards.text_features import hashed_ngrams, words

LABEL_FILES = ("rewards/data/reader_labels.jsonl", "rewards/data/reader_turn_labels.jsonl")
FEATURES = Path("runs/reader/features.npz")
FLUENCY = Path("runs/reader/fluency.json")


def fluency(rows: list[dict]) -> np.ndarray:
    """The upstream's mean log-probability per token of each answer (cached by row key)."""
    cached = json.loads(FLUENCY.read_text()) if FLUENCY.is_file() else {}
    todo = list(dict.fromkeys(reader.row_key(r) for r in rows if reader.row_key(r) not in cached))
    if todo:
        from envs.generation import mean_log_likelihood
        from envs.upstream import load_upstream

        llm = load_upstream("smollm2", device="cpu")
        first = {reader.row_key(r): r for r in rows}
        found = mean_log_likelihood(llm, [first[k]["prompt"] for k in todo], [first[k]["answer"] for k in todo],
                                    batch_size=16)
        cached.update(zip(todo, map(float, found)))
        FLUENCY.write_text(json.dumps(cached))
    return np.array([cached[reader.row_key(r)] for r in rows])


def text_statistics(answers: list[str]) -> np.ndarray:
    """Length, distinct words, distinct word trigrams, alphabetic words, non-ASCII characters."""
    out = []
    for text in answers:
        tokens = words(text, len(text))
        trigrams = [" ".join(tokens[i:i + 3]) for i in range(len(tokens) - 2)]
        n = max(len(tokens), 1)
        out.append([np.log1p(len(text)), len(set(tokens)) / n, len(set(trigrams)) / max(len(trigrams), 1),
                    sum(t.isalpha() for t in tokens) / n, sum(ord(c) > 127 for c in text) / max(len(text), 1)])
    return np.array(out, dtype=np.float32)


def agreement(reward: np.ndarray, rows: list[dict]) -> float:
    return float(np.mean([reward[w] > reward[lo] for w, lo in reader.preference_pairs(rows)]))


def main() -> None:
    rows = [row for path in LABEL_FILES for row in read_jsonl(Path(path))]
    with np.load(FEATURES, allow_pickle=False) as f:
        cached = dict(zip(f["keys"].astype(str), f["features"]))
    states = np.stack([cached[reader.row_key(r)] for r in rows])
    split = np.array([r["split"] for r in rows])
    train, valid = split == "reward", split == "validation"
    train_rows, valid_rows = [r for r in rows if r["split"] == "reward"], [r for r in rows if r["split"] == "validation"]
    answers = [r["answer"] for r in rows]
    log_likelihood = fluency(rows)
    inputs = {
        "reader states (shipped)": states,
        "+ hashed word 1-2-grams of the whole answer (4,096 bins)": np.hstack([states, 10 * hashed_ngrams(answers, 4096, 10**6, (1, 2))]),
        "+ text statistics": np.hstack([states, text_statistics(answers)]),
        "+ the upstream's mean log-likelihood": np.hstack([states, np.stack([log_likelihood, np.minimum(log_likelihood, -1.0),
                                                                             np.minimum(log_likelihood, -2.0)], 1)]),
    }
    for name, x in inputs.items():
        best = max((agreement(reader.train_head(x[train], train_rows, l2, 1.0).value(x[valid]), valid_rows), l2)
                   for l2 in (0.1, 0.3, 1.0))
        print(f"{name}: {best[0]:.1%} of the validation pairs (L2 {best[1]})")
    head = ReaderHead.load("rewards/data/reader_reward.safetensors")
    for which, mask, subset in (("validation", valid, valid_rows), ("judge rows", split == "judge",
                                                                     [r for r in rows if r["split"] == "judge"])):
        value = head.value(states[mask])
        for weight, floor in ((0.0, 0.0), (0.5, -2.0), (1.0, -1.6), (1.0, -2.5)):
            reward = value - weight * np.maximum(0.0, floor - log_likelihood[mask])
            print(f"shipped reward head − fluency term (weight {weight}, floor {floor}), {which}: "
                  f"{agreement(reward, subset):.1%}")


if __name__ == "__main__":
    main()
