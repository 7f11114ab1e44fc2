"""The embedded offline reward and judge shipped in ``mara/data`` (see docs/REWARD.md).

``DEFAULT_REWARD`` is the training reward used when nothing else is configured;
``DEFAULT_JUDGE`` is a second head trained on disjoint data, for evaluation that does not
grade the policy with its own training reward.
"""

from __future__ import annotations

from pathlib import Path

from mara.rewards.base import ScorerSpec

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
SHIPPED_HEADS = {"reward": "reward_head.safetensors", "judge": "judge_head.safetensors"}


def shipped_head_path(which: str = "reward") -> Path:
    """Path of a shipped embedding-bt head: ``"reward"`` (training) or ``"judge"`` (evaluation)."""
    if which not in SHIPPED_HEADS:
        raise ValueError(f"unknown shipped head {which!r}; known: {sorted(SHIPPED_HEADS)}")
    return DATA_DIR / SHIPPED_HEADS[which]


def default_prompts_path() -> Path:
    """The project's own default prompt set (JSON array of {instruction, kind})."""
    return DATA_DIR / "default_prompts.json"


DEFAULT_REWARD = [ScorerSpec(kind="embedding-bt", path=str(shipped_head_path("reward")))]
DEFAULT_JUDGE = [ScorerSpec(kind="embedding-bt", path=str(shipped_head_path("judge")), options={"name": "judge"})]
