"""Fitting a Bradley-Terry reward head on a frozen sentence encoder: the work behind
``mara train-reward`` (whose command line is ``cli/train_reward.py``) and the offline
recipe (``rewards.recipe.build``).

    figures = train_reward("pairs.jsonl", "head.safetensors", config=HeadConfig(epochs=20))

``train_head`` minimises the Bradley-Terry loss (paper Eq. 3) with AdamW on CPU; the
embeddings are computed once (``pair_features``) and the held-out split is seeded and
disjoint by prompt (``split_by_prompt``). ``train_reward`` writes the head and its model card.
"""

from __future__ import annotations

import datetime as _dt
import logging
import random
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from rewards.embedding_bt import (
    DEFAULT_ENCODER,
    DEFAULT_PROMPT_CHARS,
    DEFAULT_RESPONSE_CHARS,
    EmbeddingCache,
    features,
    load_encoder,
    make_gate,
    make_gated_head,
    make_head,
    prompt_text,
    response_text,
    save_head,
)
from rewards.recipe.pairs import Pair, PairReport, load_pairs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadConfig:
    """How the Bradley-Terry head is shaped and trained."""

    features: str = "p,r,p*r"  # feature layout, see embedding_bt.FEATURE_LAYOUTS
    hidden: int = 64  # hidden units of the MLP head; 0 = linear head
    rank: int = 0  # rank of the prompt x response bilinear term; 0 = none (needs features "p,r,...")
    dropout: float = 0.1  # dropout inside the head while training
    epochs: int = 30  # passes over the training pairs
    lr: float = 1e-3  # Adam learning rate
    weight_decay: float = 1e-4  # Adam (decoupled) weight decay
    batch_size: int = 256  # pairs per gradient step
    seed: int = 0  # initialisation and shuffling

    def __post_init__(self) -> None:
        if self.rank > 0 and not self.features.startswith("p,r"):
            raise ValueError(f"a bilinear term (rank {self.rank}) needs features starting with 'p,r'")
        if self.rank < 0 or self.hidden < 0 or self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"invalid head config {self}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def split_by_prompt(pairs: Sequence, heldout: float, seed: int) -> tuple[list, list]:
    """(train, held-out): every pair of one prompt lands on the same side (seeded)."""
    if not 0 <= heldout < 1:
        raise ValueError(f"held-out fraction must be in [0, 1), got {heldout}")
    prompts = sorted({p.prompt for p in pairs})
    random.Random(seed).shuffle(prompts)
    held = set(prompts[:round(len(prompts) * heldout)])
    return [p for p in pairs if p.prompt not in held], [p for p in pairs if p.prompt in held]


