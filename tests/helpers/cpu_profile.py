"""What each test costs the machine: a pytest plugin that counts the CPU seconds of every process
(the test's own, the Ray actors and subprocesses it starts, the machine's background) while a
test's setup, call and teardown run.

The suite is CPU-bound on a 2-core machine: a test that waits costs the other test process
nothing, and one that starts processes costs more than its wall time shows. So the suite's time
is cut where these figures, not ``--durations``, are large. Run the suite in one process so
that each figure is one test's:

    PYTHONPATH=tests python -m pytest -n 0 -p helpers.cpu_profile

It prints the most expensive tests and writes every test's figures to ``$MARA_CPU_PROFILE``
(default: runs/suite_cpu.json) as a list of {"test", "cpu_s", "wall_s", "start", "process"}. With
xdist (``-n 2``) each test process also writes its own tests' figures (``suite_cpu.gw0.json``, a
timeline of that process), and the figures of both share the machine's CPU seconds.
"""

from __future__ import annotations

import glob
import json
import os
import time

import pytest

SHOWN = 15
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_rows: list[dict] = []
_session_start = time.time()


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores, all processes)."""
    with open("/proc/stat") as f:
        ticks = [int(t) for t in f.readline().split()[1:]]
    idle, iowait = ticks[3], ticks[4]
    return (sum(ticks) - idle - iowait) / _TICKS_PER_S


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    cpu, start = busy_cpu_seconds(), time.time()
    yield
    _rows.append({"test": item.nodeid, "cpu_s": round(busy_cpu_seconds() - cpu, 2),
                  "wall_s": round(time.time() - start, 2), "start": start,
                  "process": os.environ.get("PYTEST_XDIST_WORKER", "main")})


def pytest_sessionfinish(session):
    """Each process writes its own tests' figures (the suite's test processes, with -n 2)."""
    if _rows and "PYTEST_XDIST_WORKER" in os.environ:
        with open(_path(os.environ["PYTEST_XDIST_WORKER"]), "w") as f:
            json.dump(_rows, f, indent=0)


def _path(process: str = "") -> str:
    path = os.environ.get("MARA_CPU_PROFILE", "runs/suite_cpu.json")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return path.replace(".json", f".{process}.json") if process else path


def pytest_terminal_summary(terminalreporter):
    """The process that reports: this one's tests, or (with xdist) every test process's."""
    if "PYTEST_XDIST_WORKER" in os.environ:
        return
    rows = _rows or [r for path in sorted(glob.glob(_path("gw*"))) if os.path.getmtime(path) >= _session_start
                     for r in json.load(open(path))]
    if not rows:
        return
    path = _path()
    with open(path, "w") as f:
        json.dump(rows, f, indent=0)
    total = sum(r["cpu_s"] for r in rows)
    terminalreporter.section(f"CPU seconds of the machine per test ({total:.0f} in all; every test in {path})")
    for r in sorted(rows, key=lambda r: -r["cpu_s"])[:SHOWN]:
        terminalreporter.write_line(f"{r['cpu_s']:7.1f} cpu s {r['wall_s']:7.1f} wall s  {r['test']}")
