"""JSON-lines records on disk: the run's metrics log is read here, without the driver.

    rows = read_jsonl(Path(run_dir) / METRICS_FILE)   # one dict per line
    write_csv(rows, "metrics.csv")                     # header: union of keys, first-seen order
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Iterable, Mapping

# The metrics log of a run, ``run_dir/metrics.jsonl`` (written by driver.metrics.MetricsLog).
METRICS_FILE = "metrics.jsonl"


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """All records of a JSON-lines file; a torn (unparsable) last line is skipped."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break  # the process died mid-write
            raise
    return rows


def write_csv(rows: Iterable[Mapping[str, object]], path: str | os.PathLike) -> Path:
    """Write ``rows`` as CSV (header: union of keys, first-seen order); return the path."""
    rows = list(rows)
    header = list(dict.fromkeys(k for row in rows for k in row))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return path
