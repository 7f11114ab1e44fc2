"""Preference pairs (prompt, chosen, rejected) from files or hub datasets.

Accepted row layouts (``fmt="auto"`` picks per row):
- ``triple``: ``{"prompt", "chosen", "rejected"}`` (strings);
- ``hh``: Anthropic HH-RLHF dialogues ``{"chosen", "rejected"}`` that share everything but
  the last assistant turn. The prompt is the dialogue up to the last ``"\\n\\nAssistant:"``
  (a single human turn becomes its plain text; multi-turn prompts keep the dialogue text);
  the responses are the two last assistant turns;
- ``pku``: PKU-SafeRLHF rows ``{"prompt", "response_0", "response_1", "safer_response_id"
  / "better_response_id"}``; ``pku_label`` picks which id is the preference.

Sources: ``.jsonl`` (line numbers), ``.json`` (an array; row numbers), ``.parquet`` (row
numbers), or a Hugging Face dataset id / local dataset folder (row numbers, ``split``).
Malformed rows are reported with their numbers and skipped (``on_bad_row="skip"``) or
refused (``"error"``); rows whose chosen and rejected answers are identical are dropped
and counted. Nothing is dropped silently: see ``PairReport``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from core.prompts import read_json_array

log = logging.getLogger(__name__)

FORMATS = ("auto", "triple", "hh", "pku")
HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"


class PairDataError(ValueError):
    pass


@dataclass(frozen=True)
class Pair:
    prompt: str
    chosen: str
    rejected: str
    row: int = 0  # 1-based line (jsonl) or row number in the source


@dataclass
class PairReport:
    source: str
    rows: int = 0
    pairs: int = 0
    bad: list[tuple[int, str]] = field(default_factory=list)  # (row number, reason)
    identical: list[int] = field(default_factory=list)  # rows with chosen == rejected, dropped

    def summary(self) -> str:
        text = (f"{self.source}: {self.rows} rows -> {self.pairs} pairs; {len(self.identical)} dropped "
                f"(identical chosen/rejected); {len(self.bad)} malformed")
        if self.bad:
            shown = "; ".join(f"row {n}: {why}" for n, why in self.bad[:10])
            text += f" ({shown}{'; ...' if len(self.bad) > 10 else ''})"
        return text


def split_hh_dialogue(dialogue: str) -> tuple[str, str]:
    """(prompt, last assistant answer) of an HH-RLHF dialogue; ValueError when it has none."""
    cut = dialogue.rfind(ASSISTANT)
    if cut < 0:
        raise ValueError("no '\\n\\nAssistant:' turn")
    context, answer = dialogue[:cut], dialogue[cut + len(ASSISTANT):].strip()
    if context.count(HUMAN) == 1 and ASSISTANT not in context and context.strip().startswith("Human:"):
        prompt = context.strip()[len("Human:"):].strip()
    else:
        prompt = context.strip()
    if not prompt:
        raise ValueError("empty prompt before the last assistant turn")
    return prompt, answer


def split_hh_pair(chosen: str, rejected: str) -> tuple[str, str, str]:
    """(prompt, chosen answer, rejected answer) of two HH-RLHF dialogues.

    The split is the last ``"\\n\\nAssistant:"`` inside the text both dialogues share, so a
    final answer that itself contains such a marker stays whole.
    """
    common = os.path.commonprefix([chosen, rejected])
    cut = common.rfind(ASSISTANT)
    if cut < 0:
        raise ValueError("chosen and rejected dialogues share no '\\n\\nAssistant:' turn")
    prompt, _ = split_hh_dialogue(chosen[:cut + len(ASSISTANT)])
    start = cut + len(ASSISTANT)
    return prompt, chosen[start:].strip(), rejected[start:].strip()


def _is_text(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def row_to_pair(row, number: int, fmt: str = "auto", pku_label: str = "safer") -> Pair:
    """One row as a Pair; ValueError with the reason when it is malformed."""
    if not isinstance(row, dict):
        raise ValueError(f"expected an object, got {type(row).__name__}")
    if fmt == "auto":
        if "response_0" in row or "response_1" in row:
            fmt = "pku"
        elif "prompt" in row:
            fmt = "triple"
        elif "chosen" in row or "rejected" in row:
            fmt = "hh"
        else:
            raise ValueError(f"unknown layout (keys {sorted(row)[:6]})")
    if fmt == "triple":
        for key in ("prompt", "chosen", "rejected"):
            if not _is_text(row.get(key)):
                raise ValueError(f"field {key!r} missing or not a non-empty string")
        return Pair(row["prompt"].strip(), row["chosen"].strip(), row["rejected"].strip(), number)
    if fmt == "hh":
        for key in ("chosen", "rejected"):
            if not _is_text(row.get(key)):
                raise ValueError(f"field {key!r} missing or not a non-empty string")
        prompt, chosen, rejected = split_hh_pair(row["chosen"], row["rejected"])
        if not chosen and not rejected:
            raise ValueError("both last assistant turns are empty")
        return Pair(prompt, chosen, rejected, number)
    if fmt == "pku":
        key = f"{pku_label}_response_id"
        for name in ("prompt", "response_0", "response_1"):
            if not _is_text(row.get(name)):
                raise ValueError(f"field {name!r} missing or not a non-empty string")
        label = row.get(key)
        if isinstance(label, bool) or label not in (0, 1):
            raise ValueError(f"field {key!r} must be 0 or 1, got {label!r}")
        chosen, rejected = row[f"response_{label}"], row[f"response_{1 - label}"]
        return Pair(row["prompt"].strip(), chosen.strip(), rejected.strip(), number)
    raise ValueError(f"unknown format {fmt!r}; known: {FORMATS}")


def _rows(source: str, split: str) -> Iterator[tuple[int, object]]:
    """(row number, row) pairs; a jsonl line that is not JSON yields (line, JSONDecodeError)."""
    path = Path(source).expanduser()
    if path.suffix in (".jsonl", ".json", ".parquet") and not path.is_file():
        raise FileNotFoundError(f"preference file not found: {path}")
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as err:
                    yield number, err
    elif path.suffix == ".json":
        yield from enumerate(read_json_array(path, PairDataError), start=1)
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        yield from enumerate(pq.read_table(str(path)).to_pylist(), start=1)
    else:
        import datasets

        if path.is_dir():
            try:
                data = datasets.load_from_disk(str(path))
                data = data[split] if isinstance(data, datasets.DatasetDict) else data
            except FileNotFoundError:
                data = datasets.load_dataset(str(path), split=split)
        else:
            data = datasets.load_dataset(source, split=split)
        yield from enumerate(data, start=1)


def load_pairs(source: str | Path, fmt: str = "auto", pku_label: str = "safer", on_bad_row: str = "skip",
               split: str = "train", limit: int | None = None) -> tuple[list[Pair], PairReport]:
    """All usable pairs of ``source`` and a report of what was dropped and why."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    if pku_label not in ("safer", "better"):
        raise ValueError(f"pku_label must be 'safer' or 'better', got {pku_label!r}")
    if on_bad_row not in ("skip", "error"):
        raise ValueError(f"on_bad_row must be 'skip' or 'error', got {on_bad_row!r}")
    report = PairReport(str(source))
    pairs: list[Pair] = []
    for number, row in _rows(str(source), split):
        if limit is not None and report.rows >= limit:
            break
        report.rows += 1
        try:
            if isinstance(row, json.JSONDecodeError):
                raise ValueError(f"not valid JSON ({row.msg})")
            pair = row_to_pair(row, number, fmt, pku_label)
        except ValueError as err:
            report.bad.append((number, str(err)))
            continue
        if pair.chosen == pair.rejected:
            report.identical.append(number)
            continue
        pairs.append(pair)
    report.pairs = len(pairs)
    if report.bad:
        if on_bad_row == "error":
            raise PairDataError(report.summary())
        log.warning("%s (malformed rows skipped)", report.summary())
    if not pairs:
        raise PairDataError(f"{source}: no usable preference pairs ({report.summary()})")
    return pairs, report
