"""``mara train-reward``: fit a Bradley-Terry head on a frozen sentence encoder.

    mara train-reward --data pairs.jsonl --out head.safetensors
    mara train-reward --data PKU-Alignment/PKU-SafeRLHF --pku-label safer --out cost.safetensors

Loss (paper Eq. 3): -log sigmoid(r(x, y_chosen) - r(x, y_rejected)), Adam, a few epochs.
Embeddings are computed once and kept in memory; the held-out split is seeded and
disjoint by prompt. Writes the head (``.safetensors``) and a model card (``.md``) with the
data, the command, the counts and the accuracies.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys

from rewards.embedding_bt import DEFAULT_ENCODER
from rewards.recipe.pairs import FORMATS
from rewards.recipe.train import HeadConfig, train_reward


def add_train_reward_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``train-reward`` on an argparse subparsers object (``mara train-reward``)."""
    p = subparsers.add_parser("train-reward", help="train a Bradley-Terry reward head on preference pairs",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)
    p.set_defaults(func=_run)
    return p


def _add_arguments(p: argparse.ArgumentParser) -> None:
    d = HeadConfig()
    p.add_argument("--data", required=True, help="hub dataset id or local .jsonl/.json/.parquet/dataset folder")
    p.add_argument("--out", required=True, help="output head file (.safetensors); the model card goes next to it")
    p.add_argument("--format", dest="fmt", choices=FORMATS, default="auto", help="row layout (default: per row)")
    p.add_argument("--pku-label", choices=["safer", "better"], default="safer",
                   help="PKU-SafeRLHF rows: prefer the safer or the better response")
    p.add_argument("--on-bad-row", choices=["skip", "error"], default="skip",
                   help="malformed rows: report and skip them, or refuse the data")
    p.add_argument("--split", default="train", help="dataset split for hub ids")
    p.add_argument("--limit", type=int, help="read at most this many rows")
    p.add_argument("--heldout", type=float, default=0.1, help="share of prompts held out for evaluation")
    p.add_argument("--encoder", default=DEFAULT_ENCODER, help="sentence encoder (hub id or folder)")
    p.add_argument("--features", default=d.features, help="feature layout, e.g. 'p,r,p*r' or 'r'")
    p.add_argument("--hidden", type=int, default=d.hidden, help="hidden units (0 = linear head)")
    p.add_argument("--rank", type=int, default=d.rank, help="rank of the prompt x response bilinear term")
    p.add_argument("--dropout", type=float, default=d.dropout)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default="auto", help="encoder device: auto, cpu, cuda")


def _run(args) -> int:
    config = HeadConfig(features=args.features, hidden=args.hidden, rank=args.rank, dropout=args.dropout, epochs=args.epochs,
                        lr=args.lr, weight_decay=args.weight_decay, batch_size=args.batch_size, seed=args.seed)
    train_reward(args.data, args.out, fmt=args.fmt, pku_label=args.pku_label, on_bad_row=args.on_bad_row,
                 split=args.split, limit=args.limit, heldout=args.heldout, config=config, encoder=args.encoder,
                 device=args.device, command=getattr(args, "command_line", None))
    return 0


def train_reward_main(argv: list[str] | None = None) -> int:
    """Entry point: ``train_reward_main(["--data", "pairs.jsonl", "--out", "head.safetensors"])``."""
    parser = argparse.ArgumentParser(prog="mara train-reward", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.command_line = "mara train-reward " + " ".join(shlex.quote(a) for a in argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return _run(args)


if __name__ == "__main__":
    raise SystemExit(train_reward_main())
