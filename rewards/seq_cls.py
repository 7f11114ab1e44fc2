"""``seq-cls``: any ``AutoModelForSequenceClassification`` reward model with one output
(e.g. OpenAssistant's DeBERTa reward model, Skywork-Reward).

The pair is written with the tokenizer's chat template when it has one (a user and an
assistant message), else as ``"{prompt}\\n\\n{response}"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from rewards._common import batches, local_or_hub, resolve_device


class SeqClsScorer:
    """A one-output sequence-classification reward model, batched, no grad, CPU or CUDA."""

    def __init__(self, path: str, device: str | None = "auto", dtype: str = "auto", batch_size: int = 8,
                 max_length: int = 1024, use_chat_template: bool = True, name: str | None = None) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        folder = local_or_hub(path, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"])
        self.device = resolve_device(device)
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model = AutoModelForSequenceClassification.from_pretrained(str(folder), dtype=torch_dtype)
        if self.model.config.num_labels != 1:
            raise ValueError(f"{path}: a reward model needs exactly one output, it has {self.model.config.num_labels}")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:
            # Decoder-only classifiers find the last real token through pad_token_id.
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model = self.model.to(self.device).eval()
        self.use_chat_template = use_chat_template and bool(getattr(self.tokenizer, "chat_template", None))
        self.batch_size, self.max_length = batch_size, max_length
        self.name = name or f"seq-cls:{Path(path).name or path}"

    def format(self, prompt: str, response: str) -> str:
        if self.use_chat_template:
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return f"{prompt}\n\n{response}"

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        import torch

        texts = [self.format(p, r) for p, r in zip(prompts, responses)]
        out = np.zeros(len(texts), dtype=np.float64)
        # A chat template already contains the special tokens.
        add_special = not self.use_chat_template
        with torch.inference_mode():
            for start, end in batches(len(texts), self.batch_size):
                enc = self.tokenizer(texts[start:end], return_tensors="pt", padding=True, truncation=True,
                                     max_length=self.max_length, add_special_tokens=add_special).to(self.device)
                logits = self.model(**enc).logits
                out[start:end] = logits[:, 0].float().cpu().numpy()
        return out
