"""Judges: the scorers that grade answers, what column of the table each fills, and whether
one is also the agent's training reward.

    spec = parse_judge_spec("cost=score-model:PKU-Alignment/beaver-7b-v1.0-cost:harmless")
    judge = build_judge(spec)                 # a Judge: role "harmless", lower is better
    judges = default_judges()                 # rewards.DEFAULT_JUDGE when no --judge is given

A judge has a *role* — the column of the paper's Table 5 it fills: ``helpful`` (a reward
model) or ``harmless`` — and a *direction*: a cost model (beaver-7b-v1.0-cost) scores harm,
so for it a LOWER score is better (``lower_is_better=True``).

A judge that is also the training reward is not independent evidence. The agent file
records its training reward (``training_reward_sources``); ``source_key`` makes different
names of the same scorer file compare equal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from rewards.base import SentenceScorer
from rewards.embedded import head_path

JUDGE_ROLES = ("helpful", "harmless", "overall")
# Judge-spec suffix -> (role, lower_is_better).
ROLE_SUFFIXES = {"helpful": ("helpful", False), "harmless": ("harmless", True),
                 "harmless-reward": ("harmless", False), "overall": ("overall", False)}
# Paths recorded relative to the project (the shipped agent's training reward) resolve against it.
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Judge:
    """One scorer used to judge answers."""

    name: str
    scorer: SentenceScorer
    role: str = "helpful"  # the table column it fills: "helpful" (reward), "harmless", or "overall" (both)
    lower_is_better: bool = False  # True for a cost model: less harm is better
    source: str = ""  # how it was built, e.g. "score-model:PKU-Alignment/beaver-7b-v1.0-cost"

    def __post_init__(self) -> None:
        if self.role not in JUDGE_ROLES:
            raise ValueError(f"judge {self.name!r}: role must be one of {JUDGE_ROLES}, got {self.role!r}")

    @property
    def direction(self) -> str:
        return "lower is better (cost)" if self.lower_is_better else "higher is better"

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        scores = np.asarray(self.scorer.score(list(prompts), list(responses)), dtype=np.float64).reshape(-1)
        if scores.shape != (len(prompts),):
            raise ValueError(f"judge {self.name!r} returned {scores.shape[0]} scores for {len(prompts)} answers")
        if np.isnan(scores).any():
            raise ValueError(f"judge {self.name!r} returned NaN scores")
        return scores

    def best(self, scores: np.ndarray) -> int:
        """Index of the best score (the first one on ties)."""
        return int(np.argmin(scores) if self.lower_is_better else np.argmax(scores))


@dataclass(frozen=True)
class JudgeSpec:
    """``NAME=KIND:PATH[:helpful|harmless|harmless-reward|overall]`` as given on the command line."""

    name: str
    kind: str
    path: str
    role: str = "helpful"
    lower_is_better: bool = False

    @property
    def source(self) -> str:
        return f"{self.kind}:{self.path}"


def parse_judge_spec(text: str, name: str | None = None) -> JudgeSpec:
    """Parse ``NAME=KIND:PATH[:ROLE]`` (or ``KIND:PATH[:ROLE]`` with ``name`` given).

    PATH may itself hold colons (``module:function``, URLs); only a trailing ``:helpful``,
    ``:harmless`` (a cost model: lower is better), ``:harmless-reward`` (a harmlessness
    reward: higher is better) or ``:overall`` (one reward for both, higher is better) is read
    as the role. Without one the role is ``helpful``."""
    if name is None:
        name, sep, text = text.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"judge must look like NAME=KIND:PATH[:ROLE], got {text!r}")
    kind, sep, path = text.partition(":")
    if not sep or not kind:
        raise ValueError(f"judge {name!r} must look like KIND:PATH[:ROLE], got {text!r}")
    role, lower = "helpful", False
    head, _, last = path.rpartition(":")
    if head and last in ROLE_SUFFIXES:
        path, (role, lower) = head, ROLE_SUFFIXES[last]
    elif path in ROLE_SUFFIXES:  # a kind without a path, e.g. "embedding-bt:harmless"
        path, (role, lower) = "", ROLE_SUFFIXES[path]
    return JudgeSpec(name.strip(), kind.strip(), path, role, lower)


def build_judge(spec: JudgeSpec, options: dict | None = None) -> Judge:
    """Build the scorer with ``rewards.base.build_scorer``."""
    from core.config import ScorerSpec
    from rewards.base import build_scorer

    try:
        scorer = build_scorer(ScorerSpec(spec.kind, spec.path, options=dict(options or {})))
    except (ImportError, AttributeError) as err:  # a "module:function" that does not exist
        raise ValueError(f"judge {spec.name!r} ({spec.source}): {err}") from err
    return Judge(spec.name, scorer, spec.role, spec.lower_is_better, spec.source)


def default_judges() -> dict[str, Judge]:
    """The project's default evaluation judge(s): ``rewards.DEFAULT_JUDGE``, the
    embedded head trained on data disjoint from the default training reward's. It is one
    reward for helpfulness and harmlessness together (role ``overall``, higher is better)."""
    import rewards
    from core.config import ScorerSpec

    default = getattr(rewards, "DEFAULT_JUDGE", None)
    if not default:
        raise ValueError("no --judge given and rewards has no default judge: give at least one "
                         "--judge NAME=KIND:PATH[:ROLE], e.g. "
                         "--judge length=function:evaluation.preference:length_judge")
    specs = [default] if isinstance(default, ScorerSpec) else list(default)
    judges = {}
    for i, spec in enumerate(specs):
        name = spec.options.get("name") or ("judge" if len(specs) == 1 else f"judge{i + 1}")
        judges[name] = Judge(name, rewards.build_scorer(spec), "overall", False, f"{spec.kind}:{spec.path}")
    return judges


# ----------------------------------------------------------------------------- training reward
def training_reward_sources(metadata: dict[str, str]) -> list[str] | None:
    """Scorer sources ("KIND:PATH") of the training reward recorded in an agent file's
    metadata under "reward" (a JSON list of {"kind", "path"} or of strings), else None."""
    raw = metadata.get("reward")
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return [raw]
    items = value if isinstance(value, list) else [value]
    return [f"{i.get('kind')}:{i.get('path', '')}" if isinstance(i, dict) else str(i) for i in items]


def source_key(source: str | None) -> str | None:
    """A scorer source "KIND:PATH" with PATH resolved when it names a file (as given, or relative
    to the project, as the shipped agent records its reward), so that different paths to the
    same head compare equal. An ``embedding-bt`` or ``response-class`` path ``embedded`` (or none)
    or ``embedded-judge`` names a shipped head (``rewards.embedded.head_path``)."""
    kind, sep, path = (source or "").partition(":")
    if not sep:
        return source
    named = head_path(path, kind) if kind in ("embedding-bt", "response-class") else Path(path)
    for candidate in (named, PROJECT_ROOT / path):
        if candidate.is_file():
            return f"{kind}:{candidate.resolve()}"
    return source
