"""``http``: a reward model served elsewhere (for example by vLLM behind a small adapter).

Protocol: ``POST <url>`` with JSON ``{"prompts": [...], "responses": [...]}``; the answer
must be HTTP 200 with JSON ``{"scores": [...]}``, one number per pair. Batches larger than
``batch_size`` are sent in several requests.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from typing import Sequence

import numpy as np

from rewards._common import batches


class HttpScorerError(RuntimeError):
    pass


class HttpScorer:
    def __init__(self, path: str, timeout: float = 60.0, batch_size: int = 64, headers: dict | None = None,
                 retries: int = 0, name: str | None = None) -> None:
        if not path.startswith(("http://", "https://")):
            raise ValueError(f"http scorer needs an http(s) URL, got {path!r}")
        self.url, self.timeout, self.batch_size = path, float(timeout), int(batch_size)
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.retries = int(retries)
        self.name = name or f"http:{path}"

    def _post(self, prompts: list[str], responses: list[str]) -> list[float]:
        body = json.dumps({"prompts": prompts, "responses": responses}).encode("utf-8")
        request = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        last_error: Exception | None = None
        for _ in range(self.retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                    raw = answer.read()
                break
            except urllib.error.HTTPError as err:  # non-2xx: do not retry, the server said no
                detail = err.read()[:300].decode("utf-8", "replace")
                raise HttpScorerError(f"{self.url}: HTTP {err.code} {err.reason}: {detail}") from err
            except (urllib.error.URLError, TimeoutError, OSError) as err:
                last_error = err
        else:
            raise HttpScorerError(f"{self.url}: no answer within {self.timeout:g}s "
                                  f"({type(last_error).__name__}: {last_error})") from last_error
        try:
            scores = json.loads(raw)["scores"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
            raise HttpScorerError(f"{self.url}: malformed answer, expected JSON {{\"scores\": [...]}}, got "
                                  f"{raw[:200]!r}") from err
        if not isinstance(scores, list) or len(scores) != len(prompts):
            got = len(scores) if isinstance(scores, list) else type(scores).__name__
            raise HttpScorerError(f"{self.url}: expected {len(prompts)} scores, got {got}")
        if not all(isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) for s in scores):
            raise HttpScorerError(f"{self.url}: scores must be finite numbers, got {scores[:5]!r}...")
        return [float(s) for s in scores]

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        out = np.zeros(len(prompts), dtype=np.float64)
        for start, end in batches(len(prompts), self.batch_size):
            out[start:end] = self._post(list(prompts[start:end]), list(responses[start:end]))
        return out
