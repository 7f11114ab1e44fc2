"""Every prompt split in one place: held-out evaluation sets, validation, the prompts the
reward and the judge learn from, and the agent's training prompts.

A prompt belongs to exactly one split, and so does every prompt that is *nearly* the same
text: prompts are grouped first by their normalised text (case, whitespace and punctuation
ignored, ``normalise``), then by near-duplication (Jaccard similarity of character 5-gram
sets ≥ 0.9, found with MinHash and checked exactly, ``near_duplicate_groups``), and a split
takes whole groups. So "How do I pick a lock?" cannot be trained on while "how do I pick a
lock" is held out.

Pools (../shared/data/prompts, or the same files from anywhere):

- harmful requests: PKU-SafeRLHF train + test, HH-RLHF red-team (``harmless-base``);
- benign requests: HH-RLHF ``helpful-base``.

A group holding prompts of both pools is dropped: its kind is unknown.

Splits (``build_splits``):

- ``heldout``: ``saferlhf_test`` (every group with a PKU-SafeRLHF test prompt),
  ``redteam_heldout`` and ``benign_heldout`` (``HELDOUT_SIZE`` groups each); evaluated, never
  chosen on;
- ``validation``: harmful and benign prompts to make choices on (reward variants, agent
  settings, the reward's validation labels);
- ``judge``: what the judge learns from, nothing else sees it;
- ``reward``: what the training reward learns from;
- ``agent``: the agent's training prompts: the reward's prompts and the rest of the pools
  (an agent may train on the prompts its reward learnt from; never on the judge's).
"""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

NEAR_DUPLICATE = 0.9   # Jaccard similarity of character 5-gram sets
SHINGLE = 5
HELDOUT_SIZE = 200     # red-team and benign held-out sets (the PKU-SafeRLHF test set is whole)
VALIDATION_SIZE = 300  # harmful and benign validation prompts each
JUDGE_SHARE = 0.2      # of the pools left after held-out and validation
REWARD_SHARE = 0.4
HARMFUL, BENIGN = "harmful", "benign"

_PUNCTUATION = re.compile(r"[^\w\s]", re.UNICODE)
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed: what two copies of one prompt
    share however they were typed."""
    return _SPACE.sub(" ", _PUNCTUATION.sub(" ", text.lower())).strip()


# ------------------------------------------------------------------ near-duplicates
# A 5-gram's hash: its five code points as the digits of a number in base _BASE, mod 2^64 (so
# distinct 5-grams of ordinary text get distinct hashes; MinHash then spreads them out).
_BASE = 0x9E3779B97F4A7C15
_DIGITS = [pow(_BASE, k, 1 << 64) for k in reversed(range(SHINGLE))]
_BLOCK = 1 << 14  # 5-grams hashed at once by _signatures (x 192 hash functions x 8 bytes: 25 MiB)


def _shingles(texts: list[str]) -> list[np.ndarray]:
    """For each text, the hashes (64 bits) of its character 5-grams, a space added each side (a
    shorter text is zero-filled to one 5-gram); a 5-gram that occurs twice is there twice. All
    texts at once: the 5-grams of the texts laid end to end, less those that cross from one
    text into the next."""
    if not texts:
        return []
    padded = [f" {text} ".ljust(SHINGLE, "\0") for text in texts]
    points = np.frombuffer("".join(padded).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    owner = np.repeat(np.arange(len(padded)), [len(p) for p in padded])  # the text of each code point
    starts = len(points) - SHINGLE + 1  # the 5-gram starting at each code point that has one
    hashes = np.zeros(starts, dtype=np.uint64)
    for k, digit in enumerate(_DIGITS):  # uint64 arithmetic wraps: mod 2^64
        hashes += points[k:k + starts] * np.uint64(digit)
    inside = owner[:starts] == owner[SHINGLE - 1:]
    return np.split(hashes[inside], np.flatnonzero(np.diff(owner[:starts][inside])) + 1)


def _signatures(shingles: list[np.ndarray], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MinHash signatures, one row per text: for each hash function (a, b), the least hash of the
    text's 5-grams under multiply-shift hashing, (a·x + b) mod 2^64 (uint64 arithmetic wraps),
    top 32 bits. Computed for blocks of texts of about ``_BLOCK`` 5-grams at once
    (``minimum.reduceat`` over each text's 5-grams)."""
    out = np.empty((a.size, len(shingles)), dtype=np.uint32)
    ends = np.cumsum([len(s) for s in shingles])
    first = 0
    while first < len(shingles):
        last = max(first + 1, int(np.searchsorted(ends, ends[first] - len(shingles[first]) + _BLOCK, "right")))
        block = shingles[first:last]
        hashed = np.multiply.outer(a, np.concatenate(block))  # one row per hash function
        hashed += b[:, None]
        hashed >>= np.uint64(32)
        starts = np.cumsum([0] + [len(s) for s in block[:-1]])
        out[:, first:last] = np.minimum.reduceat(hashed, starts, axis=1)
        first = last
    return out.T


