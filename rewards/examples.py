"""Tiny, model-free sentence scores for smoke tests and examples (kind "function").

    ScorerSpec(kind="function", path="rewards.examples:word_count")
"""

from __future__ import annotations


def word_count(prompt: str, response: str) -> float:
    """Longer answers score higher (a toy signal an agent can visibly learn)."""
    return float(len(response.split())) / 10.0