def pair_features(pairs: Sequence[Pair], cache: EmbeddingCache, layout: str,
                  prompt_chars: int = DEFAULT_PROMPT_CHARS, response_chars: int = DEFAULT_RESPONSE_CHARS,
                  show_progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(N, F) chosen features and (N, F) rejected features."""
    ps = [prompt_text(p.prompt, prompt_chars) for p in pairs]
    cs = [response_text(p.chosen, response_chars) for p in pairs]
    rs = [response_text(p.rejected, response_chars) for p in pairs]
    cache.encode(ps + cs + rs, show_progress=show_progress)
    e_p = cache.encode(ps)
    return features(e_p, cache.encode(cs), layout), features(e_p, cache.encode(rs), layout)


def train_head(x_chosen: np.ndarray, x_rejected: np.ndarray, config: HeadConfig,
               weights: np.ndarray | None = None):
    """A Bradley-Terry head trained on (N, F) chosen/rejected features. Runs on CPU."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(config.seed)
    xc, xr = torch.from_numpy(x_chosen), torch.from_numpy(x_rejected)
    w = torch.ones(len(xc)) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
    dim = xc.shape[1] // len(config.features.split(","))
    head = make_head(xc.shape[1], config.hidden, config.dropout, rank=config.rank, dim=dim)
    both = torch.cat([xc, xr])
    head.mean.copy_(both.mean(0))
    head.std.copy_(both.std(0).clamp_min(1e-6))
    opt = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    head.train()
    for epoch in range(config.epochs):
        order = torch.randperm(len(xc), generator=gen)
        total = 0.0
        for start in range(0, len(xc), config.batch_size):
            idx = order[start:start + config.batch_size]
            margin = head(xc[idx]) - head(xr[idx])
            # Eq. 3: maximise log P(chosen > rejected) = log sigmoid(r_c - r_r)
            loss = (-F.logsigmoid(margin) * w[idx]).sum() / w[idx].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        log.debug("epoch %d: loss %.4f", epoch, total / len(xc))
    return head.eval()


def fit_minibatches(model, n: int, loss_of, *, epochs: int, lr: float, weight_decay: float, batch_size: int,
                    seed: int) -> None:
    """Train ``model`` with AdamW for ``epochs`` passes over ``n`` examples in seeded random
    minibatches; ``loss_of(indices)`` is the loss of one minibatch. Leaves it in train mode."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            loss = loss_of(order[start:start + batch_size])
            opt.zero_grad()
            loss.backward()
            opt.step()


@dataclass(frozen=True)
class GateConfig:
    """How the harmful-request gate g(x) of a gated head is shaped and trained."""

    hidden: int = 0  # 0 = logistic regression; > 0 = one-hidden-layer MLP
    dropout: float = 0.2  # inside the MLP while training
    epochs: int = 20
    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 256
    scale: float = 1.0  # the trained logit is multiplied by this (> 1: a sharper gate)
    seed: int = 0


def train_gate(x_benign: np.ndarray, x_harmful: np.ndarray, config: GateConfig = GateConfig()):
    """The "is this request harmful" classifier on (unit-norm) prompt embeddings: a module
    (``embedding_bt.make_gate``) returning the logit, already multiplied by ``config.scale``.

    Classes are weighed equally whatever their sizes (binary cross-entropy, AdamW, CPU).
    """
    import torch
    import torch.nn.functional as F

    torch.manual_seed(config.seed)
    x = torch.from_numpy(np.concatenate([x_benign, x_harmful]).astype(np.float32))
    y = torch.cat([torch.zeros(len(x_benign)), torch.ones(len(x_harmful))])
    w = torch.where(y > 0, 0.5 / max(len(x_harmful), 1), 0.5 / max(len(x_benign), 1)) * len(y)
    gate = make_gate(x.shape[1], config.hidden, config.dropout)
    fit_minibatches(gate, len(y), lambda idx: (F.binary_cross_entropy_with_logits(gate(x[idx])[:, 0], y[idx],
                                                                                  reduction="none") * w[idx]).mean(),
                    epochs=config.epochs, lr=config.lr, weight_decay=config.weight_decay,
                    batch_size=config.batch_size, seed=config.seed)
    last = gate if isinstance(gate, torch.nn.Linear) else gate[-1]
    with torch.no_grad():  # sharpen: sigmoid(scale * logit)
        last.weight.mul_(config.scale)
        last.bias.mul_(config.scale)
    return gate.eval()


def balance_gate(gate, x_benign: np.ndarray, x_harmful: np.ndarray) -> float:
    """Shift the gate's logit so that, on these validation prompts, the share of benign
    requests flagged equals the share of harmful ones missed (the equal-error threshold).
    Returns the shift added to the output bias."""
    import torch

    with torch.inference_mode():
        benign = gate(torch.from_numpy(x_benign))[:, 0].numpy()
        harmful = gate(torch.from_numpy(x_harmful))[:, 0].numpy()
    candidates = -np.concatenate([benign, harmful, [0.0]])  # shifts that move one prompt across 0
    gap = [abs(np.mean(benign + c > 0) - np.mean(harmful + c <= 0)) for c in candidates]
    shift = float(candidates[int(np.argmin(gap))])
    last = gate if isinstance(gate, torch.nn.Linear) else gate[-1]
    with torch.no_grad():
        last.bias.add_(shift)
    return shift


def gated_head(gate, harm_head, help_head, harm_config: HeadConfig, help_config: HeadConfig, in_dim: int,
               dim: int, alpha_c: float = 1.0, alpha_r: float = 1.0, gate_hidden: int = 0):
    """Assemble a gated head (``embedding_bt.make_gated_head``) from a trained gate and two
    trained heads."""
    head = make_gated_head(in_dim, dim, _sub(harm_config), _sub(help_config), alpha_c=alpha_c, alpha_r=alpha_r,
                           gate_hidden=gate_hidden)
    head.gate.load_state_dict(gate.state_dict())
    head.harm.load_state_dict(harm_head.state_dict())
    head.help.load_state_dict(help_head.state_dict())
    return head.eval()


def _sub(config: HeadConfig) -> dict:
    return {"hidden": config.hidden, "rank": config.rank}


def mean_margin(head, x_chosen: np.ndarray, x_rejected: np.ndarray) -> float:
    """Mean |r(chosen) - r(rejected)|: the head's typical scale, to weigh two heads equally."""
    import torch

    with torch.inference_mode():
        return float((head(torch.from_numpy(x_chosen)) - head(torch.from_numpy(x_rejected))).abs().mean())


def pairwise_accuracy(head, x_chosen: np.ndarray, x_rejected: np.ndarray) -> float:
    """Share of pairs where the chosen answer scores higher (ties count one half)."""
    import torch

    if len(x_chosen) == 0:
        return float("nan")
    with torch.inference_mode():
        rc, rr = head(torch.from_numpy(x_chosen)), head(torch.from_numpy(x_rejected))
    return float(((rc > rr).float() + 0.5 * (rc == rr).float()).mean())


def write_model_card(path: Path, title: str, sections: dict[str, str]) -> Path:
    card = [f"# {title}", ""]
    for heading, body in sections.items():
        card += [f"## {heading}", "", body.rstrip(), ""]
    path.write_text("\n".join(card), encoding="utf-8")
    return path


def card_path(head_path: str | Path) -> Path:
    return Path(head_path).with_suffix(".md")


def train_reward(data: str, out: str | Path, *, fmt: str = "auto", pku_label: str = "safer",
                 on_bad_row: str = "skip", split: str = "train", limit: int | None = None,
                 heldout: float = 0.1, config: HeadConfig = HeadConfig(), encoder: str = DEFAULT_ENCODER,
                 device: str | None = "auto", command: str | None = None) -> dict:
    """Load pairs, train, evaluate on the held-out prompts, write head + card. Returns the figures."""
    started = time.time()
    pairs, report = load_pairs(data, fmt=fmt, pku_label=pku_label, on_bad_row=on_bad_row, split=split, limit=limit)
    print(report.summary(), flush=True)
    for number, why in report.bad:
        print(f"  skipped row {number}: {why}", file=sys.stderr)
    train, held = split_by_prompt(pairs, heldout, config.seed)
    if not train:
        raise ValueError("no training pairs left after the held-out split")
    cache = EmbeddingCache(load_encoder(encoder, device))
    xc, xr = pair_features(train, cache, config.features, show_progress=True)
    head = train_head(xc, xr, config)
    train_acc = pairwise_accuracy(head, xc, xr)
    held_acc = pairwise_accuracy(head, *pair_features(held, cache, config.features)) if held else float("nan")
    figures = {"train_pairs": len(train), "heldout_pairs": len(held), "train_accuracy": round(train_acc, 4),
               "heldout_accuracy": round(held_acc, 4), "rows": report.rows, "malformed_rows": len(report.bad),
               "identical_dropped": len(report.identical)}
    print(f"pairwise accuracy: train {train_acc:.4f} ({len(train)} pairs), held-out {held_acc:.4f} "
          f"({len(held)} pairs)", flush=True)
    out = Path(out)
    command = command or "mara train-reward " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    meta = {"encoder": encoder, "features": config.features, "hidden": config.hidden, "in_dim": xc.shape[1],
            "rank": config.rank, "dim": xc.shape[1] // len(config.features.split(",")),
            "prompt_chars": DEFAULT_PROMPT_CHARS, "response_chars": DEFAULT_RESPONSE_CHARS,
            "data": str(data), "figures": figures}
    save_head(head, out, meta)
    write_model_card(card_path(out), f"Bradley-Terry reward head: {out.name}", {
        "What it is": f"An `embedding-bt` head (MARA, `rewards/embedding_bt.py`): r(x, y) = MLP(phi(e_x, e_y)) "
                      f"on the frozen sentence encoder `{encoder}`, features `{config.features}`, hidden "
                      f"{config.hidden} (0 = linear). Trained with the Bradley-Terry loss (paper Eq. 3).",
        "Data": f"`{data}` (format {fmt}, PKU label {pku_label}, split {split}).\n\n{_report_md(report)}",
        "Command": f"```\n{command}\n```",
        "Training": f"{config}",
        "Results": f"| split | pairs | pairwise accuracy |\n| --- | --- | --- |\n"
                   f"| train | {len(train)} | {train_acc:.4f} |\n"
                   f"| held-out (seed {config.seed}, {heldout:.0%} of prompts) | {len(held)} | {held_acc:.4f} |",
        "Provenance": f"Written {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M UTC} in "
                      f"{time.time() - started:.0f} s.",
    })
    print(f"wrote {out} and {card_path(out)}")
    return figures


def _report_md(report: PairReport) -> str:
    lines = [f"- rows read: {report.rows}", f"- pairs kept: {report.pairs}",
             f"- dropped, identical chosen/rejected: {len(report.identical)}",
             f"- malformed rows skipped: {len(report.bad)}"]
    lines += [f"  - row {n}: {why}" for n, why in report.bad[:20]]
    if len(report.bad) > 20:
        lines.append(f"  - ... and {len(report.bad) - 20} more")
    return "\n".join(lines)
