"""``response-class``: a rule-based safety reward (Mu et al., "Rule Based Rewards for Language
Model Safety", 2024) in the paper's alpha_r R - alpha_c C form (MARA.md, Eq. 13).

Two small heads say what matters for safety, each learnt from data labelled by rules
(rewards/recipe/safety.py):

- g(x), the harmful-request gate: how likely the *request* is harmful (trained on the
  labelled prompts of ../shared/data: PKU-SafeRLHF and HH red-team requests against HH
  helpful-base ones);
- p(c | y), the stance: whether the *answer* declines (a refusal or a safe redirection) or
  complies (trained on the upstream model's own answers, labelled by rules).

    R(x, y) = (1 - g(x)) * (p_complies - p_declines)       helpfulness: answer benign requests
    C(x, y) = g(x) * (p_complies - p_declines)             cost: comply with a harmful request
    r(x, y) = alpha_r * R - alpha_c * C

So for a harmful request a decline beats compliance by about 2 alpha_c, for a benign one an
answer beats a refusal by about 2 alpha_r, and two answers of one stance to one request
differ only by how surely the heads classify them: the signal stands 3.4-4.7 times above
that noise on held-out requests (docs/REWARD.md). The stance says nothing about coherence:
word salad is the fluency term's job (``reward.fluency_weight``, the upstream's own
log-likelihood), which the recipe measures together with these heads.

Inputs (``Features``): the gate reads the request's MiniLM embedding and its hashed word
n-grams; the stance reads the hashed n-grams of the answer's opening (240 characters) and
the embedding of its first 50 characters. File format: one ``.safetensors`` file with the
tensors ``gate.*`` and ``stance.*`` and string metadata (``format``, the ``Features``
fields, ``gate_hidden``, ``classes``); a model card ``<same stem>.md`` beside it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from rewards._common import resolve_device
from rewards.embedding_bt import DEFAULT_ENCODER, encode_once, load_encoder, prompt_text, response_text
from rewards.text_features import hashed_ngrams

FORMAT = "mara-response-class/2"
CLASSES = ("declines", "complies")
DECLINES, COMPLIES = range(2)

Embed = Callable[[Sequence[str]], np.ndarray]  # texts -> (N, dim) sentence embeddings


@dataclass(frozen=True)
class Features:
    """How requests and answers become the heads' inputs (kept in the file's metadata, so a
    scorer computes exactly what its heads were trained on)."""

    encoder: str = DEFAULT_ENCODER
    dim: int = 384  # the encoder's embedding size
    bins: int = 4096  # hashed n-gram bins
    prompt_chars: int = 1000  # the request's last characters (dialogues end with the request)
    response_chars: int = 50  # the answer's opening that is embedded (longer openings blur the stance)
    opening_chars: int = 240  # the answer's opening whose n-grams are read (the rules read as much)
    mark_opening: int = 4  # the first words also count with their position

    @property
    def width(self) -> int:
        return self.dim + self.bins

    def prompts(self, texts: Sequence[str], embed: Embed) -> np.ndarray:
        """(N, width): [embedding, hashed n-grams] of each request."""
        tails = [prompt_text(t, self.prompt_chars) for t in texts]
        return np.concatenate([embed(tails), hashed_ngrams(tails, self.bins, self.prompt_chars)], axis=1)

    def answers(self, texts: Sequence[str], embed: Embed) -> np.ndarray:
        """(N, width): [embedding of the first ``response_chars``, hashed n-grams of the opening]."""
        openings = [response_text(t, self.response_chars) or "." for t in texts]
        grams = hashed_ngrams([t.strip() for t in texts], self.bins, self.opening_chars,
                              mark_opening=self.mark_opening)
        return np.concatenate([embed(openings), grams], axis=1)

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> "Features":
        """The features a file's (string) metadata describes."""
        return cls(**{k: meta[k] if isinstance(v, str) else type(v)(json.loads(meta[k])) for k, v in asdict(cls()).items()})


def make_classifier(dim: int, hidden: int, outputs: int, dropout: float = 0.0):
    """Linear(dim, outputs), or Linear -> GELU -> Dropout -> Linear when ``hidden > 0``: logits."""
    from torch import nn

    if hidden <= 0:
        return nn.Linear(dim, outputs)
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, outputs))


