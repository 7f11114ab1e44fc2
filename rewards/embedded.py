"""The embedded offline reward and judge shipped in ``rewards/data`` (see docs/REWARD.md).

``DEFAULT_REWARD`` is the training reward used when nothing else is configured
(``core.config.EMBEDDED_REWARD``: kind ``answer-reader``, path ``embedded``: a head over the
upstream's reading of the whole answer, trained on a strong reader's labels);
``DEFAULT_JUDGE`` is a second head built the same way on disjoint data, for evaluation that
does not grade the policy with its own training reward. The earlier embedded heads
(``embedding-bt``, ``response-class``) ship beside them.
"""

from __future__ import annotations

from pathlib import Path

from core.config import DATA_DIR as CORE_DATA_DIR
from core.config import EMBEDDED_REWARD, ScorerSpec

DATA_DIR = Path(__file__).resolve().parent / "data"
SHIPPED_HEADS = {"reward": "reward_head.safetensors", "judge": "judge_head.safetensors",
                 "safety-reward": "safety_reward.safetensors", "safety-judge": "safety_judge.safetensors",
                 "reader-reward": "reader_reward.safetensors", "reader-judge": "reader_judge.safetensors",
                 "request-gate": "request_gate.safetensors"}
HEAD_PREFIX = {"embedding-bt": "", "response-class": "safety-", "answer-reader": "reader-"}


def shipped_head_path(which: str = "reward") -> Path:
    """Path of a shipped head: ``"reward"`` / ``"judge"`` (embedding-bt, training and
    evaluation), ``"safety-reward"`` / ``"safety-judge"`` (response-class), ``"reader-reward"`` /
    ``"reader-judge"`` (answer-reader) or ``"request-gate"`` (rewards/request_gate.py)."""
    if which not in SHIPPED_HEADS:
        raise ValueError(f"unknown shipped head {which!r}; known: {sorted(SHIPPED_HEADS)}")
    return DATA_DIR / SHIPPED_HEADS[which]


def head_path(path: str, kind: str = "embedding-bt") -> Path:
    """The file a scorer's path names: ``embedded`` (or nothing) is the shipped training
    head of that kind, ``embedded-judge`` its shipped judge head; anything else is a file."""
    if kind not in HEAD_PREFIX:
        raise ValueError(f"{kind!r} has no shipped heads; kinds with one: {sorted(HEAD_PREFIX)}")
    prefix = HEAD_PREFIX[kind]
    if path in ("", "embedded"):
        return shipped_head_path(prefix + "reward")
    if path == "embedded-judge":
        return shipped_head_path(prefix + "judge")
    return Path(path)


def default_prompts_path() -> Path:
    """The project's own default prompt set (JSON array of {instruction, kind})."""
    return CORE_DATA_DIR / "default_prompts.json"


DEFAULT_REWARD = [EMBEDDED_REWARD]
DEFAULT_JUDGE = [ScorerSpec(kind="answer-reader", path=str(shipped_head_path("reader-judge")), options={"name": "judge"})]
