"""Hashed word n-grams: which words and short phrases a text contains, in a fixed number of bins.

A sentence embedding of an answer's opening does not separate "I can't provide a definitive
answer, but here is ..." from "I can't provide that." (docs/REWARD.md); the words and phrases
do. The features need no vocabulary file: each n-gram goes to bin ``crc32(n-gram) % bins``
(the hashing trick), so a head trained on them is just its weights. The first few words are
also marked by their position ("^0:i", "^1:'m"), since how an answer *opens* says most about
whether it declines.
"""

from __future__ import annotations

import re
import zlib
from typing import Sequence

import numpy as np

_TOKEN = re.compile(r"[a-z0-9']+|[^\sa-z0-9']")


def words(text: str, chars: int) -> list[str]:
    """The lower-cased words and punctuation marks of the first ``chars`` characters
    (typographic apostrophes read as plain ones)."""
    return _TOKEN.findall(text[:chars].lower().replace("\u2019", "'"))


def hashed_ngrams(texts: Sequence[str], bins: int, chars: int, orders: Sequence[int] = (1, 2, 3),
                  mark_opening: int = 0) -> np.ndarray:
    """(len(texts), bins) float32: 1 in the bin of every n-gram (n in ``orders``) of the
    first ``chars`` characters and of each of the first ``mark_opening`` words with its
    position, scaled to unit length (an empty text is all zeros)."""
    out = np.zeros((len(texts), bins), dtype=np.float32)
    for row, text in enumerate(texts):
        tokens = words(text, chars)
        grams = [" ".join(tokens[i:i + n]) for n in orders for i in range(len(tokens) - n + 1)]
        grams += [f"^{i}:{tokens[i]}" for i in range(min(mark_opening, len(tokens)))]
        for gram in grams:
            out[row, zlib.crc32(gram.encode("utf-8")) % bins] = 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)
