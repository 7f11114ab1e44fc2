"""Prompt sets: loading them from files or datasets, the one place prompts are read.

Sources:
- a JSON array of objects (the MARA reference format: the prompt is in ``instruction``);
- a ``.jsonl`` file of objects, a ``.parquet`` file, or a ``.txt`` file with one prompt a line;
- a Hugging Face dataset id or local dataset folder, loaded with ``datasets`` (``split``).

Rows without a usable prompt (missing field, not a string, blank) are reported with their
row numbers; ``on_bad_row="skip"`` drops them with a warning, ``"error"`` refuses the file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


class PromptFileError(ValueError):
    pass


def load_prompts(source: str | Path, column: str = "instruction", split: str = "train",
                 on_bad_row: str = "skip", limit: int | None = None) -> list[str]:
    if on_bad_row not in ("skip", "error"):
        raise ValueError("on_bad_row must be 'skip' or 'error'")
    path = Path(source)
    if path.suffix in (".json", ".jsonl", ".txt", ".parquet") and not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    if path.suffix == ".txt":
        rows = [{column: line} for line in path.read_text(encoding="utf-8").splitlines()]
    elif path.suffix == ".json":
        rows = _read_json(path)
    elif path.suffix == ".jsonl":
        rows = _read_jsonl(path)
    else:
        rows = _read_dataset(str(source), split)
    prompts, bad = [], []
    for number, row in enumerate(rows, start=1):
        value = row.get(column) if isinstance(row, dict) else None
        if isinstance(value, str) and value.strip():
            prompts.append(value.strip())
        else:
            bad.append(number)
    if bad:
        message = f"{source}: {len(bad)} row(s) without a non-empty string field {column!r}: rows {_short(bad)}"
        if on_bad_row == "error":
            raise PromptFileError(message)
        log.warning("%s (skipped)", message)
    if not prompts:
        raise PromptFileError(f"{source}: no prompts found in field {column!r}")
    return prompts[:limit] if limit else prompts


def _read_json(path: Path) -> list:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PromptFileError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(rows, list):
        raise PromptFileError(f"{path} must hold a JSON array of objects")
    return rows


def _read_jsonl(path: Path) -> list:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s line %d is not valid JSON", path, number)
            rows.append(None)
    return rows


def _read_dataset(source: str, split: str) -> list:
    import datasets

    if source.endswith(".parquet"):
        ds = datasets.load_dataset("parquet", data_files=source, split="train")
    elif Path(source).is_dir() and (Path(source) / "dataset_info.json").is_file():
        ds = datasets.load_from_disk(source)
        ds = ds[split] if isinstance(ds, datasets.DatasetDict) else ds
    else:
        ds = datasets.load_dataset(source, split=split)
    return list(ds)


def _short(numbers: list[int], shown: int = 10) -> str:
    text = ", ".join(map(str, numbers[:shown]))
    return text + (f" and {len(numbers) - shown} more" if len(numbers) > shown else "")
