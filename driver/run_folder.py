"""A run's folder: what it holds, how a new one is made, and the state a resumed run reads.

    config.yaml        the configuration the run goes on with (driver/config.py)
    config.<k>.yaml    what it ran with before its k-th resume that changed a setting
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
import re
import time
from pathlib import Path

import yaml

from core.atomic import atomic_path, write_json_atomic
from driver.config import RunConfig, save_config, to_dict

CONFIG_FILE = "config.yaml"
EARLIER_CONFIG = re.compile(r"config\.(\d+)\.yaml")  # config.<k>.yaml: the settings before the k-th change
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


def record_config(cfg: RunConfig, run_dir: Path) -> list[str]:
    """Write ``cfg`` to the run's config.yaml; returns the settings that changed.

    A resume with ``--set`` (or another ``--config``) goes on with other settings than the
    run started with. config.yaml then says what the run goes on with (a later plain
    ``--resume`` continues with it), and the settings it ran with before are kept beside it as
    config.<k>.yaml, so the folder records every part of the run."""
    path = run_dir / CONFIG_FILE
    new = yaml.safe_load(yaml.safe_dump(to_dict(cfg)))  # as config.yaml would read back
    old_text = path.read_text() if path.is_file() else None
    old = None if old_text is None else yaml.safe_load(old_text)
    if old == new:
        return []
    changed = [] if old is None else _changed_settings(old, new)
    if old_text is not None:
        # The earlier settings are copied before config.yaml is replaced (both atomically), so
        # a run killed in between still has a config.yaml to resume with.
        earlier = 1 + max((int(m.group(1)) for f in run_dir.iterdir() if (m := EARLIER_CONFIG.fullmatch(f.name))),
                          default=0)  # after the highest, so a deleted one never makes us overwrite another
        with atomic_path(run_dir / f"config.{earlier}.yaml") as tmp:
            tmp.write_text(old_text)
    save_config(cfg, path)
    return changed


def _changed_settings(old: object, new: object, where: str = "") -> list[str]:
    """``section.field: old -> new`` for every leaf that differs (lists compared whole)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [change for key in dict.fromkeys([*old, *new])
                for change in _changed_settings(old.get(key), new.get(key), f"{where}.{key}" if where else key)]
    return [] if old == new else [f"{where}: {old!r} -> {new!r}"]


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
