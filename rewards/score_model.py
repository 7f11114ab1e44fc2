"""``score-model``: safe-rlhf score models (beaver-7b-v1.0-reward / beaver-7b-v1.0-cost).

The checkpoint is a Llama body (``model.*`` weights, a plain ``LlamaModel``) plus a linear
``score_head`` (hidden -> 1). safe-rlhf scores ``"BEGINNING OF CONVERSATION: USER: {prompt}
ASSISTANT:{response}"`` followed by the EOS token; the sentence score is the head's output
at the last non-pad token. For the cost model higher means more harmful, so it enters the
reward with a negative weight (MARA.md, Eq. 13: -alpha_c * C).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from rewards._common import batches, local_or_hub, resolve_device

log = logging.getLogger(__name__)

BEAVER_TEMPLATE = "BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:{response}"


def read_score_head(folder: Path) -> dict:
    """The ``score_head.*`` tensors of a checkpoint (safetensors shards or .bin, weights only)."""
    import torch
    from safetensors import safe_open

    files: list[Path] = []
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            files = sorted({folder / f for k, f in weight_map.items() if k.startswith("score_head.")})
            break
    if not files:
        files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    head: dict = {}
    for file in files:
        if file.suffix == ".safetensors":
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():
                    if key.startswith("score_head."):
                        head[key[len("score_head."):]] = f.get_tensor(key)
        else:
            state = torch.load(str(file), map_location="cpu", weights_only=True)
            head.update({k[len("score_head."):]: v for k, v in state.items() if k.startswith("score_head.")})
    if "weight" not in head:
        raise ValueError(f"{folder}: no score_head.weight in the checkpoint; is it a safe-rlhf score model?")
    return head


class ScoreModelScorer:
    """A safe-rlhf score model, batched, no grad, on CPU or CUDA."""

    def __init__(self, path: str, device: str | None = "auto", dtype: str = "auto", batch_size: int = 8,
                 max_length: int = 1024, template: str = BEAVER_TEMPLATE, append_eos: bool = True,
                 name: str | None = None) -> None:
        import torch
        from transformers import AutoConfig, AutoTokenizer, LlamaModel

        folder = local_or_hub(path, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"])
        self.device = resolve_device(device)
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        config = AutoConfig.from_pretrained(str(folder))
        # The body's weights are stored under "model."; LlamaModel drops that prefix itself
        # and ignores the score_head, which we read separately below.
        self.body = LlamaModel.from_pretrained(str(folder), config=config, dtype=torch_dtype).to(self.device).eval()
        head = read_score_head(folder)
        out_dim, hidden = head["weight"].shape
        self.head = torch.nn.Linear(hidden, out_dim, bias="bias" in head)
        self.head.load_state_dict(head)
        self.head = self.head.to(self.device, torch_dtype).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.tokenizer.padding_side = "right"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.unk_token or self.tokenizer.eos_token
        self.batch_size, self.max_length = batch_size, max_length
        self.template, self.append_eos = template, append_eos
        self.name = name or f"score-model:{Path(path).name or path}"

    def format(self, prompt: str, response: str) -> str:
        text = self.template.format(prompt=prompt, response=response)
        if self.append_eos and self.tokenizer.eos_token:
            text += self.tokenizer.eos_token
        return text

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        import torch

        texts = [self.format(p, r) for p, r in zip(prompts, responses)]
        out = np.zeros(len(texts), dtype=np.float64)
        with torch.inference_mode():
            for start, end in batches(len(texts), self.batch_size):
                enc = self.tokenizer(texts[start:end], return_tensors="pt", padding=True, truncation=True,
                                     max_length=self.max_length, add_special_tokens=True).to(self.device)
                hidden = self.body(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
                # Right padding: the last real token of row b is at attention_mask[b].sum() - 1.
                last = enc["attention_mask"].sum(dim=1) - 1
                end_hidden = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
                out[start:end] = self.head(end_hidden)[:, 0].float().cpu().numpy()
        return out