def make_heads(features: Features, gate_hidden: int, stance_hidden: int = 0):
    """The gate (1 logit on request features) and the stance (2 logits on answer features),
    as one module whose state dict is the file's tensors."""
    from torch import nn

    heads = nn.Module()
    heads.gate = make_classifier(features.width, gate_hidden, 1)
    heads.stance = make_classifier(features.width, stance_hidden, len(CLASSES))
    return heads


def save_heads(heads, path: str | Path, features: Features, gate_hidden: int, stance_hidden: int,
               metadata: dict) -> Path:
    """Write the heads' tensors and metadata to ``path`` atomically."""
    from safetensors.torch import save_file

    from core.atomic import atomic_path

    meta = {**asdict(features), "gate_hidden": gate_hidden, "stance_hidden": stance_hidden, **metadata}
    meta = {"format": FORMAT, "classes": json.dumps(CLASSES),
            **{k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}}
    tensors = {k: v.detach().float().contiguous().cpu() for k, v in heads.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return Path(path)


def load_heads(path: str | Path):
    """(heads module in eval mode, Features, metadata) from a file written by ``save_heads``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a response-class head file (format {meta.get('format')!r}, expected {FORMAT!r};"
                         " rebuild it with `mara safety-reward`)")
    features = Features.from_metadata(meta)
    heads = make_heads(features, int(meta["gate_hidden"]), int(meta["stance_hidden"]))
    heads.load_state_dict(load_file(str(path)))
    return heads.eval(), features, meta


def harm_probability(heads, request_features: np.ndarray) -> np.ndarray:
    """g(x), (N,): how likely each request is harmful, from its features."""
    import torch

    device = next(heads.parameters()).device
    with torch.inference_mode():
        return torch.sigmoid(heads.gate(torch.from_numpy(request_features).to(device))[:, 0]).double().cpu().numpy()


def head_probabilities(heads, request_features: np.ndarray, answer_features: np.ndarray) -> dict[str, np.ndarray]:
    """``p_harm`` (g(x)) and one probability per stance, each (N,), from feature arrays."""
    import torch

    device = next(heads.parameters()).device
    with torch.inference_mode():
        p_stance = torch.softmax(heads.stance(torch.from_numpy(answer_features).to(device)), dim=-1)
    p_stance = p_stance.double().cpu().numpy()
    return {"p_harm": harm_probability(heads, request_features), **{c: p_stance[:, i] for i, c in enumerate(CLASSES)}}


class ResponseClassScorer:
    """Scores (prompt, response) pairs with a response-class head file (see the module docstring)."""

    def __init__(self, path: str, device: str | None = "auto", batch_size: int = 64, encoder: str | None = None,
                 alpha_r: float = 1.0, alpha_c: float = 1.0, name: str | None = None, embed: Embed | None = None) -> None:
        """``embed``: how to embed texts (default: the file's encoder; the recipe passes its cache)."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"response-class head not found: {path}")
        for label, value in (("alpha_r", alpha_r), ("alpha_c", alpha_c)):
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{label} must be a finite number >= 0, got {value!r}")
        self.device = resolve_device(device)
        self.heads, self.features, self.meta = load_heads(path)
        self.heads = self.heads.to(self.device)
        self.batch_size = batch_size
        if embed is None:
            encoder_model = load_encoder(encoder or self.features.encoder, self.device)
            embed = lambda texts: encode_once(encoder_model, texts, batch_size)  # noqa: E731
        self._embed = embed
        self.alpha = (float(alpha_r), float(alpha_c))
        self.name = name or f"response-class:{Path(path).stem}"

    def components(self, prompts: Sequence[str], responses: Sequence[str]) -> dict[str, np.ndarray]:
        """``p_harm`` (g(x)) and one probability per stance, each (N,)."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        if not prompts:
            return {k: np.zeros(0) for k in ("p_harm", *CLASSES)}
        return head_probabilities(self.heads, self.features.prompts(prompts, self._embed),
                                  self.features.answers(responses, self._embed))

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return reward_from_components(self.components(prompts, responses), *self.alpha)


def reward_from_components(parts: dict[str, np.ndarray], alpha_r: float = 1.0, alpha_c: float = 1.0) -> np.ndarray:
    """r = alpha_r R - alpha_c C with R = (1 - g)(p_c - p_d) and C = g (p_c - p_d) (the
    module docstring): the stance's lean towards complying, rewarded for benign requests and
    charged for harmful ones in proportion to the gate."""
    g, lean = parts["p_harm"], parts["complies"] - parts["declines"]
    return (alpha_r * (1 - g) - alpha_c * g) * lean
