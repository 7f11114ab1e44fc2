"""docs/BENCHMARKS.md is what scripts/benchmarks_md.py writes from the benchmarks' result
files: no figure in it is copied by hand."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_benchmarks_page_is_generated_from_the_result_files():
    proc = subprocess.run([sys.executable, "scripts/benchmarks_md.py", "--check"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    page = (ROOT / "docs" / "BENCHMARKS.md").read_text(encoding="utf-8")
    for script in (ROOT / "benchmarks").glob("bench_*.py"):
        assert f"## {script.stem}" in page, script.name
    assert "- command: `python benchmarks/bench_fluency.py" in page  # a recorded result with its command