def _buckets(signatures: np.ndarray, bands: int, rows: int):
    """Rows of ``signatures`` (by index) that agree on all ``rows`` hashes of one band, for each
    band: the candidate near-duplicates, each bucket in index order."""
    for band in range(bands):
        keys = np.ascontiguousarray(signatures[:, band * rows:(band + 1) * rows])
        keys = keys.view(np.dtype((np.void, keys.dtype.itemsize * rows))).ravel()
        _, bucket, counts = np.unique(keys, return_inverse=True, return_counts=True)
        shared = np.flatnonzero(counts[bucket] > 1)
        order = shared[np.argsort(bucket[shared], kind="stable")]
        yield from np.split(order, np.flatnonzero(np.diff(bucket[order])) + 1) if order.size else ()


def near_duplicate_groups(texts: list[str], threshold: float = NEAR_DUPLICATE, bands: int = 24,
                          rows: int = 8, seed: int = 0) -> list[int]:
    """A group id per text (the index of the group's first text): texts whose normalised
    forms are equal, or whose character 5-gram sets have Jaccard similarity ≥ ``threshold``
    (transitively), share one. MinHash with ``bands`` × ``rows`` hashes proposes candidate
    pairs (a pair at similarity 0.9 is missed with probability ~1e-6); each is then checked
    exactly."""
    norm = [normalise(t) for t in texts]
    parent = list(range(len(texts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)

    first_of: dict[str, int] = {}
    for i, n in enumerate(norm):
        union(i, first_of.setdefault(n, i))
    distinct = list(first_of.values())
    if len(distinct) < 2:
        return [find(i) for i in range(len(texts))]
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 1 << 63, size=bands * rows, dtype=np.uint64) * np.uint64(2) + np.uint64(1)  # odd
    b = rng.integers(0, 1 << 63, size=bands * rows, dtype=np.uint64)
    shingles = _shingles([norm[i] for i in distinct])
    sets: dict[int, frozenset] = {}

    def five_grams(k: int) -> frozenset:  # of a text met in a bucket, built once, for the exact check
        if k not in sets:
            sets[k] = frozenset(shingles[k].tolist())
        return sets[k]

    checked: set[tuple[int, int]] = set()  # a pair shares a bucket in several bands: checked once
    for members in _buckets(_signatures(shingles, a, b), bands, rows):
        members = members.tolist()
        for x in range(len(members)):
            for y in range(x + 1, len(members)):
                i, j = members[x], members[y]
                if (i, j) in checked or find(distinct[i]) == find(distinct[j]):
                    continue
                checked.add((i, j))
                si, sj = five_grams(i), five_grams(j)
                common = len(si & sj)
                if common >= threshold * (len(si) + len(sj) - common):
                    union(distinct[i], distinct[j])
    return [find(i) for i in range(len(texts))]


def overlapping(texts: list[str], others: list[str], threshold: float = NEAR_DUPLICATE) -> list[str]:
    """The texts in ``texts`` equal or nearly equal (as ``near_duplicate_groups``) to one
    in ``others``."""
    groups = near_duplicate_groups(list(texts) + list(others), threshold)
    other_groups = set(groups[len(texts):])
    return [t for t, g in zip(texts, groups[:len(texts)]) if g in other_groups]


# ------------------------------------------------------------------ the splits
@dataclass
class Splits:
    heldout: dict[str, list[str]]
    validation: dict[str, list[str]]
    judge: dict[str, list[str]]
    reward: dict[str, list[str]]
    agent: dict[str, list[str]]
    dropped: dict[str, int] = field(default_factory=dict)

    def named(self) -> dict[str, list[str]]:
        """Every prompt list by its file name: ``saferlhf_test``, ``validation_harmful``,
        ``agent_benign``, ..."""
        out = dict(self.heldout)
        for part in ("validation", "judge", "reward", "agent"):
            out.update({f"{part}_{kind}": prompts for kind, prompts in getattr(self, part).items()})
        return out


def _pool(path: Path, source: str | None = None) -> list[str]:
    rows = json.loads(path.read_text(encoding="utf-8"))
    return [r["instruction"].strip() for r in rows if isinstance(r, dict) and isinstance(r.get("instruction"), str)
            and r["instruction"].strip() and (source is None or r.get("source") == source)]


def build_splits(shared: str | Path, seed: int = 0, heldout_size: int = HELDOUT_SIZE,
                 validation_size: int = VALIDATION_SIZE) -> Splits:
    """The splits of the prompt pools under ``shared``/prompts (see the module's docstring).
    Deterministic for a seed; each split lists one prompt per group (its first text).
    ``heldout_size`` / ``validation_size``: smaller for small pools (tests)."""
    prompts_dir = Path(shared) / "prompts"
    sources = {
        "saferlhf_test": (HARMFUL, _pool(prompts_dir / "saferlhf_test.json")),
        "saferlhf_train": (HARMFUL, _pool(prompts_dir / "saferlhf_train.json")),
        "redteam": (HARMFUL, _pool(prompts_dir / "hhrlhf_train.json", "harmless-base")),
        "helpful": (BENIGN, _pool(prompts_dir / "hhrlhf_train.json", "helpful-base")),
    }
    texts, origins = [], []
    for name, (kind, prompts) in sources.items():
        texts += prompts
        origins += [(name, kind)] * len(prompts)
    group_of = near_duplicate_groups(texts)
    members: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(group_of):
        members[g].append(i)

    groups: dict[str, list[int]] = defaultdict(list)  # kind or "saferlhf_test" -> group ids
    dropped = {"mixed kinds": 0, "duplicates": len(texts) - len(members)}
    for g, items in members.items():
        kinds = {origins[i][1] for i in items}
        if len(kinds) > 1:
            dropped["mixed kinds"] += 1
        elif any(origins[i][0] == "saferlhf_test" for i in items):
            groups["saferlhf_test"].append(g)
        elif all(origins[i][0] == "redteam" for i in items):
            groups["redteam"].append(g)
        else:
            groups[kinds.pop()].append(g)
    rng = random.Random(seed)
    for ids in groups.values():
        rng.shuffle(ids)

    def text(ids: list[int]) -> list[str]:
        return [texts[g] for g in ids]  # a group's id is its first member's index

    # Red-team requests are held out from their own pool; the rest joins the PKU-SafeRLHF
    # training requests, interleaved so that every split holds both sources.
    redteam, benign = groups["redteam"], groups[BENIGN]
    heldout = {"saferlhf_test": text(groups["saferlhf_test"]), "redteam_heldout": text(redteam[:heldout_size]),
               "benign_heldout": text(benign[:heldout_size])}
    rest_redteam, pku = redteam[heldout_size:], groups[HARMFUL]
    harmful = [g for pair in zip(pku, rest_redteam) for g in pair] + pku[len(rest_redteam):] + rest_redteam[len(pku):]
    pools = {HARMFUL: harmful, BENIGN: benign[heldout_size:]}
    parts: dict[str, dict[str, list[str]]] = {"validation": {}, "judge": {}, "reward": {}, "agent": {}}
    for kind, ids in pools.items():
        validation, rest = ids[:validation_size], ids[validation_size:]
        n_judge, n_reward = int(len(rest) * JUDGE_SHARE), int(len(rest) * REWARD_SHARE)
        parts["validation"][kind] = text(validation)
        parts["judge"][kind] = text(rest[:n_judge])
        parts["reward"][kind] = text(rest[n_judge:n_judge + n_reward])
        parts["agent"][kind] = text(rest[n_judge:])  # the reward's prompts and the rest
    return Splits(heldout=heldout, dropped=dropped, **parts)


def write_splits(splits: Splits, out_dir: str | Path) -> dict[str, Path]:
    """One prompt file per split (the MARA reference format: a JSON array of
    ``{"instruction": ...}``), for configs and ``mara eval`` to read."""
    from core.atomic import write_json_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, prompts in splits.named().items():
        paths[name] = out / f"{name}.json"
        write_json_atomic(paths[name], [{"instruction": p} for p in prompts])
    return paths
