"""A run's folder: what it holds, how a new one is made, and the state a resumed run reads.

    config.yaml        the run's configuration (driver/config.py)
    metrics.jsonl      progress, rollout, scoring and snapshot records, one JSON object a line
                       (+ metrics.csv at the end)
    checkpoints/       learner checkpoints (learner/service.py)
    replay.arrow       the replay snapshot
    state.json         prompt position, prompts to hand out again, counters, reward sums, and
                       which replay snapshot and checkpoint they go with
    agent.safetensors  the trained actor (only when the learner made an update)
    summary.json       the run's summary

A snapshot (every ``replay.snapshot_every_s`` seconds, and when the run stops) writes the
learner's checkpoint, then the replay, then state.json, each atomically: a run killed at
any moment (even by SIGKILL) resumes from the newest complete set.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from core.atomic import write_json_atomic
from driver.config import RunConfig

CONFIG_FILE = "config.yaml"
STATE_FILE = "state.json"
REPLAY_FILE = "replay.arrow"
AGENT_FILE = "agent.safetensors"
SUMMARY_FILE = "summary.json"


def new_run_dir(cfg: RunConfig) -> Path:
    """An empty folder for a new run (named by a time stamp when ``cfg.run_name`` is empty)."""
    path = Path(cfg.output_dir) / (cfg.run_name or time.strftime("%Y%m%d-%H%M%S"))
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"run folder {path} exists and is not empty: pick another run_name or --resume it")
    path.mkdir(parents=True, exist_ok=True)
    return path


def resumable(run_dir: Path) -> dict[str, object]:
    """What a stopped run left to resume from (a checkpoint's name, the replay snapshot, the
    saved state); a ValueError when it left nothing."""
    from learner.service import latest_checkpoint

    found = {"checkpoint": latest_checkpoint(run_dir), "replay": (run_dir / REPLAY_FILE).is_file(),
             "state": (run_dir / STATE_FILE).is_file()}
    if not any(found.values()):
        raise ValueError(f"nothing to resume in {run_dir}: it holds no learner checkpoint, no replay snapshot "
                         f"and no saved state (the run stopped before its first snapshot); start a new run instead")
    return found


def read_state(run_dir: Path) -> dict:
    """The state a stopped run saved ({} when it saved none)."""
    path = run_dir / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def write_state(run_dir: Path, state: dict) -> None:
    write_json_atomic(run_dir / STATE_FILE, state)
