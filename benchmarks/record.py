"""What every benchmark writes: ``benchmarks/results/<name>.json`` with the command, the
machine, the date, the table's rows and which of its columns are ratios measured in one run,
so that docs/BENCHMARKS.md is generated from measurements (scripts/benchmarks_md.py), never
copied by hand.

    write_result("bench_fluency", rows, ratios=["time / full"], notes="...")
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    """This machine in one line: CPU, cores, memory, the accelerator if any, Python and torch."""
    import psutil
    import torch

    cpu = platform.processor() or platform.machine()
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB{gpu}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def write_result(name: str, rows: list[dict], ratios: list[str] = (), notes: str = "",
                 path: str | Path | None = None) -> Path:
    """Write the benchmark's result file (the rows are the table: one dict per row, its keys the
    columns); ``ratios``: the columns that are ratios of figures measured in the same run."""
    path = Path(path) if path else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join([f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    path.write_text(json.dumps({"benchmark": name, "command": command, "date": time.strftime("%Y-%m-%d"),
                                "machine": machine(), "ratios_in_one_run": list(ratios), "notes": notes,
                                "rows": rows}, indent=2) + "\n")
    return path
