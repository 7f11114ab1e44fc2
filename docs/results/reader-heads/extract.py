"""Every layer of SmolLM2 for every labelled answer, once: the answer-averaged hidden state and the
last token's, at the embedding and at each of the 30 layers (float16), keyed like the recipe's rows.

    python docs/results/reader-heads/extract.py runs/reader/all_layers.npz
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rewards.answer_reader import AnswerReader


def main(out: str) -> None:
    rows = [json.loads(line) for line in Path("rewards/data/reader_labels.jsonl").read_text().splitlines()]
    reader = AnswerReader("smollm2", device="cpu")
    encoded = [reader._ids(r["prompt"], r["answer"]) for r in rows]
    layers = reader.model.config.num_hidden_layers + 1
    dim = reader.model.config.hidden_size
    means = np.zeros((len(rows), layers, dim), np.float16)
    lasts = np.zeros((len(rows), layers, dim), np.float16)
    order = sorted(range(len(rows)), key=lambda i: len(encoded[i][0]))  # similar lengths batched
    started = time.time()
    with torch.inference_mode():
        for start in range(0, len(order), 8):
            chunk = order[start:start + 8]
            width = max(len(encoded[i][0]) for i in chunk)
            ids = torch.zeros((len(chunk), width), dtype=torch.long)
            mask = torch.zeros_like(ids)
            answer = torch.zeros((len(chunk), width))
            for j, i in enumerate(chunk):
                row, answer_start = encoded[i]
                ids[j, :len(row)] = torch.tensor(row)
                mask[j, :len(row)] = 1
                answer[j, min(answer_start, len(row) - 1):len(row)] = 1
            hidden = torch.stack(reader.model(input_ids=ids, attention_mask=mask,
                                              output_hidden_states=True).hidden_states, 1)  # (b, L, t, d)
            weights = answer / answer.sum(1, keepdim=True)
            last = mask.sum(1) - 1
            means[chunk] = torch.einsum("bt,bltd->bld", weights, hidden).numpy()
            lasts[chunk] = hidden[torch.arange(len(chunk)), :, last].numpy()
            if start % 400 == 0:
                print(start, f"{time.time() - started:.0f} s", flush=True)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, means=means, lasts=lasts)


if __name__ == "__main__":
    main(sys.argv[1])
