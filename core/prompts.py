"""Prompt sets: loading them from files or datasets, the one place prompts are read.

Sources:
- a JSON array of objects (the MARA reference format: the prompt is in ``instruction``);
- a ``.jsonl`` file of objects, a ``.parquet`` file, or a ``.txt`` file with one prompt a line;
- a Hugging Face dataset id or local dataset folder, loaded with ``datasets`` (``split``).

Rows without a usable prompt (missing field, not a string, blank) are reported with their
row numbers; ``on_bad_row="skip"`` drops them with a warning, ``"error"`` refuses the file.
``where`` keeps only the rows whose fields have the given values (e.g. ``{"source":
"helpful-base"}`` in ../shared/data/prompts/hhrlhf_train.json); rows it leaves out are
not bad rows.

``training_prompts`` reads a run's prompt configuration: one source, or a *mix* of
several (each with its own column, filter and limit), minus the *excluded* sets (the
prompts kept for evaluation) and every prompt nearly equal to one of them
(``core.splits.overlapping``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


class PromptFileError(ValueError):
    pass


def load_prompts(source: str | Path, column: str = "instruction", split: str = "train",
                 on_bad_row: str = "skip", limit: int | None = None, where: dict | None = None) -> list[str]:
    if on_bad_row not in ("skip", "error"):
        raise ValueError("on_bad_row must be 'skip' or 'error'")
    path = Path(source)
    if path.suffix in (".json", ".jsonl", ".txt", ".parquet") and not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    if path.suffix == ".txt":
        rows = [{column: line} for line in path.read_text(encoding="utf-8").splitlines()]
    elif path.suffix == ".json":
        rows = read_json_array(path)
    elif path.suffix == ".jsonl":
        rows = _read_jsonl(path)
    else:
        rows = _read_dataset(str(source), split)
    if where:
        rows = [r for r in rows if not isinstance(r, dict) or all(r.get(k) == v for k, v in where.items())]
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
        chosen = f" among the rows with {where}" if where else ""
        raise PromptFileError(f"{source}: no prompts found in field {column!r}{chosen}")
    return prompts[:limit] if limit else prompts


def read_prompt_set(s) -> list[str]:
    """The prompts of one entry of a prompt configuration's ``mix`` or ``exclude`` (a
    ``core.config.PromptSet``: source, column, split, limit, where)."""
    return load_prompts(s.source, column=s.column, split=s.split, limit=s.limit or None,
                        where=dict(s.where) or None)


def training_prompts(config) -> list[str]:
    """The prompts of a ``core.config.PromptConfig``: its ``mix`` of prompt sets (or its
    single ``source``), in order, without the prompts of its ``exclude`` sets."""
    if config.mix:
        prompts = [p for s in config.mix for p in read_prompt_set(s)]
    else:
        sources = [config.source] if isinstance(config.source, str) else list(config.source)
        prompts = [p for source in sources for p in load_prompts(source, column=config.column, split=config.split,
                                                                limit=config.limit or None)]
    excluded = [p for s in config.exclude for p in read_prompt_set(s)]
    if excluded:
        from core.splits import overlapping

        # Equal after normalisation, or nearly equal: "How do I pick a lock?" is not trained on
        # while "how do i pick a lock" is held out.
        left_out = set(overlapping(prompts, excluded))
        kept = [p for p in prompts if p not in left_out]
    else:
        kept = prompts
    if len(kept) < len(prompts):
        log.info("left out %d training prompts that are (nearly) equal to one in the excluded (evaluation) sets",
                 len(prompts) - len(kept))
    if not kept:
        raise PromptFileError("every training prompt is in an excluded set")
    return kept


def read_json_array(path: Path, error: type[Exception] = PromptFileError) -> list:
    """The rows of a JSON file holding one array (prompt sets, preference pairs); ``error``
    (with the path in its message) when it is not valid JSON or not an array."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise error(f"{path} is not valid JSON: {err}") from err
    if not isinstance(rows, list):
        raise error(f"{path} must hold a JSON array of objects")
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
