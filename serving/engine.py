"""The serving loop: requests join and leave one running accept/reject batch.

One ``ServingEngine`` per LLM copy (per Ray Serve replica). A background thread runs the
decoder of envs/decoder.py the way a rollout worker does (states -> agent -> decisions),
except that its rows come and go: a request's answers (``n`` rows) join the running batch
between two decision steps (``AcceptRejectDecoder.join``) and leave it when they end
(EOS, ``max_tokens``, a stop string, a client that went away), so concurrent requests are
decoded together and nobody waits for a whole batch to finish (continuous batching).
``admission="static"`` instead admits requests only when the batch is empty, as
request-window batching (Ray Serve's ``@serve.batch``) would; it exists for comparison
(benchmarks/bench_serve.py).

Both models of the server share the batch. A ``mara`` row's candidates are always the set
the agent was trained on (``AlignedGenerator.sampling``), whatever the request's sampling
settings: they only say how the answer is drawn within it (``envs.mdp.Draw``; temperature 0
makes the agent's decisions and the continuation greedy). Its decisions are the agent's, by
the generator's rule (``AlignedGenerator.decision_rule``). An ``upstream`` row is the frozen
model alone: its candidate set is the request's draw (``Draw.upstream_sampling``; at
temperature 0 the single most likely token) and it accepts candidate k with the upstream's
own probability q_k / sum_{j>=k} q_j (envs/mdp.py), which samples exactly from that set.

Each request's events go to its ``on_event`` callback, called on the loop's thread:
``Piece`` (new text, with each token's accepted candidate), ``Finished`` (one answer's
end and statistics), ``Failed`` (the decoder raised; every request in flight gets it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch

from core.config import SamplingConfig
from core.metrics import MetricsSink
from core.sections import Choice, Int, Number, check
from envs.decoder import AcceptRejectDecoder
from envs.generation import AlignedGenerator, decline_end
from envs.mdp import Draw
from serving.protocol import ALIGNED

log = logging.getLogger(__name__)

ADMISSIONS = ("continuous", "static")
# Tokens decoded before new ones to get their text right where a token's text depends on
# its neighbour (SentencePiece's leading space). A character split over several byte-level
# tokens is not this: its piece waits for the tokens that complete it.
_CONTEXT_TOKENS = 6
# OpenAI's finish reasons for the decoder's: an end-of-sequence token and a stop string
# are "stop"; the token budget and the model's context are "length".
FINISH_REASON = {"eos": "stop", "stop": "stop", "length": "length", "context": "length"}


# --------------------------------------------------------------------------- events
@dataclass
class Piece:
    index: int  # the answer (choice) it belongs to
    text: str
    tokens: list[tuple[str, int]]  # (text, 1-based accepted candidate) of each token in it


@dataclass
class Finished:
    index: int
    finish_reason: str  # "stop" | "length"
    completion_tokens: int
    decisions: int
    fallbacks: int
    accepted_positions: list[int]


@dataclass
class Failed:
    message: str


Event = Piece | Finished | Failed


@dataclass
class Submission:
    """A request in the engine: ``n`` answers to one encoded prompt."""

    model: str  # "mara" | "upstream"
    prompt: str  # for the records
    prompt_ids: list[int]
    max_tokens: int
    on_event: Callable[[Event], None]
    draw: Draw = Draw()  # how the answers are drawn (the request's settings over the server's)
    n: int = 1
    seed: int | None = None
    stop: tuple[str, ...] = ()
    request: str | None = None  # what the user asked (a chat's user messages), for the request gate; None: prompt
    submitted: float = field(default_factory=time.monotonic)
    first_token: float | None = None
    open_choices: int = 0
    cancelled: bool = False


@dataclass
class _Choice:
    """One answer being decoded: its decoder row and what has been sent of it."""

    submission: Submission
    index: int
    row: object  # the decoder's row handle
    rng: np.random.Generator
    for_agent: bool  # a mara answer the request gate gives the agent
    decoded_tokens: int = 0  # tokens whose text is known (in ``text``)
    counted_tokens: int = 0  # tokens counted in the metrics
    text: str = ""  # the answer's text so far (sent or held back)
    sent_chars: int = 0
    unsent: list[tuple[str, int]] = field(default_factory=list)  # (text, candidate) not sent yet
    stopped: bool = False  # a stop string ended it
    text_ends: list[int] = field(default_factory=list)  # len(text) after each decoded group of tokens


class ServingEngine:
    def __init__(self, generator: AlignedGenerator, max_rows: int = 16, batch_wait_s: float = 0.005,
                 admission: str = "continuous",
                 metrics: MetricsSink | None = None) -> None:
        """``max_rows``: answers decoded at once (the others wait in the queue);
        ``batch_wait_s``: when idle, how long a first request waits for others to join it."""
        check("max_rows", max_rows, Int(ge=1))
        check("batch_wait_s", batch_wait_s, Number(ge=0))
        check("admission", admission, Choice(ADMISSIONS))
        if generator.backend != "transformers":
            raise ValueError("the server decodes with the transformers backend (its rows join and leave the batch)")
        self.generator, self.llm = generator, generator.llm
        self.max_rows, self.batch_wait_s = max_rows, batch_wait_s
        self.admission = admission
        self.metrics = metrics
        self.decoder = AcceptRejectDecoder(self.llm, generator.sampling, generator.kl, mode=generator.mode,
                                           state_features=generator.state_features)
        self.decoder.open(max_rows)
        self._queue: deque[Submission] = deque()
        self._cancelled: list[Submission] = []
        self._choices: list[_Choice] = []
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._token_times: deque[tuple[float, int]] = deque()  # (time, tokens) of recent steps
        self.counts = {"batches": 0, "decision_steps": 0, "max_batch_rows": 0, "requests": 0, "tokens": 0}

    # ------------------------------------------------------------------ public API
    def start(self) -> ServingEngine:
        self._thread = threading.Thread(target=self._run, name="mara-serving-loop", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)

    @property
    def alive(self) -> bool:
        """The serving loop is running."""
        return self._thread is not None and self._thread.is_alive()

    def submit(self, submission: Submission) -> Submission:
        """Queue a request; its events go to ``submission.on_event`` from the loop's thread."""
        if not self.alive:
            raise RuntimeError("the serving loop is not running")
        with self._wake:
            self._queue.append(submission)
            self._wake.notify_all()
        return submission

    def cancel(self, submission: Submission) -> None:
        """Stop decoding a request (its client went away); no more events are sent."""
        with self._wake:
            submission.cancelled = True
            self._cancelled.append(submission)
            self._wake.notify_all()

    def stats(self) -> dict:
        """Counters of the loop: decoder batches started from idle, decision steps, the most
        rows decoded together, requests and tokens served; and what is queued or running."""
        with self._wake:
            queued = sum(s.n for s in self._queue)
        return {**self.counts, "queued_answers": queued, "running_answers": len(self._choices),
                "admission": self.admission, "max_rows": self.max_rows}

    # ------------------------------------------------------------------ the loop
    def _run(self) -> None:
        """One forward (or one round of decisions) per turn, so that answers stream and
        requests join and leave between forwards."""
        while True:
            try:
                if self._admit() is None:
                    return  # stopping
                if not self._choices:
                    continue
                if not self.decoder.has_pending():
                    self.decoder.advance(max_forwards=1)
                if self.decoder.has_pending():
                    self._decide()
                self._emit()
            except Exception as e:  # a failure fails the requests in flight, not the server
                log.exception("the serving loop failed; failing the requests in flight")
                self._fail_all(f"{type(e).__name__}: {e}")

    def _admit(self) -> bool | None:
        """Apply cancellations and move queued requests into the batch. When nothing is
        running, wait for a request, then ``batch_wait_s`` more so that simultaneous
        requests start together. None: the engine is stopping."""
        with self._wake:
            while not self._stopping and not self._choices and not self._queue:
                self._wake.wait(timeout=1.0)
            if self._stopping:
                return None
            cancelled, self._cancelled = self._cancelled, []
        for submission in cancelled:
            for choice in [c for c in self._choices if c.submission is submission]:
                self._leave(choice)
        idle = not self._choices
        if idle and self.batch_wait_s:
            time.sleep(self.batch_wait_s)
        if self.admission == "static" and not idle:
            return False
        with self._wake:
            joining = self._take_queue(static=self.admission == "static")
        for submission in joining:
            self._join(submission)
        if idle and self._choices:
            self.counts["batches"] += 1
            self._record({"serve_batches": 1})
        self._record_queue()
        return True

    def _take_queue(self, static: bool) -> list[Submission]:
        """The queued requests that join now: all of them (continuous batching: rows beyond
        ``max_rows`` wait inside the decoder for a free row), or, static, those that fit in
        an empty batch of ``max_rows`` (at least one)."""
        taken, rows = [], 0
        while self._queue:
            s = self._queue[0]
            if s.cancelled:
                self._queue.popleft()
                continue
            if static and taken and rows + s.n > self.max_rows:
                break
            taken.append(self._queue.popleft())
            rows += s.n
        return taken

    def _join(self, s: Submission) -> None:
        s.open_choices = s.n
        self.counts["requests"] += 1
        for_agent = s.model == ALIGNED and bool(self.generator.agent_decides([s.request or s.prompt])[0])
        for i in range(s.n):
            # A request's seed fixes its answers whatever else shares the batch.
            rng = np.random.default_rng(None if s.seed is None else [s.seed % 2**63, i])
            row = self.decoder.join(s.prompt, s.prompt_ids, self.candidate_set(s))
            self._choices.append(_Choice(s, i, row, rng, for_agent))

    def candidate_set(self, s: Submission) -> SamplingConfig:
        """A request's candidate set and length: the agent's set for ``mara`` (no request
        setting can narrow what the agent judges), the request's draw for ``upstream``."""
        candidates = self.generator.sampling
        if s.model != ALIGNED:
            candidates = s.draw.upstream_sampling(candidates)
        return replace(candidates, max_new_tokens=s.max_tokens)

    def _decide(self) -> None:
        """One decision for every row that waits: the agent's for ``mara`` rows (one batched
        actor call) within its horizon, the upstream's own probability for the others."""
        rows = [self.decoder.rows[i] for i in self.decoder.pending_rows()]
        by_row = {id(c.row): c for c in self._choices}
        choices = [by_row[id(r)] for r in rows]
        # The generator's own rule: the agent within its horizon, the upstream's continuation
        # past it, and the upstream's own sampling for plain-upstream requests.
        aligned = np.array([c.submission.model == ALIGNED for c in choices], dtype=bool)
        with torch.no_grad():
            accept_prob, greedy = self.generator.decision_rule(self.decoder, aligned,
                                                               [c.submission.draw for c in choices],
                                                               np.array([c.for_agent for c in choices]))
        # Each answer draws from its own generator (its request's seed), and only when it samples.
        actions = self.generator.decide(self.decoder, accept_prob, greedy,
                                        [1.0 if g else c.rng.random() for g, c in zip(greedy, choices)])
        batch_rows = self.decoder.rows_in_cache
        self.counts["decision_steps"] += 1
        self.counts["max_batch_rows"] = max(self.counts["max_batch_rows"], batch_rows)
        self._record({"serve_batch_size": batch_rows})
        self.decoder.apply(actions, accept_prob, advance=False)

    # ------------------------------------------------------------------ answers out
    def _emit(self) -> None:
        """Send each answer's new text; end the answers that are done."""
        new_tokens = 0
        for c in list(self._choices):
            new_tokens += len(c.row.response_ids) - c.counted_tokens
            c.counted_tokens = len(c.row.response_ids)
            self._decode_new_tokens(c)
            done = c.row.finished or c.stopped
            if done:
                _truncate(c, len(c.text.rstrip()))  # an answer does not end with whitespace
            self._send(c, flush=done)
            if done:
                self._finish(c)
        self._count_tokens(new_tokens)

    def _text(self, token_ids: list[int]) -> str:
        """Tokens' text. Unlike ``llm.decode`` no clean-up of spaces ("do n't" -> "don't") and
        no strip: each token's text must extend the text before it, or what was streamed
        could not be taken back."""
        return self.llm.tokenizer.decode(token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def _piece(self, ids: list[int], start: int, end: int) -> str:
        """The text that tokens [start, end) add to an answer. They are decoded with up to
        ``_CONTEXT_TOKENS`` tokens before them (some tokenizers' text of a token depends on
        its neighbour, e.g. SentencePiece's leading space), minus those tokens' own text, so
        each token costs a decode of a few tokens, not of the whole answer."""
        lo = max(0, start - _CONTEXT_TOKENS)
        before, after = self._text(ids[lo:start]), self._text(ids[lo:end])
        return after[len(before):] if after.startswith(before) else ""

    def _decode_new_tokens(self, c: _Choice) -> None:
        """Turn the row's new tokens into text pieces. Each token's piece is the growth of
        the decoded answer; a token that ends inside a multi-byte character waits for the
        next one. A stop string cuts the answer where it starts."""
        ids = c.row.response_ids
        while c.decoded_tokens < len(ids):
            end = c.decoded_tokens + 1
            piece = self._piece(ids, c.decoded_tokens, end)
            while piece.endswith("\ufffd") and end < len(ids):
                end += 1  # a partial character: its bytes come with the next tokens
                piece = self._piece(ids, c.decoded_tokens, end)
            if piece.endswith("\ufffd") and not c.row.finished:
                return
            if not c.text:
                piece = piece.lstrip()  # an answer does not start with whitespace
            candidate = c.row.token_candidates[c.decoded_tokens]
            c.decoded_tokens = end
            c.text += piece
            c.text_ends += [len(c.text)] * (end - len(c.text_ends))
            c.unsent.append((piece, candidate))
            if self._cut_at_stop(c):
                return

    def _cut_at_stop(self, c: _Choice) -> bool:
        """A stop string cuts the answer where it starts; an answer the agent has stepped into
        ends with its ``decline_sentences``-th sentence (``AlignedGenerator``)."""
        hits = [i for i in (c.text.find(stop) for stop in c.submission.stop) if i >= 0]
        sentences = self.generator.decline_sentences
        if sentences and c.for_agent and self.generator.stepped_in(c.row.where, c.row.actions):
            end = decline_end(c.text, sentences)
            hits += [] if end is None else [end]
        if not hits:
            return False
        _truncate(c, min(hits))
        c.stopped = True
        return True

    def _send(self, c: _Choice, flush: bool) -> None:
        """Send the unsent pieces, except (until the answer ends) trailing whitespace and
        the last characters that could be the start of a stop string."""
        if not c.unsent:
            return
        limit = len(c.text)
        if not flush:
            limit = min(len(c.text.rstrip()), len(c.text) - max((len(s) - 1 for s in c.submission.stop), default=0))
        total, ready = c.sent_chars, 0
        for piece, _ in c.unsent:
            if total + len(piece) > limit:
                break
            total += len(piece)
            ready += 1
        if not ready:
            return
        pieces, c.unsent = c.unsent[:ready], c.unsent[ready:]
        text = "".join(p for p, _ in pieces)
        c.sent_chars += len(text)
        s = c.submission
        if s.first_token is None and text:
            s.first_token = time.monotonic()
            self._record({"serve_time_to_first_token_seconds": s.first_token - s.submitted})
        self._deliver(s, Piece(c.index, text, pieces))

    def _finish(self, c: _Choice) -> None:
        reason = "stop" if c.stopped else FINISH_REASON.get(c.row.finish_reason, "stop")
        result = self.decoder.result(c.row)
        # usage counts the tokens the answer kept: after a stop string, those up to it.
        tokens = len(c.row.response_ids)
        if c.stopped:
            tokens = next((i + 1 for i, end in enumerate(c.text_ends) if end >= len(c.text)), tokens)
        self._leave(c)
        self._deliver(c.submission, Finished(c.index, reason, tokens, result.num_decisions,
                                             result.num_fallbacks, result.accepted_positions))
        s = c.submission
        s.open_choices -= 1
        if s.open_choices == 0:
            self._record({"serve_requests": 1, "serve_request_latency_seconds": time.monotonic() - s.submitted})

    def _leave(self, c: _Choice) -> None:
        self.decoder.leave(c.row)
        self._choices.remove(c)

    def _deliver(self, s: Submission, event: Event) -> None:
        if s.cancelled:
            return
        try:
            s.on_event(event)
        except Exception:  # a consumer's failure must not stop the loop
            log.exception("a request's event callback failed; cancelling it")
            self.cancel(s)

    def _fail_all(self, message: str) -> None:
        """Fail every request running or queued; start again from an empty batch."""
        failed = {id(c.submission): c.submission for c in self._choices}
        with self._wake:
            failed.update({id(s): s for s in self._queue})
            self._queue.clear()
        self._choices.clear()
        self.decoder.open(self.max_rows)  # a fresh batch: the failed one's cache is unusable
        for s in failed.values():
            self._deliver(s, Failed(message))
        self._record({"serve_request_errors": len(failed)})

    # ------------------------------------------------------------------ metrics
    def _count_tokens(self, n: int) -> None:
        now = time.monotonic()
        self.counts["tokens"] += n
        self._token_times.append((now, n))
        while self._token_times and self._token_times[0][0] < now - 5.0:
            self._token_times.popleft()
        span = max(now - self._token_times[0][0], 1.0)  # no spike on the first step after idle
        self._record({"serve_tokens": n, "serve_tokens_per_second": sum(k for _, k in self._token_times) / span})

    def _record_queue(self) -> None:
        waiting = sum(1 for c in self._choices if c.row.cache_row < 0)
        with self._wake:
            waiting += sum(s.n for s in self._queue)
        self._record({"serve_queue_length": waiting})

    def _record(self, values: dict) -> None:
        if self.metrics is not None:
            self.metrics.record(values)


def _truncate(c: _Choice, length: int) -> None:
    """Cut an answer's text to ``length`` characters (never into what was sent), and its
    unsent pieces with it."""
    length = max(length, c.sent_chars)
    c.text = c.text[:length]
    keep, total = [], c.sent_chars
    for piece, candidate in c.unsent:
        room = length - total
        if room <= 0:
            break
        keep.append((piece[:room], candidate))
        total += len(piece[:room])
    c.unsent = keep
