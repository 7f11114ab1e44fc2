"""``http``: a reward model served elsewhere (for example by vLLM behind a small adapter).

Protocol: ``POST <url>`` with JSON ``{"prompts": [...], "responses": [...]}``; the answer
must be HTTP 200 with JSON ``{"scores": [...]}``, one number per pair. Batches larger than
``batch_size`` are sent in several requests.

A request has a total deadline (``timeout``, retries included), whatever the server does:
it runs in a thread of its own, and when the deadline passes the connection is shut down
under it, so a server that trickles its answer a byte at a time cannot hold a run. An
answer larger than ``max_response_bytes`` is refused without being read further. Every
bad answer (an HTTP error, no answer in time, too large, not the JSON above, a score that
is not a finite number) raises ``HttpScorerError``.
"""

from __future__ import annotations

import http.client
import json
import math
import socket
import threading
import time
import urllib.parse
from typing import Sequence

import numpy as np

from rewards._common import batches

READ_CHUNK = 64 * 1024


class HttpScorerError(RuntimeError):
    pass


class HttpScorer:
    def __init__(self, path: str, timeout: float = 60.0, batch_size: int = 64, headers: dict | None = None,
                 retries: int = 0, max_response_bytes: int = 4 << 20, name: str | None = None) -> None:
        url = urllib.parse.urlsplit(path)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"http scorer needs an http(s) URL, got {path!r}")
        if not (math.isfinite(float(timeout)) and timeout > 0):
            raise ValueError(f"http scorer timeout must be a finite number of seconds > 0, got {timeout!r}")
        self.url, self._url = path, url
        self.timeout, self.batch_size = float(timeout), int(batch_size)
        self.max_response_bytes = int(max_response_bytes)
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.retries = int(retries)
        self.name = name or f"http:{path}"

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        out = np.zeros(len(prompts), dtype=np.float64)
        for start, end in batches(len(prompts), self.batch_size):
            out[start:end] = self._post(list(prompts[start:end]), list(responses[start:end]))
        return out

    # ------------------------------------------------------------------ one request
    def _post(self, prompts: list[str], responses: list[str]) -> list[float]:
        body = json.dumps({"prompts": prompts, "responses": responses}).encode("utf-8")
        deadline = time.monotonic() + self.timeout
        last_error: Exception | None = None
        for _ in range(self.retries + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                status, reason, raw = self._exchange(body, remaining)
            except HttpScorerError:
                raise
            except (OSError, http.client.HTTPException) as err:  # refused, reset, timed out: try again
                last_error = err
                continue
            if status != 200:  # the server said no: do not retry
                detail = raw[:300].decode("utf-8", "replace")
                raise HttpScorerError(f"{self.url}: HTTP {status} {reason}: {detail}")
            return self._scores(raw, len(prompts))
        raise HttpScorerError(f"{self.url}: no answer within {self.timeout:g}s "
                              f"({type(last_error).__name__}: {last_error})") from last_error

    def _exchange(self, body: bytes, seconds: float) -> tuple[int, str, bytes]:
        """(status, reason, body) of one POST, within ``seconds`` in all."""
        url = self._url
        connection_class = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        connection = connection_class(url.hostname, url.port, timeout=seconds)
        outcome: dict = {}

        def talk() -> None:
            try:
                path = url.path or "/"
                connection.request("POST", path + (f"?{url.query}" if url.query else ""), body=body,
                                   headers=self.headers)
                answer = connection.getresponse()
                outcome["answer"] = (answer.status, answer.reason, self._read_capped(answer))
            except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
                outcome["error"] = err

        thread = threading.Thread(target=talk, daemon=True, name="http-scorer")
        thread.start()
        thread.join(seconds)
        if thread.is_alive():  # past the deadline: cut the connection under the thread
            if connection.sock is not None:
                try:
                    connection.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            connection.close()
            thread.join(5)
            raise TimeoutError(f"the server did not finish its answer within {seconds:.3g}s")
        connection.close()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["answer"]

    def _read_capped(self, answer: http.client.HTTPResponse) -> bytes:
        length = answer.getheader("Content-Length")
        if length is not None and length.isdigit() and int(length) > self.max_response_bytes:
            raise HttpScorerError(f"{self.url}: answer of {int(length)} bytes is larger than "
                                  f"max_response_bytes={self.max_response_bytes}")
        chunks, size = [], 0
        while chunk := answer.read1(READ_CHUNK):
            size += len(chunk)
            if size > self.max_response_bytes:
                raise HttpScorerError(f"{self.url}: answer larger than max_response_bytes={self.max_response_bytes}")
            chunks.append(chunk)
        return b"".join(chunks)

    def _scores(self, raw: bytes, expected: int) -> list[float]:
        try:
            scores = json.loads(raw)["scores"]
        except (ValueError, UnicodeDecodeError, KeyError, TypeError) as err:  # ValueError: bad JSON, huge ints
            raise HttpScorerError(f"{self.url}: malformed answer, expected JSON {{\"scores\": [...]}}, got "
                                  f"{raw[:200]!r}") from err
        if not isinstance(scores, list) or len(scores) != expected:
            got = len(scores) if isinstance(scores, list) else type(scores).__name__
            raise HttpScorerError(f"{self.url}: expected {expected} scores, got {got}")
        values = []
        for s in scores:
            try:
                value = float(s) if isinstance(s, (int, float)) and not isinstance(s, bool) else math.nan
            except OverflowError:  # an integer too large for a float
                value = math.nan
            if not math.isfinite(value):
                raise HttpScorerError(f"{self.url}: scores must be finite numbers, got {str(s)[:40]!r}")
            values.append(value)
        return values
