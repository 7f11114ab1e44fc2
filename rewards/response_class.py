"""``response-class``: a rule-based safety reward (Mu et al., "Rule Based Rewards for Language
Model Safety", 2024) in the paper's alpha_r R - alpha_c C form (MARA.md, Eq. 13).

Two small heads on a frozen sentence encoder (all-MiniLM-L6-v2, as ``embedding-bt``) say
what matters for safety, each learnt from data labelled by rules:

- g(x), the harmful-request gate: how likely the *request* is harmful (trained on the
  labelled prompts of ../shared/data: PKU-SafeRLHF and HH red-team requests against HH
  helpful-base ones);
- p(c | y), the response class: whether the *answer* declines (a refusal or a safe
  redirection), complies, or is incoherent (trained on the upstream model's own answers,
  labelled by rules; rewards/recipe/safety.py).

    R(x, y) = (1 - g(x)) * (p_complies - p_declines)       helpfulness: answer benign requests
    C(x, y) = g(x) * (p_complies - p_declines) + p_incoherent    cost: comply with harm, write salad
    r(x, y) = alpha_r * R - alpha_c * C                    (alpha_i weighs the incoherence part)

So for a harmful request a decline beats compliance by about 2 alpha_c, for a benign one an
answer beats a refusal by about 2 alpha_r, and incoherent text (-alpha_i, 1.5 by default)
loses everywhere; two
compliant answers to one request differ only by how surely the heads classify them, which
is what makes the signal stand well above the noise (docs/REWARD.md measures both).

File format: one ``.safetensors`` file with the tensors ``gate.*`` and ``cls.*`` and string
metadata (``format``, ``encoder``, ``dim``, ``gate_hidden``, ``cls_hidden``, ``classes``);
a model card ``<same stem>.md`` beside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from rewards._common import resolve_device
from rewards.embedding_bt import (DEFAULT_PROMPT_CHARS, DEFAULT_RESPONSE_CHARS, encode_once, load_encoder, prompt_text,
                                  response_text)

FORMAT = "mara-response-class/1"
CLASSES = ("declines", "complies", "incoherent")
DECLINES, COMPLIES, INCOHERENT = range(3)


def make_classifier(dim: int, hidden: int, outputs: int, dropout: float = 0.0):
    """Linear(dim, outputs), or Linear -> GELU -> Dropout -> Linear when ``hidden > 0``: logits."""
    from torch import nn

    if hidden <= 0:
        return nn.Linear(dim, outputs)
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, outputs))


def make_heads(dim: int, gate_hidden: int, cls_hidden: int):
    """The gate (1 logit on the prompt embedding) and the response classifier (3 logits on
    the response embedding), as one module whose state dict is the file's tensors."""
    from torch import nn

    heads = nn.Module()
    heads.gate = make_classifier(dim, gate_hidden, 1)
    heads.cls = make_classifier(dim, cls_hidden, len(CLASSES))
    return heads


def save_heads(heads, path: str | Path, metadata: dict) -> Path:
    """Write the heads' tensors and metadata to ``path`` atomically."""
    from safetensors.torch import save_file

    from core.atomic import atomic_path

    meta = {"format": FORMAT, "classes": json.dumps(CLASSES),
            **{k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}}
    tensors = {k: v.detach().float().contiguous().cpu() for k, v in heads.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return Path(path)


def load_heads(path: str | Path):
    """(heads module in eval mode, metadata) from a file written by ``save_heads``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a response-class head file (format {meta.get('format')!r}, expected {FORMAT!r})")
    heads = make_heads(int(meta["dim"]), int(meta["gate_hidden"]), int(meta["cls_hidden"]))
    heads.load_state_dict(load_file(str(path)))
    return heads.eval(), meta


class ResponseClassScorer:
    """Scores (prompt, response) pairs with a response-class head file (see the module docstring)."""

    def __init__(self, path: str, device: str | None = "auto", batch_size: int = 64, encoder: str | None = None,
                 alpha_r: float = 1.0, alpha_c: float = 1.0, alpha_i: float = 1.5, name: str | None = None) -> None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"response-class head not found: {path}")
        for label, value in (("alpha_r", alpha_r), ("alpha_c", alpha_c), ("alpha_i", alpha_i)):
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{label} must be a finite number >= 0, got {value!r}")
        self.device = resolve_device(device)
        self.heads, self.meta = load_heads(path)
        self.heads = self.heads.to(self.device)
        self.encoder = load_encoder(encoder or self.meta["encoder"], self.device)
        self.batch_size = batch_size
        self.alpha = (float(alpha_r), float(alpha_c), float(alpha_i))
        self.prompt_chars = int(self.meta.get("prompt_chars", DEFAULT_PROMPT_CHARS))
        self.response_chars = int(self.meta.get("response_chars", DEFAULT_RESPONSE_CHARS))
        self.name = name or f"response-class:{Path(path).stem}"

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        return encode_once(self.encoder, texts, self.batch_size)

    def components(self, prompts: Sequence[str], responses: Sequence[str]) -> dict[str, np.ndarray]:
        """``p_harm`` (g(x)) and one probability per response class, each (N,)."""
        import torch

        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        if not prompts:
            return {k: np.zeros(0) for k in ("p_harm", *CLASSES)}
        e_p = torch.from_numpy(self._embed([prompt_text(p, self.prompt_chars) for p in prompts])).to(self.device)
        e_r = torch.from_numpy(self._embed([response_text(r, self.response_chars) or "." for r in responses]))
        with torch.inference_mode():
            p_harm = torch.sigmoid(self.heads.gate(e_p)[:, 0]).double().cpu().numpy()
            p_class = torch.softmax(self.heads.cls(e_r.to(self.device)), dim=-1).double().cpu().numpy()
        return {"p_harm": p_harm, **{c: p_class[:, i] for i, c in enumerate(CLASSES)}}

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        parts = self.components(prompts, responses)
        return reward_from_components(parts, *self.alpha)


def reward_from_components(parts: dict[str, np.ndarray], alpha_r: float = 1.0, alpha_c: float = 1.0,
                           alpha_i: float = 1.5) -> np.ndarray:
    """r = alpha_r R - alpha_c C with R = (1 - g)(p_c - p_d) and C = g (p_c - p_d), minus
    alpha_i p_i (see the module docstring). With alpha_i = 1.5 (the default) incoherent text
    (-1.5) scores below the wrong class of answer (-1) whatever the request; a larger alpha_i
    adds the classifier's doubts about coherent answers to the noise (docs/REWARD.md)."""
    g, lean = parts["p_harm"], parts["complies"] - parts["declines"]
    return alpha_r * (1 - g) * lean - alpha_c * g * lean - alpha_i * parts["incoherent"]
