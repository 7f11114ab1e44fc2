"""answers.jsonl as an evaluation goes: each batch's records appended as it finishes, so that
an interrupted ``mara eval`` loses at most one batch, and read back by ``mara eval --resume``.

    append_records(out / ANSWERS, records)      # one JSON line per prompt, flushed to disk
    done = read_records(out / ANSWERS)          # what an interrupted run finished
    write_records(out / ANSWERS, done)          # the whole file anew, atomically

The arguments of the evaluation are kept beside it (``ARGUMENTS``), so a resumed run answers
the rest exactly as the first run would have.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from core.atomic import atomic_path, write_json_atomic
from core.jsonl import read_jsonl

ANSWERS = "answers.jsonl"
ARGUMENTS = "eval_args.json"  # the evaluation's settings, for --resume
FINISHED = "results.md"  # written once every prompt has been answered and judged


def _lines(records: list[dict]) -> str:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def append_records(path: str | os.PathLike, records: list[dict]) -> None:
    """Append one JSON line per record and flush them to disk before returning."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(_lines(records))
        f.flush()
        os.fsync(f.fileno())


def write_records(path: str | os.PathLike, records: list[dict]) -> None:
    """Replace the file with one JSON line per record, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(_lines(records), encoding="utf-8")


def read_records(path: str | os.PathLike) -> list[dict]:
    """The records of an answers.jsonl ([] when there is none); a last line cut short by a kill
    is dropped (its batch is answered again), a damaged line elsewhere is an error."""
    return read_jsonl(path) if Path(path).is_file() else []


def save_arguments(out: Path, arguments: dict) -> None:
    write_json_atomic(out / ARGUMENTS, arguments)


def load_arguments(out: Path) -> dict:
    path = out / ARGUMENTS
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {out} holds no evaluation to resume")
    return json.loads(path.read_text(encoding="utf-8"))


def start_fresh(out: Path) -> None:
    """Prepare ``out`` for a new evaluation: refuse one whose evaluation was interrupted
    (its answers would be lost), clear a finished one's answers."""
    answers = out / ANSWERS
    if answers.is_file() and not (out / FINISHED).is_file():
        raise ValueError(f"{out} holds an interrupted evaluation ({len(read_records(answers))} prompts answered): "
                         f"'mara eval --resume {out}' continues it, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    answers.unlink(missing_ok=True)
    (out / FINISHED).unlink(missing_ok=True)
