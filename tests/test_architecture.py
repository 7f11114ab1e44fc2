"""The import layers of pyproject.toml's import-linter contracts: kept by the project, and
actually enforced (a copy of the project with one upward import breaks them)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (requires-python): pytest itself depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
# The copy below must hold every package the contracts name: lint-imports finds a missing one
# through the installed project instead, outside the copy.
PACKAGES = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["root_packages"]


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    lint = shutil.which("lint-imports")
    if lint is None:
        pytest.fail("lint-imports is not installed: bash scripts/install.sh installs the test extra")
    # PYTHONPATH: the packages of ``cwd`` must win over the installed (editable) project.
    return subprocess.run([lint, "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(cwd)})


def test_the_layers_are_kept():
    proc = lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Contracts: 1 kept, 0 broken." in proc.stdout


@pytest.mark.parametrize("module, upward", [
    ("core/contracts.py", "driver.run"),  # the kernel imports nothing of the project
    ("learner/service.py", "actors.worker_group"),  # components never import each other
    ("envs/generation.py", "evaluation.report"),  # no component layer imports evaluation
])
def test_an_upward_import_breaks_the_layers(tmp_path, module, upward):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("data", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with open(tmp_path / module, "a") as f:
        f.write(f"\nimport {upward}  # noqa: E402,F401\n")
    proc = lint_imports(tmp_path)
    assert proc.returncode != 0 and "BROKEN" in proc.stdout, proc.stdout[-3000:]
    assert f"{module[:-3].replace('/', '.')} -> {upward}" in proc.stdout
