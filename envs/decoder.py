"""The accept/reject decoding engine: a batch of episodes of the MARA MDP.

Each row of the batch is one prompt. At every output position the upstream LLM proposes
a candidate set (envs/mdp.py); the agent looks at candidates in probability order and the
first one it accepts is appended; the last candidate is accepted if all others were
rejected; a position with a single candidate takes no decision. The state of candidate k
is the LLM's last-layer hidden state after prompt + response so far + t^k, followed by
the parts its layout adds (``state_features``: the prompt's last hidden state, the
candidate's rank and log-probability; core/state_features.py).

Computing those states. The reference runs one full LLM call per candidate. Here every
forward reuses the KV cache of the prefix, and:

- ``eager`` mode feeds all K candidates of a position as K new tokens in ONE forward:
  they share the same position id and a 4-D attention mask lets each see the prefix and
  itself only (a one-level tree), so K states cost one batched step;
- ``lazy`` mode feeds candidates one at a time, only as far as the agent goes. When the
  first candidate is accepted this is exactly plain decoding: its forward also yields the
  next position's logits and its KV entries stay in the cache.
- ``hybrid`` mode starts a position lazily, with the first candidate alone,
  and at the first rejection feeds all the remaining candidates in one tree-masked forward,
  as eager mode does. A position costs one forward step when the agent accepts the first
  candidate and two whatever else it does (lazy mode: one more per rejection).

Continuous batching. ``start(prompts, max_rows=B)`` keeps at most B episodes in the KV
cache: the others wait, and each joins the running batch as soon as an episode ends (its
prompt prefilled by a forward of its own, whose KV cache then joins the batch's), so the
batch stays full until the prompts run out. Episodes are the same as when decoded alone.
A server adds and removes rows while the batch runs (``open``, ``join``, ``leave``).

Cache bookkeeping. The KV cache has S slots per row. Each slot is FREE (padding or a
discarded candidate), VALID (prompt or accepted token) or PENDING (a candidate awaiting
the agent's decision). The attention mask lets new tokens see only VALID slots; FREE
slots are squeezed out by ``_compact`` before a forward when that shortens the cache.
Rows whose episode ended are dropped from the cache at the same time.

The MDP rules themselves (decisions, Eq. 5, Eq. 8, the results) are in ``_AcceptRejectMDP``,
shared with the vLLM backend (envs/vllm_backend.py); ``AcceptRejectDecoder`` adds how the
states are computed with transformers.

Usage (the loop that aligned generation and rollout workers run)::

    decoder = AcceptRejectDecoder(llm, sampling, kl, mode="lazy")
    decoder.start(prompts)
    while decoder.has_pending():
        states = decoder.pending_states()            # (n, state_dim) one per waiting row
        accept_prob = policy(states)                 # (n,)
        decoder.apply(actions, accept_prob)          # advances to the next decisions
    results = decoder.results()                      # text, transitions, statistics
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from core.config import AUTO, KLConfig, SamplingConfig
from core.contracts import ACCEPT, EpisodeTransitions
from core.sections import Int, check
from core.state_features import PAPER_STATE, candidate_scalars, reads_prompt, state_size
from envs.mdp import candidate_sets, kl_penalty, reference_accept_probability

FREE, VALID, PENDING = 0, 1, 2
# What a forward costs beyond its tokens, in tokens (CPU, SmolLM2-135M): a group of rows gets
# a forward of its own only when it saves more padding than this (``_width_groups``).
_FORWARD_COST_TOKENS = 16
MODES = ("hybrid", "lazy", "eager")


def resolve_mode(mode: str, device: torch.device) -> str:
    """``mode`` itself, or for "auto" (``core.config.AUTO``) hybrid when the upstream runs on a
    GPU (a tree forward of K candidates costs about what one token's does) and lazy on a CPU
    (compute grows with the tokens fed, so only the candidates the agent reaches are fed)."""
    if mode == AUTO:
        return "hybrid" if device.type == "cuda" else "lazy"
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES} or {AUTO!r}, got {mode!r}")
    return mode


class NonFiniteStateError(ValueError):
    """The upstream LLM produced NaN or infinite hidden states (typically float16 overflow)."""


@dataclass
class DecodeResult:
    """One finished row: the answer, its decisions as transitions, and statistics."""

    prompt: str
    response: str
    response_ids: list[int]
    finish_reason: str  # "eos" | "length" | "context"
    episode: EpisodeTransitions
    accepted_positions: list[int]  # 1-based candidate index accepted at each position with >1 candidates
    num_fallbacks: int  # positions where every candidate but the last was rejected
    forward_tokens: int  # tokens fed through the LLM for this row, prompt excluded
    forward_steps: list[int]  # per output position, the sequential forward steps that fed its candidates
    decision_points: list[tuple[int, int, int]]  # per decision: (output position, 0-based candidate index, token id)
    token_candidates: list[int] = field(default_factory=list)  # 1-based candidate index of each response token

    @property
    def num_decisions(self) -> int:
        return len(self.episode)


# ---------------------------------------------------------------------------------------
# The accept/reject MDP, whatever computes the states
# ---------------------------------------------------------------------------------------

@dataclass
class _EpisodeRow:
    """Book-keeping of one episode that every backend shares."""

    prompt: str
    prompt_ids: list[int]
    sampling: SamplingConfig | None = None  # this row's candidate set and length; None: the decoder's
    response_ids: list[int] = field(default_factory=list)
    token_candidates: list[int] = field(default_factory=list)  # 1-based candidate index of each response token
    finish_reason: str = ""  # "eos" | "length" | "context" (| "stop": ended by ``leave``)
    # the current output position
    cand_ids: list[int] = field(default_factory=list)
    ref_probs: np.ndarray = field(default_factory=lambda: np.zeros(0))
    k: int = 0  # index of the candidate awaiting a decision
    cand_hidden: dict[int, torch.Tensor] = field(default_factory=dict)  # states computed so far
    prompt_hidden: torch.Tensor | None = None  # the prompt's last hidden state, once computed
    # records
    states: list[np.ndarray] = field(default_factory=list)
    actions: list[int] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    where: list[tuple[int, int, int]] = field(default_factory=list)  # (output position, candidate index, token)
    accepted_positions: list[int] = field(default_factory=list)
    num_fallbacks: int = 0
    rejections: int = 0  # candidates rejected so far in this answer
    forward_tokens: int = 0
    forward_steps: list[int] = field(default_factory=list)  # per output position (see DecodeResult)

    @property
    def finished(self) -> bool:
        return bool(self.finish_reason)

    @property
    def busy(self) -> bool:
        """The backend has work scheduled for this row (each backend's row says which)."""
        raise NotImplementedError

    @property
    def waiting(self) -> bool:
        """Awaiting the agent's decision on candidate k."""
        return not self.finished and not self.busy and self.k in self.cand_hidden


class _AcceptRejectMDP:
    """The MARA MDP over a batch of episodes, apart from how candidate states are computed.

    The agent decides on a position's candidates in probability order; the first it
    accepts is appended; a rejection moves to the next candidate at the same position
    (Eq. 5); the last candidate is accepted with no decision, as is a single candidate;
    each decision is charged the KL penalty of Eq. 8.

    A backend subclass computes the states; the hooks at the end of this class are what
    it tells these rules.
    """

    def __init__(
        self,
        llm,
        sampling: SamplingConfig = SamplingConfig(),
        kl: KLConfig = KLConfig(),
        mode: str = "lazy",
        state_dtype: np.dtype = np.float32,
        state_features: str = PAPER_STATE,
    ) -> None:
        """``state_features``: what the agent's state holds (``core.state_features``)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.llm = llm
        self.sampling = sampling
        self.kl = kl
        self.mode = mode
        self.state_features = state_features
        self.state_dim = state_size(state_features, llm.hidden_size)
        self.reads_prompt = reads_prompt(state_features)
        self.state_dtype = state_dtype
        self.rows: list[_EpisodeRow] = []
        self.policy_version = 0

    # ------------------------------------------------------------------ public API
    def start(self, prompts: list[str], policy_version: int = 0, max_rows: int | None = None) -> None:
        """Encode the prompts and advance every row to its first decision (or to its end,
        if no position has two candidates). With ``max_rows``, at most that many episodes
        run at once and the others join as episodes end (continuous batching; the
        transformers backend, others run every row at once)."""
        if not prompts:
            raise ValueError("no prompts given")
        if max_rows is not None:
            check("max_rows", max_rows, Int(ge=1))
        encoded = [self.llm.encode_prompt(p) for p in prompts]  # validates every prompt first
        self.policy_version = policy_version
        self.max_rows = max_rows or len(prompts)
        self.rows = self._begin(prompts, encoded)
        self._advance()

    def has_pending(self) -> bool:
        return any(r.waiting for r in self.rows)

    def pending_rows(self) -> list[int]:
        return [i for i, r in enumerate(self.rows) if r.waiting]

    def pending_states(self) -> torch.Tensor:
        """(n, state_dim) float32 state of the candidate each waiting row must decide on."""
        return torch.stack([self._state(self.rows[i], self.rows[i].k) for i in self.pending_rows()]).float()

    def pending_positions(self) -> np.ndarray:
        """0-based output position of each waiting row's current candidate."""
        return np.array([len(self.rows[i].response_ids) for i in self.pending_rows()], dtype=np.int64)

    def pending_rejected(self) -> np.ndarray:
        """Whether each waiting row has rejected a candidate earlier in its answer."""
        return np.array([self.rows[i].rejections > 0 for i in self.pending_rows()], dtype=bool)

    def pending_reference_accept(self, draws: list | None = None) -> np.ndarray:
        """pi_ref(accept | s) of each waiting row's current candidate (``mdp.reference_accept_probability``):
        deciding with it reproduces the upstream's own sampling from the candidate set. ``draws``:
        per waiting row, an ``mdp.Draw`` that reshapes that distribution within the set (None: as it is)."""
        rows = [self.rows[i] for i in self.pending_rows()]
        draws = draws or [None] * len(rows)
        return np.array([reference_accept_probability(
            r.ref_probs if d is None else d.probabilities(r.ref_probs, self.sampling_of(r).temperature), r.k)
            for r, d in zip(rows, draws)], dtype=np.float64)

    def apply(self, actions, accept_probs=None, advance: bool = True) -> np.ndarray:
        """Apply one decision to every waiting row (in ``pending_rows`` order) and
        return the KL penalty (Eq. 8) of each decision. Then compute states up to the next
        decisions, unless ``advance`` is False (a server's loop steps forwards itself).

        ``accept_probs`` are the agent's pi(accept | s) for the KL penalty; without them
        the decisions are treated as certain (pi(a | s) = 1 for the action taken).
        """
        waiting = self.pending_rows()
        actions = np.asarray(actions, dtype=np.int64).reshape(-1)
        if len(actions) != len(waiting):
            raise ValueError(f"{len(waiting)} rows are waiting for a decision, got {len(actions)} actions")
        if accept_probs is None:
            accept_probs = actions.astype(np.float64)
        accept_probs = np.asarray(accept_probs, dtype=np.float64).reshape(-1)
        for i, action, p_accept in zip(waiting, actions, accept_probs):
            self._decide(self.rows[i], int(action), float(p_accept))
        if advance:
            self._advance()
        return np.array([self.rows[i].kl[-1] for i in waiting], dtype=np.float32)

    def results(self) -> list[DecodeResult]:
        if any(not r.finished for r in self.rows):
            raise RuntimeError("some episodes have not finished; keep calling apply()")
        return [self._result(r) for r in self.rows]

    def sampling_of(self, row: _EpisodeRow) -> SamplingConfig:
        """The candidate-set settings of a row: its own (a served request's) or the decoder's."""
        return row.sampling or self.sampling

    # ------------------------------------------------------------------ MDP steps
    def _state(self, row: _EpisodeRow, k: int) -> torch.Tensor:
        """The agent's state for candidate k of the row's current position: its hidden state
        (Eq. 4), then the parts of the layout (core/state_features.py)."""
        hidden = row.cand_hidden[k]
        if self.state_features == PAPER_STATE:
            return hidden
        state = [hidden, row.prompt_hidden] if self.reads_prompt else [hidden]
        scalars = candidate_scalars(self.state_features, row.ref_probs, k)
        if scalars:  # in float32 whatever the upstream's dtype: bfloat16 would round them to 3 digits
            state = [s.float() for s in state] + [torch.tensor(scalars, dtype=torch.float32, device=hidden.device)]
        return torch.cat(state)

    def _decide(self, row: _EpisodeRow, action: int, p_accept: float) -> None:
        k = row.k
        ref_accept = reference_accept_probability(row.ref_probs, k)
        row.states.append(self._state(row, k).float().cpu().numpy().astype(self.state_dtype))
        row.actions.append(action)
        row.kl.append(kl_penalty(p_accept, ref_accept, action, self.kl))
        row.where.append((len(row.response_ids), k, row.cand_ids[k]))
        if action == ACCEPT:
            self._accept(row, k)
            return
        # Reject (Eq. 5): move to candidate k + 1 at the same position.
        row.rejections += 1
        self._discard(row, k)
        row.k = k + 1
        if row.k == len(row.cand_ids) - 1:
            row.num_fallbacks += 1  # fallback: every other candidate was rejected
        self._visit_candidate(row)

    def _to_compute(self, row: _EpisodeRow, k: int) -> list[int]:
        """The candidates whose states the next forward computes when candidate k's is
        needed: k alone (lazy; hybrid at a position's first candidate), or k and every
        candidate after it (eager at a position's start; hybrid after a rejection)."""
        if self.mode == "lazy" or (self.mode == "hybrid" and k == 0):
            return [k]
        return list(range(k, len(row.cand_ids)))

    def _count_forward(self, row: _EpisodeRow) -> None:
        """One sequential forward step fed candidates of the row's current position."""
        position = len(row.response_ids)
        if len(row.forward_steps) <= position:
            row.forward_steps += [0] * (position + 1 - len(row.forward_steps))
        row.forward_steps[position] += 1

    def _visit_candidate(self, row: _EpisodeRow) -> None:
        """Make candidate k's state available; the last candidate is accepted at once."""
        if row.k not in row.cand_hidden:
            self._schedule(row, row.k)
        elif row.k == len(row.cand_ids) - 1:
            self._accept(row, row.k)

    def _accept(self, row: _EpisodeRow, k: int) -> None:
        if len(row.cand_ids) > 1:
            row.accepted_positions.append(k + 1)
        token, hidden = row.cand_ids[k], row.cand_hidden[k]
        self._close_position(row, k)
        row.response_ids.append(token)
        row.token_candidates.append(k + 1)
        if token in self.llm.eos_token_ids:
            row.finish_reason = "eos"
        elif len(row.response_ids) >= self.sampling_of(row).max_new_tokens:
            row.finish_reason = "length"
        elif len(row.prompt_ids) + len(row.response_ids) >= self.llm.max_context:  # the next token's position
            row.finish_reason = "context"
        else:
            self._open_next(row, hidden)

    def _result(self, r: _EpisodeRow) -> DecodeResult:
        episode = EpisodeTransitions(
            states=np.stack(r.states) if r.states else np.zeros((0, self.state_dim), self.state_dtype),
            actions=np.asarray(r.actions, dtype=np.int8),
            kl_penalties=np.asarray(r.kl, dtype=np.float32),
            policy_version=self.policy_version,
            prompt=r.prompt,
            response=self.llm.decode(r.response_ids),
            finished=r.finish_reason in ("eos", "context"),
        )
        return DecodeResult(
            prompt=r.prompt,
            response=episode.response,
            response_ids=list(r.response_ids),
            finish_reason=r.finish_reason,
            episode=episode,
            accepted_positions=list(r.accepted_positions),
            num_fallbacks=r.num_fallbacks,
            forward_tokens=r.forward_tokens,
            forward_steps=list(r.forward_steps),
            decision_points=list(r.where),
            token_candidates=list(r.token_candidates),
        )

    # ------------------------------------------------------------------ backend hooks
    def _begin(self, prompts: list[str], prompt_ids: list[list[int]]) -> list[_EpisodeRow]:
        """The rows of a new batch (and a reset of the backend's own state)."""
        raise NotImplementedError

    def _advance(self) -> None:
        """Compute states until some row waits for a decision or every episode has ended."""
        raise NotImplementedError

    def _schedule(self, row: _EpisodeRow, k: int) -> None:
        """Candidate k's state is needed: compute it in the next ``_advance`` step."""
        raise NotImplementedError

    def _discard(self, row: _EpisodeRow, k: int) -> None:
        """Candidate k was rejected."""
        raise NotImplementedError

    def _close_position(self, row: _EpisodeRow, k: int) -> None:
        """Candidate k was accepted: it joins the prefix, the position's others are dropped."""
        raise NotImplementedError

    def _open_next(self, row: _EpisodeRow, hidden: torch.Tensor) -> None:
        """The row's next position opens with the candidates of ``hidden``'s logits."""
        raise NotImplementedError


# ---------------------------------------------------------------------------------------
# The transformers backend: a KV cache of the batch
# ---------------------------------------------------------------------------------------

@dataclass(kw_only=True)
class _Row(_EpisodeRow):
    """An episode's cache row and what the next forward must feed for it."""

    cache_row: int
    next_position: int = 0  # position id of the next token to feed
    cand_slot: dict[int, int] = field(default_factory=dict)  # cache slot of each candidate fed
    # what the next forward must feed for this row
    todo_tokens: list[int] = field(default_factory=list)
    todo_cands: list[int] = field(default_factory=list)  # candidate index of each todo token

    @property
    def busy(self) -> bool:
        return bool(self.todo_tokens)


class AcceptRejectDecoder(_AcceptRejectMDP):
    rows: list[_Row]
    _opening: list[tuple[_Row, torch.Tensor]]  # rows whose next position awaits its candidates

    def __init__(self, llm, sampling: SamplingConfig = SamplingConfig(), kl: KLConfig = KLConfig(),
                 mode: str = "lazy", state_dtype: np.dtype = np.float32, ragged: bool | None = None,
                 state_features: str = PAPER_STATE) -> None:
        """``ragged``: rows of different widths in forwards of their own (``_forward_once``);
        None: on a CPU, where padding costs compute."""
        super().__init__(llm, sampling, kl, mode, state_dtype, state_features)
        self.ragged = llm.device.type == "cpu" if ragged is None else ragged
        self.forwards = 0  # forwards of decoding steps (prompt prefills not counted)
        self.fed_tokens = 0  # tokens those forwards fed, padding included

    # ------------------------------------------------------------------ MDP hooks
    def _begin(self, prompts: list[str], prompt_ids: list[list[int]]) -> list[_Row]:
        """One row per prompt; the first ``max_rows`` get a cache row now (their prompts
        fed by the first batched forward), the others when episodes end (``_admit``)."""
        self._opening = []
        self.cache = self.llm.new_cache()
        self.slot_state = torch.zeros(0, 0, dtype=torch.int8)
        rows = [_Row(prompt=p, prompt_ids=ids, cache_row=-1) for p, ids in zip(prompts, prompt_ids)]
        self._waiting_to_join = list(rows)
        return rows

    def _schedule(self, row: _Row, k: int) -> None:
        row.todo_cands = self._to_compute(row, k)
        row.todo_tokens = [row.cand_ids[j] for j in row.todo_cands]

    def _discard(self, row: _Row, k: int) -> None:
        # A rejected candidate's slot is freed at once (its KV entries are never attended
        # again); eager mode frees the position's slots together when it closes.
        if self.mode != "eager":
            self._free_slot(row, k)

    def _close_position(self, row: _Row, k: int) -> None:
        for other in list(row.cand_slot):
            if other != k:
                self._free_slot(row, other)
        self.slot_state[row.cache_row, row.cand_slot[k]] = VALID
        # The position is closed: until the next one opens the row waits for nothing.
        row.cand_hidden, row.cand_slot = {}, {}
        row.next_position += 1

    def _open_next(self, row: _Row, hidden: torch.Tensor) -> None:
        self._opening.append((row, hidden))  # opened with the others by _open_positions

    def _open_positions(self) -> None:
        """Compute the candidate sets of every row that starts a new output position (one
        batched output-head matmul and top-k) and schedule their forwards."""
        if not self._opening:
            return
        rows = [row for row, _ in self._opening]
        logits = self.llm.logits(torch.stack([hidden for _, hidden in self._opening]))
        self._opening = []
        for row, (ids, probs) in zip(rows, self._candidate_sets(rows, logits)):
            row.cand_ids, row.ref_probs, row.k = ids, probs, 0
            row.cand_hidden, row.cand_slot = {}, {}
            row.todo_cands = list(range(len(ids))) if self.mode == "eager" else [0]
            row.todo_tokens = [ids[j] for j in row.todo_cands]

    def _candidate_sets(self, rows: list[_Row], logits: torch.Tensor) -> list[tuple[list[int], np.ndarray]]:
        """``candidate_sets`` of each row, rows with the same settings computed together."""
        out: list = [None] * len(rows)
        by_sampling: dict[SamplingConfig, list[int]] = {}
        for i, row in enumerate(rows):
            by_sampling.setdefault(self.sampling_of(row), []).append(i)
        for sampling, index in by_sampling.items():
            for i, candidates in zip(index, candidate_sets(logits[index], sampling)):
                out[i] = candidates
        return out

    def _free_slot(self, row: _Row, k: int) -> None:
        slot = row.cand_slot.pop(k, None)
        if slot is not None:
            self.slot_state[row.cache_row, slot] = FREE

    # ------------------------------------------------------------------ rows that join and leave
    # A server's decoding loop (serving/engine.py): requests join the running batch and
    # leave it between decisions; ``start`` + ``apply`` are the same loop for a fixed set.
    def open(self, max_rows: int, policy_version: int = 0) -> None:
        """An empty batch of at most ``max_rows`` rows in the KV cache; rows come by ``join``."""
        check("max_rows", max_rows, Int(ge=1))
        self.policy_version, self.max_rows = policy_version, max_rows
        self.rows = self._begin([], [])

    def join(self, prompt: str, prompt_ids: list[int], sampling: SamplingConfig | None = None) -> _Row:
        """Add an episode (its prompt already encoded); it gets a cache row at the next
        forward if one is free, else when an episode ends. Returns the row, the caller's
        handle on it; call ``advance`` (or ``apply``) to compute its first states."""
        if not prompt_ids:
            raise ValueError("empty prompt: give the model something to answer")
        row = _Row(prompt=prompt, prompt_ids=list(prompt_ids), sampling=sampling, cache_row=-1)
        self.rows.append(row)
        self._waiting_to_join.append(row)
        return row

    def leave(self, row: _Row) -> None:
        """Remove a row (ended, or stopped early: finish reason "stop"); its cache row is
        dropped by the next forward's compaction."""
        if not row.finished:
            row.finish_reason = "stop"
        self.rows.remove(row)
        if row in self._waiting_to_join:
            self._waiting_to_join.remove(row)
        self._opening = [(r, h) for r, h in self._opening if r is not row]

    def advance(self, max_forwards: int | None = None) -> None:
        """Compute states until some row waits for a decision or every row has ended, or
        ``max_forwards`` forwards have run (a server streams and admits between forwards:
        rows whose positions have one candidate never wait for a decision)."""
        self._advance(max_forwards)

    def result(self, row: _Row) -> DecodeResult:
        """The result of one row (finished or not: the answer so far)."""
        return self._result(row)

    @property
    def rows_in_cache(self) -> int:
        """Episodes holding a cache row now (the batch a forward decodes)."""
        return sum(1 for r in self.rows if r.cache_row >= 0 and not r.finished)

    # ------------------------------------------------------------------ forwards
    def _advance(self, max_forwards: int | None = None) -> None:
        """Run batched forwards until some row waits for a decision (or all have ended, or
        ``max_forwards`` have run).

        Rows in lockstep: a row whose position had a single candidate, accepted with no
        decision, does not get a forward of its own while other rows wait for the agent;
        its next token joins the forward that follows their decisions. On a CPU a forward
        of a few tokens costs about the same as one of a single token (reading the weights
        dominates), so running such rows ahead doubled the forwards per generated token.
        For the same reason the candidate sets of all rows opening a position are computed
        together, in one output-head call, just before the forward that needs them.
        """
        forwards = 0
        while not self.has_pending() and (max_forwards is None or forwards < max_forwards):
            self._compact()
            self._admit()
            self._open_positions()
            if not any(r.todo_tokens for r in self.rows):
                return  # every episode has ended
            self._forward_once()
            forwards += 1

    def _admit(self) -> None:
        """Give waiting episodes the cache rows that ended episodes left (continuous
        batching). Their prompts are prefilled by a forward of their own, on a cache of
        their own, which then joins the batch's cache: fed with the running rows' one-token
        forward, every running row would be padded to the prompts' length."""
        joining = self._waiting_to_join[: max(self.max_rows - self.rows_in_cache, 0)]
        if not joining:
            return
        del self._waiting_to_join[: len(joining)]
        cache, state, last_hidden = self._prefill(joining)
        running = self.slot_state.shape[0]
        if running == 0:
            self.cache, self.slot_state = cache, state
        else:
            width = max(self.slot_state.shape[1], state.shape[1])
            shift = width - self.slot_state.shape[1]  # the running rows' slots move right by this
            for r in self.rows:
                if r.cache_row >= 0 and not r.finished:
                    r.cand_slot = {k: slot + shift for k, slot in r.cand_slot.items()}
            self.slot_state = torch.cat([F.pad(t, (width - t.shape[1], 0), value=FREE)
                                         for t in (self.slot_state, state)])
            merge_kv(self.cache, cache, width)
        for i, r in enumerate(joining):
            r.cache_row, r.next_position = running + i, len(r.prompt_ids)
            if self.reads_prompt:  # a copy: a view would keep the whole prefill alive
                r.prompt_hidden = last_hidden[i].clone()
            self._opening.append((r, last_hidden[i]))

    def _prefill(self, rows: list[_Row]) -> tuple[object, torch.Tensor, torch.Tensor]:
        """One forward of the rows' prompts (left-padded, causal) on a new cache: the
        cache, its slot states (VALID, FREE for padding) and each prompt's last hidden state."""
        width = max(len(r.prompt_ids) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        positions = torch.zeros(len(rows), width, dtype=torch.long)
        state = torch.full((len(rows), width), FREE, dtype=torch.int8)
        # Padding attends to itself only (a row of -inf would give NaN keys and values).
        allowed = torch.eye(width, dtype=torch.bool).repeat(len(rows), 1, 1)
        causal = torch.tril(torch.ones(width, width, dtype=torch.bool))
        for b, r in enumerate(rows):
            n = len(r.prompt_ids)
            pad = width - n
            ids[b, pad:] = torch.tensor(r.prompt_ids)
            positions[b, pad:] = torch.arange(n)
            state[b, pad:] = VALID
            allowed[b, pad:, pad:] = causal[:n, :n]
        cache = self.llm.new_cache()
        hidden = self.llm.forward(ids, positions, self._additive_mask(allowed[:, None]), cache)
        for b, r in enumerate(rows):
            self._check_finite(hidden[b, width - len(r.prompt_ids):], r)
        return cache, state, hidden[:, -1]

    def _forward_once(self) -> None:
        """One sequential forward step: every row with tokens to feed feeds them (a
        position's first candidate, or a tree of candidates), each at its next position,
        seeing its own prefix and itself.

        A forward is rectangular: its rows are padded to the widest. On a GPU one forward of
        B x W tokens costs about what one of B tokens does, so every row goes in one. On a
        CPU compute grows with the tokens fed, padding included: a tree of 30 candidates
        padded the one-token rows beside it to 30 (hybrid mode, a p = 0.5 agent: 23 tokens
        fed per generated token where 4.2 were real). There rows of similar widths go
        together (``_width_groups``), each group in a forward of its own on a copy of its
        cache rows; each row still takes exactly one forward step."""
        batch, past = self.slot_state.shape
        fed = {r.cache_row: r for r in self.rows if r.todo_tokens and not r.finished}
        groups = self._width_groups(fed) if self.ragged else [list(range(batch))]
        if len(groups) == 1 and len(groups[0]) == batch:  # one forward on the batch's cache
            hidden = self._forward_rows(groups[0], fed, self.cache, past)
            hidden_of = {b: hidden[b] for b in fed}
        else:
            hidden_of, grown = {}, []
            for rows in groups:
                cache = select_kv(self.cache, rows, self.llm.new_cache())
                hidden = self._forward_rows(rows, fed, cache, past)
                hidden_of.update({b: hidden[i] for i, b in enumerate(rows)})
                grown.append((rows, cache))
            append_kv(self.cache, grown, past)
        width = max(len(r.todo_tokens) for r in fed.values())
        new_state = torch.full((batch, width), FREE, dtype=torch.int8)
        for b, r in fed.items():
            new_state[b, : len(r.todo_tokens)] = PENDING
        self.slot_state = torch.cat([self.slot_state, new_state], dim=1)

        for b, r in fed.items():
            n = len(r.todo_tokens)
            self._check_finite(hidden_of[b][:n], r)
            r.forward_tokens += n
            self._count_forward(r)
            for j, k in enumerate(r.todo_cands):
                r.cand_hidden[k] = hidden_of[b][j]
                r.cand_slot[k] = past + j
            r.todo_tokens, r.todo_cands = [], []
            self._visit_candidate(r)  # single or last candidate: accepted with no decision

    def _forward_rows(self, cache_rows: list[int], fed: dict[int, _Row], cache, past: int) -> torch.Tensor:
        """(len(cache_rows), W, d) states of one forward of the batch's rows ``cache_rows``
        (the rows of ``cache``, in order): each fed row's tokens at its next position, the
        others padding (which attends to itself only)."""
        width = max(len(fed[b].todo_tokens) for b in cache_rows if b in fed)
        n = len(cache_rows)
        ids = torch.zeros(n, width, dtype=torch.long)
        positions = torch.zeros(n, width, dtype=torch.long)
        for i, b in enumerate(cache_rows):
            if b in fed:  # candidates of one position: same position id, each sees the prefix and itself
                r = fed[b]
                ids[i, : len(r.todo_tokens)] = torch.tensor(r.todo_tokens)
                positions[i, : len(r.todo_tokens)] = r.next_position
        attend_past = (self.slot_state[cache_rows] == VALID)[:, None, :].expand(n, width, past)
        attend_new = torch.eye(width, dtype=torch.bool).repeat(n, 1, 1)  # (n, Q, Q)
        allowed = torch.cat([attend_past, attend_new], dim=-1)[:, None]  # (n, 1, Q, S + Q)
        self.forwards += 1
        self.fed_tokens += n * width
        return self.llm.forward(ids, positions, self._additive_mask(allowed), cache)

    def _width_groups(self, fed: dict[int, _Row]) -> list[list[int]]:
        """The fed cache rows grouped by width (1, 2, 3-4, 5-8, ... tokens), neighbouring
        groups merged while a separate forward would cost more than the padding it saves
        (a forward's fixed cost counted as ``_FORWARD_COST_TOKENS`` tokens)."""
        buckets: dict[int, list[int]] = {}
        for b in sorted(fed):
            buckets.setdefault((len(fed[b].todo_tokens) - 1).bit_length(), []).append(b)
        groups: list[list[int]] = []
        group_width = 0
        for bucket in sorted(buckets):
            rows = buckets[bucket]
            width = max(len(fed[b].todo_tokens) for b in rows)
            if groups and len(groups[-1]) * (width - group_width) <= _FORWARD_COST_TOKENS:
                groups[-1] += rows  # padding the narrower rows to this width costs less than a forward
            else:
                groups.append(list(rows))
            group_width = width
        return [sorted(rows) for rows in groups]

    def _additive_mask(self, allowed: torch.Tensor) -> torch.Tensor:
        """The attention mask the model adds to its scores: 0 where ``allowed``, else the
        dtype's most negative number."""
        mask = torch.zeros(allowed.shape, dtype=self.llm.dtype)
        return mask.masked_fill_(~allowed, torch.finfo(self.llm.dtype).min)

    def _check_finite(self, hidden: torch.Tensor, row: _Row) -> None:
        """Refuse NaN/inf states at their source: they would become NaN accept
        probabilities, NaN KL penalties and, in training, episodes the replay must drop."""
        if not torch.isfinite(hidden).all():
            raise NonFiniteStateError(
                f"the upstream model {self.llm.model_id} ({str(self.llm.dtype).removeprefix('torch.')}) "
                f"produced non-finite hidden states for the prompt {row.prompt[:60]!r}; "
                f"float16 overflows on some models: try dtype float32 or bfloat16"
            )

    def _compact(self) -> None:
        """Squeeze FREE slots out of the cache and drop rows whose episode ended."""
        live = [r for r in self.rows if r.cache_row >= 0 and not r.finished]
        keep = self.slot_state[[r.cache_row for r in live]] != FREE
        counts = keep.sum(dim=1)
        width = int(counts.max()) if len(live) else 0
        if len(live) == self.slot_state.shape[0] and width == self.slot_state.shape[1]:
            return
        index = torch.zeros(len(live), width, dtype=torch.long)
        for new_row, r in enumerate(live):
            kept = keep[new_row].nonzero().flatten()
            pad = width - len(kept)
            index[new_row, pad:] = kept
            remap = {int(old): pad + i for i, old in enumerate(kept)}
            r.cand_slot = {k: remap[s] for k, s in r.cand_slot.items()}
        rows = torch.tensor([r.cache_row for r in live], dtype=torch.long)
        state = self.slot_state[rows].gather(1, index)
        pad_mask = torch.arange(width)[None, :] < (width - counts)[:, None]
        self.slot_state = state.masked_fill(pad_mask, FREE)
        gather_kv(self.cache, rows, index)
        for r in self.rows:
            if r.finished:
                r.cache_row = -1
        for new_row, r in enumerate(live):
            r.cache_row = new_row


def _filled_layers(cache):
    """The cache layers a forward has filled, (B, heads, S, dim) tensors, possibly with no
    row or slot left; the others are sized by the first forward."""
    return [layer for layer in cache.layers
            if getattr(layer, "is_initialized", True) and layer.keys is not None and layer.keys.dim() == 4]


def select_kv(cache, rows: list[int], into):
    """``into`` (an empty cache) holding a copy of the rows ``rows`` of ``cache``."""
    index = torch.tensor(rows, dtype=torch.long)
    filled = {id(layer) for layer in _filled_layers(cache)}
    for layer, new in zip(cache.layers, into.layers):
        if id(layer) in filled:
            new.lazy_initialization(layer.keys, layer.values)
            new.keys = layer.keys.index_select(0, index.to(layer.keys.device))
            new.values = layer.values.index_select(0, index.to(layer.values.device))
    return into


def append_kv(cache, groups: list[tuple[list[int], object]], past: int) -> None:
    """Grow every row of ``cache`` by as many slots as the widest group fed (zeros: FREE
    slots, which the mask never lets anything attend to) and copy in, for each group
    (``rows`` of ``cache``, their own cache after a forward), the slots that forward added."""
    layers = [_filled_layers(group_cache) for _, group_cache in groups]
    width = max(group[0].keys.shape[2] for group in layers) - past
    filled = _filled_layers(cache)
    device = filled[0].keys.device
    indices = [torch.tensor(rows, device=device) for rows, _ in groups]
    for i, layer in enumerate(filled):
        for name in ("keys", "values"):
            grown = F.pad(getattr(layer, name), (0, 0, 0, width))
            for index, group in zip(indices, layers):
                added = getattr(group[i], name)[:, :, past:]
                grown[index, :, past:past + added.shape[2]] = added
            setattr(layer, name, grown)


def merge_kv(cache, joining, width: int) -> None:
    """Append the rows of cache ``joining`` to ``cache``, both left-padded (zeros, which the
    mask never lets anything attend to) to ``width`` slots."""
    for layer, new in zip(_filled_layers(cache), _filled_layers(joining)):
        for name in ("keys", "values"):
            old_kv, new_kv = getattr(layer, name), getattr(new, name)
            padded = [F.pad(kv, (0, 0, width - kv.shape[2], 0)) for kv in (old_kv, new_kv.to(old_kv.device))]
            setattr(layer, name, torch.cat(padded))


def gather_kv(cache, rows: torch.Tensor, index: torch.Tensor) -> None:
    """Keep cache rows ``rows`` and, for each, the slots ``index`` (B', S') in order."""
    for layer in _filled_layers(cache):
        dev = layer.keys.device
        heads, dim = layer.keys.shape[1], layer.keys.shape[-1]
        idx = index.to(dev)[:, None, :, None].expand(-1, heads, -1, dim)
        layer.keys = layer.keys.index_select(0, rows.to(dev)).gather(2, idx)
        layer.values = layer.values.index_select(0, rows.to(dev)).gather(2, idx)
