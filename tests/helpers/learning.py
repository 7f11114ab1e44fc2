"""A learner rebuilt from nothing but its checkpoint folder, for tests of checkpoints."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from core.config import SACConfig
from core.state_features import PAPER_STATE
from learner.learner import SACLearner, read_manifest


def learner_from_checkpoint(directory: str | Path, state_dim: int | None = None, device: str = "cpu") -> SACLearner:
    """A learner of the checkpoint's own SAC settings, seed, upstream model and states, restored
    from it; ``state_dim``: the states it must read (None: the checkpoint's)."""
    manifest = read_manifest(directory)
    known = {f.name for f in fields(SACConfig)}
    sac = SACConfig(**{k: v for k, v in manifest["sac"].items() if k in known})
    learner = SACLearner(state_dim=state_dim or int(manifest["state_dim"]), sac=sac, device=device,
                         seed=int(manifest.get("seed", 0)), upstream_model=str(manifest.get("upstream_model", "")),
                         state_features=str(manifest.get("state_features", PAPER_STATE)))
    learner.restore_checkpoint(directory)
    return learner
