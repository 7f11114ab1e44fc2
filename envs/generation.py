"""Aligned generation: an accept/reject agent steering a frozen upstream LLM.

    from envs.generation import AlignedGenerator
    gen = AlignedGenerator.from_paths(agent="agent.safetensors", model="smollm2")
    for answer in gen.generate(["How can I bake bread?"]):
        print(answer.text, answer.num_decisions, answer.accepted_position_histogram)
    baseline = gen.generate_upstream(["How can I bake bread?"])        # greedy

With ``backend="vllm"`` the upstream LLM runs in vLLM engines (envs/vllm_backend.py): the
same episodes through ``VllmAcceptRejectDecoder``, baselines through vLLM's batched
generation. ``gen.close()`` stops the engines' processes.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from core.agent_file import (
    AGENT_CUT,
    AGENT_DECISIONS,
    AGENT_HORIZON,
    AGENT_THRESHOLD,
    CONTINUATIONS,
    MODE_THRESHOLD,
    UNTRAINED,
    agent_candidates,
    agent_state_features,
    candidate_set_warning,
    default_agent,
    load_agent,
    read_agent_metadata,
    resolve_accept_threshold,
    resolve_decisions,
    resolve_decline_sentences,
    resolve_horizon,
)
from core.config import BACKENDS, KLConfig, ModelConfig, SamplingConfig, VllmEngineConfig
from core.contracts import REJECT
from core.networks import Actor
from core.sections import Choice, Int, Number, check
from core.state_features import PAPER_STATE, check_state_size
from envs.decoder import AcceptRejectDecoder, DecodeResult, resolve_mode
from envs.mdp import Draw, decide
from envs.synthetic import SyntheticLLM, is_synthetic
from envs.vllm_backend import VllmAcceptRejectDecoder, VllmUpstream

log = logging.getLogger(__name__)


@dataclass
class Generation:
    """One answer and how it was produced."""

    prompt: str
    text: str
    finish_reason: str
    num_tokens: int
    num_decisions: int
    num_fallbacks: int
    forward_tokens: int  # LLM tokens computed for the answer (prompt excluded)
    forward_steps: int = 0  # sequential LLM forward steps that computed its candidates (1 per token = plain decoding)
    accepted_positions: list[int] = field(default_factory=list)  # 1-based, per position with >1 candidates

    @property
    def accepted_position_histogram(self) -> dict[int, int]:
        return position_histogram(self.accepted_positions)


def position_histogram(accepted_positions: list[int]) -> dict[int, int]:
    """How many acceptances fell on each candidate index (1-based), in index order."""
    return dict(sorted(Counter(accepted_positions).items()))


def accepted_position_distribution(generations: list[Generation]) -> dict[int, float]:
    """Share of acceptances falling on each candidate index (the paper's Fig. 3)."""
    counts = Counter(k for g in generations for k in g.accepted_positions)
    total = sum(counts.values())
    return {k: counts[k] / total for k in sorted(counts)} if total else {}


def load_llm(model: str | None = None, backend: str = "transformers", dtype: str = "float32",
             device: str = "auto", vllm: VllmEngineConfig | None = None):
    """The upstream LLM as ``backend`` runs it: an ``envs.upstream.UpstreamLLM``
    (transformers) or an ``envs.vllm_backend.VllmUpstream`` built with the engine
    settings ``vllm`` (its engines start on first use)."""
    from envs.upstream import DEFAULT_MODEL, load_upstream

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if is_synthetic(model):  # benchmarks of the distributed system (envs/synthetic.py)
        return SyntheticLLM(model)
    if backend == "vllm":
        return VllmUpstream(model or DEFAULT_MODEL, vllm or VllmEngineConfig(), dtype=dtype, device=device)
    if vllm is not None:
        raise ValueError("vLLM engine settings were given, but the backend is transformers")
    return load_upstream(model or DEFAULT_MODEL, dtype=dtype, device=device)


def llm_from_config(model: ModelConfig):
    """The upstream LLM a run's ``ModelConfig`` describes (rollout workers, reward actors)."""
    return load_llm(model.name, backend=model.backend, dtype=model.dtype, device=model.device,
                    vllm=model.vllm if model.backend == "vllm" else None)


class AlignedGenerator:
    def __init__(
        self,
        llm,
        actor: Actor,
        sampling: SamplingConfig = SamplingConfig(max_new_tokens=256),
        mode: str = "lazy",
        greedy: bool = True,
        batch_size: int = 8,
        seed: int = 0,
        kl: KLConfig = KLConfig(),
        backend: str = "transformers",
        horizon: int | None = None,
        ragged: bool | None = None,
        continuation: str | None = None,
        state_features: str = PAPER_STATE,
        draw: Draw = Draw(),
        accept_threshold: float = MODE_THRESHOLD,
        request_gate: Callable[[list[str]], np.ndarray] | None = None,
        decline_sentences: int | None = None,
    ) -> None:
        """``llm``: an ``UpstreamLLM`` with ``backend="transformers"``, a ``VllmUpstream``
        with ``backend="vllm"`` (``load_llm`` builds either). ``sampling``: the candidate set the
        agent judges (the one it was trained on) and the answers' length. ``draw``: how answers
        are drawn within that set (``mdp.Draw``; a greedy draw makes decisions and continuation
        greedy, a sampled continuation takes the draw's temperature / top-k / top-p; also the
        upstream's sampled baselines). ``horizon``: the agent decides
        the first ``horizon`` tokens of an answer; after them the upstream decides alone
        (None: the agent decides every token). ``continuation``: how the upstream decides
        past the horizon, "greedy" (its most likely token) or "sampled" (its own sampling);
        None: as the agent's decisions are taken (``greedy``). ``ragged``: the transformers decoder's
        forwards grouped by width (``AcceptRejectDecoder``; None: on a CPU). ``state_features``:
        what the agent reads (``core.state_features``; an agent file records its own).
        ``accept_threshold``: how sure the agent must be to step into an answer (``decide``;
        ``core.agent_file``: 0.5, the agent's mode; lower leaves more of the upstream's answers).
        ``request_gate``: which requests the agent decides, called with the prompts (True: the
        agent's; ``rewards.request_gate.RequestGate``); the upstream answers the others alone, as
        past the horizon. None: every request is the agent's. ``decline_sentences``: an answer
        the agent has stepped into (rejected a candidate of) ends with its N-th sentence
        (``decline_end``), before the upstream's continuation can take a decline back; None: answers
        run to their length."""
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if (backend == "vllm") != isinstance(llm, VllmUpstream):
            raise ValueError(f"backend {backend!r} does not match the upstream LLM {type(llm).__name__}")
        check_state_size(actor.state_dim, state_features, llm.hidden_size)
        self.state_features = state_features
        self.llm = llm
        self.backend = backend
        self.actor = actor.eval().to(llm.device)
        self.sampling = sampling
        self.mode = resolve_mode(mode, llm.device)
        self.greedy = greedy
        self.accept_threshold = check("accept_threshold", accept_threshold, Number(gt=0, le=1))
        self.request_gate = request_gate
        if decline_sentences is not None:
            check("decline_sentences", decline_sentences, Int(ge=1))
        self.decline_sentences = decline_sentences
        if horizon is not None:
            check("horizon", horizon, Int(ge=0))
        self.horizon = horizon
        if continuation is None:
            continuation = "greedy" if greedy else "sampled"
        check("continuation", continuation, Choice(CONTINUATIONS))
        self.continuation = continuation
        self.ragged = ragged
        self.batch_size = batch_size
        self.kl = kl
        self.draw = draw
        self.rng = np.random.default_rng(seed)
        self.agent_path: str | None = None  # set by from_paths: the agent file, or "untrained"
        # set by from_paths: what is wrong with a candidate set other than the agent's (None: it is the agent's)
        self.candidate_warning: str | None = None

    @classmethod
    def from_paths(
        cls,
        agent: str | None = None,
        model: str | None = None,
        dtype: str = "float32",
        device: str = "auto",
        backend: str = "transformers",
        vllm: VllmEngineConfig | None = None,
        decisions: str = AGENT_DECISIONS,
        horizon: str | int | None = AGENT_HORIZON,
        max_new_tokens: int = 256,
        candidates: dict | None = None,
        accept_threshold: float | str = AGENT_THRESHOLD,
        decline_sentences: int | str | None = AGENT_CUT,
        **kwargs,
    ) -> "AlignedGenerator":
        """Load the upstream model and the agent.

        ``agent``: a file; None for the agent shipped with the project
        (``core.agent_file.SHIPPED_AGENT``, trained for SmolLM2-135M-Instruct) when it fits
        the model's hidden size, else an untrained one with a warning; ``"untrained"`` for
        a randomly initialised agent (with a warning). Without ``model`` the agent's
        recorded upstream model is used, else the embedded SmolLM2. ``backend`` and
        ``vllm`` (engine settings) as in ``load_llm``. ``decisions``: greedy, sampled, or
        "agent", what the agent file recommends (``core.agent_file.resolve_decisions``); so can
        ``horizon``: a token count, "all", or "agent" (``core.agent_file.resolve_horizon``); and
        ``accept_threshold`` (``core.agent_file.resolve_accept_threshold``) and ``decline_sentences``
        (``core.agent_file.resolve_decline_sentences``).

        The agent judges the candidate set it was trained on (``core.agent_file.agent_candidates``),
        whatever the answers' draw. ``candidates`` (temperature / top_k / top_p) changes it, an
        expert's option: a set other than the trained one is warned about, in the log and in
        ``candidate_warning`` (``core.agent_file.candidate_set_warning``)."""
        if model is None and agent not in (None, UNTRAINED):
            model = read_agent_metadata(agent).get("upstream_model") or None
        llm = load_llm(model, backend=backend, dtype=dtype, device=device, vllm=vllm)
        if agent is None:
            agent = default_agent(llm.hidden_size)
            if agent is None:
                warnings.warn(f"no agent given and the shipped agent does not fit {llm.model_id} (hidden size "
                              f"{llm.hidden_size}): using an UNTRAINED accept/reject agent (random weights)",
                              stacklevel=2)
                agent = UNTRAINED
        if agent == UNTRAINED:
            warnings.warn("using an UNTRAINED accept/reject agent (random weights)", stacklevel=2)
            actor = Actor(state_dim=llm.hidden_size)
        else:
            actor = load_agent(agent, model_hidden_size=llm.hidden_size)
        trained = agent_candidates(agent)
        sampling = replace(trained, max_new_tokens=max_new_tokens, **(candidates or {}))
        warning = candidate_set_warning(trained, sampling)
        if warning:
            log.warning("%s", warning)
            warnings.warn(warning, stacklevel=2)
        generator = cls(llm, actor, sampling=sampling, backend=backend,
                        greedy=resolve_decisions(decisions, agent) == "greedy",
                        horizon=resolve_horizon(horizon, agent),
                        accept_threshold=resolve_accept_threshold(accept_threshold, agent),
                        decline_sentences=resolve_decline_sentences(decline_sentences, agent),
                        state_features=PAPER_STATE if agent == UNTRAINED else agent_state_features(agent), **kwargs)
        generator.agent_path = str(agent)  # what answers: a file, or "untrained"
        generator.candidate_warning = warning
        return generator

    def close(self) -> None:
        """Stop the vLLM engines' processes (nothing to do for transformers)."""
        if self.backend == "vllm":
            self.llm.close()

    # ------------------------------------------------------------------ MARA answers
    def generate(self, prompts: list[str]) -> list[Generation]:
        """Aligned answers, in the order of ``prompts``: ``batch_size`` rows decoded at once,
        a new prompt joining as an answer ends (continuous batching); with vLLM, in batches."""
        for_agent = self.agent_decides(prompts)  # the request gate reads each prompt once
        if self.backend == "vllm":
            results = [r for start in range(0, len(prompts), self.batch_size)
                       for r in self.run_episodes(prompts[start:start + self.batch_size],
                                                  for_agent=for_agent[start:start + self.batch_size])]
        else:
            results = self.run_episodes(prompts, max_rows=self.batch_size, for_agent=for_agent)
        return [self._ended_decline(r, decides) for r, decides in zip(results, for_agent)]

    def stepped_in(self, where: list[tuple[int, int, int]], actions) -> bool:
        """Whether the agent rejected a candidate of an answer it decides (a decision's output
        position within the horizon, ``where`` as ``DecodeResult.decision_points``)."""
        horizon = np.inf if self.horizon is None else self.horizon
        return any(a == REJECT and position < horizon for (position, _, _), a in zip(where, actions))

    def _ended_decline(self, r: DecodeResult, for_agent: bool) -> Generation:
        """The answer of ``r``, ended with its ``decline_sentences``-th sentence if the agent
        stepped into it."""
        answer = _to_generation(r)
        if self.decline_sentences is None or not (for_agent and self.stepped_in(r.decision_points, r.episode.actions)):
            return answer
        end = decline_end(answer.text, self.decline_sentences)
        if end is None:
            return answer
        kept = next(k for k in range(1, len(r.response_ids) + 1) if len(self.llm.decode(r.response_ids[:k])) >= end)
        return replace(answer, text=answer.text[:end].rstrip(), finish_reason="stop", num_tokens=kept)

    def run_episodes(self, prompts: list[str], policy_version: int = 0, max_rows: int | None = None,
                     for_agent: np.ndarray | None = None) -> list[DecodeResult]:
        """Accept/reject episodes with the current actor (also used by the rollout workers,
        with ``greedy=False``); at most ``max_rows`` decoded at once, the rest joining as
        episodes end (``AcceptRejectDecoder.start``). ``for_agent``: the request gate's verdict on
        ``prompts`` (``agent_decides``) when the caller has it already."""
        if self.backend == "vllm":
            decoder = VllmAcceptRejectDecoder(self.llm, self.sampling, self.kl, mode=self.mode,
                                              state_features=self.state_features)
        else:
            decoder = AcceptRejectDecoder(self.llm, self.sampling, self.kl, mode=self.mode, ragged=self.ragged,
                                          state_features=self.state_features)
        decoder.start(prompts, policy_version=policy_version, max_rows=max_rows)
        if for_agent is None:  # the decoder's rows are the prompts, in order
            for_agent = self.agent_decides(prompts)
        while decoder.has_pending():
            accept_prob, greedy = self.decision_rule(decoder, for_agent=for_agent[decoder.pending_rows()])
            actions = self.decide(decoder, accept_prob, greedy,
                                  None if greedy.all() else self.rng.random(len(accept_prob)))
            decoder.apply(actions, accept_prob)
        return decoder.results()

    def agent_decides(self, prompts: list[str]) -> np.ndarray:
        """Which of ``prompts`` the agent decides (the request gate's verdict; all without one)."""
        if self.request_gate is None:
            return np.ones(len(prompts), dtype=bool)
        return np.asarray(self.request_gate(prompts), dtype=bool)

    def decision_rule(self, decoder, aligned: np.ndarray | None = None, draws: list[Draw] | None = None,
                      for_agent: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """pi(accept | s) and the greedy flag of each waiting row's decision: the agent's, or
        past the horizon the upstream's own (``continuation_rule``). Sampled, that is pi_ref (the
        KL-regularised optimum where the reward no longer depends on the decision, Eq. 8);
        greedy, the first candidate is accepted, which is the upstream's most likely token
        (candidates come sorted by probability, ``mdp.candidate_sets``), as greedy decisions are
        the agent's mode. ``aligned``: which rows are aligned answers (None: all); the others
        (a server's plain-upstream requests) take the upstream's own sampling, pi_ref over their
        own candidate sets. ``draws``: each waiting row's ``mdp.Draw`` (None: ``self.draw``); a
        greedy draw makes the row's decisions and continuation greedy. ``for_agent``: which rows the
        request gate gives the agent (``agent_decides``; None: all); the others are decided as
        past the horizon."""
        waiting = len(decoder.pending_rows())
        draws = draws or [self.draw] * waiting
        plain = np.zeros(waiting, dtype=bool) if aligned is None else ~aligned
        within = (decoder.pending_positions() < (np.inf if self.horizon is None else self.horizon)) & ~plain
        if for_agent is not None:
            within &= for_agent
        if within.all():
            accept_prob, greedy = np.zeros(waiting), np.zeros(waiting, dtype=bool)
        else:
            accept_prob, greedy = self.continuation_rule(decoder, draws)
            if plain.any():
                accept_prob[plain], greedy[plain] = decoder.pending_reference_accept()[plain], False
        if within.any():  # the actor sees only the states it decides on
            states = decoder.pending_states()
            states = states[torch.from_numpy(within).to(states.device)]
            accept_prob[within] = self.actor.accept_probability(states).double().cpu().numpy()
            greedy[within] = self.greedy or np.array([d.greedy for d in draws])[within]
        return accept_prob, greedy

    def decide(self, decoder, accept_prob: np.ndarray, greedy: np.ndarray, uniforms) -> np.ndarray:
        """Actions from ``decision_rule``'s output for ``decoder``'s waiting rows (``mdp.decide``).
        Greedy decisions take this generator's accept threshold until the row's first rejection
        (the agent steps in where it is sure), then the agent's mode (0.5) for the rest of the
        answer: a decline it has started is carried on as the agent would. The upstream's greedy
        continuation accepts with probability 1 either way."""
        if self.accept_threshold == MODE_THRESHOLD or not greedy.any():  # training's sampled rows, the default
            return decide(accept_prob, greedy, uniforms)
        threshold = np.where(decoder.pending_rejected(), MODE_THRESHOLD, self.accept_threshold)
        return decide(accept_prob, greedy, uniforms, threshold=threshold)

    def continuation_rule(self, decoder, draws: list[Draw]) -> tuple[np.ndarray, np.ndarray]:
        """pi(accept | s) and the greedy flag of each waiting row's decision were the upstream
        to decide alone, as it does past the horizon (``continuation``): its most likely token,
        or its own sampling from the candidate set as each row's draw shapes it; a greedy
        draw's rows take the most likely token either way."""
        greedy = np.array([self.continuation == "greedy" or d.greedy for d in draws], dtype=bool)
        if greedy.all():
            return np.ones(len(draws)), greedy
        return np.where(greedy, 1.0, decoder.pending_reference_accept(draws)), greedy

    # ------------------------------------------------------------------ baselines
    def generate_upstream(self, prompts: list[str], sample: bool = False, seed: int = 0) -> list[str]:
        """The upstream model's own answers to ``prompts`` (see ``upstream_answers``), sampled
        as the generator's draw says (``mdp.Draw.upstream_sampling``)."""
        return upstream_answers(self.llm, prompts, self.draw.upstream_sampling(self.sampling), sample=sample,
                                seed=seed, batch_size=self.batch_size)

    def log_likelihood(self, prompts: list[str], responses: list[str], max_tokens: int | None = None) -> np.ndarray:
        """(N,) the upstream's mean log-probability per token of each response, or of its first
        ``max_tokens`` tokens (``mean_log_likelihood``)."""
        return mean_log_likelihood(self.llm, prompts, responses, batch_size=self.batch_size, max_tokens=max_tokens)

    def token_log_probs(self, prompts: list[str], responses: list[str]) -> list[torch.Tensor]:
        """The upstream's log-probability of every token of each response (``answer_token_log_probs``)."""
        return answer_token_log_probs(self.llm, prompts, responses, batch_size=self.batch_size)


@torch.no_grad()
def upstream_answers(llm, prompts: list[str], sampling: SamplingConfig, sample: bool = False, seed: int = 0,
                     batch_size: int = 8, openings: list[str] | None = None) -> list[str]:
    """The upstream model's own answers (greedy, or sampled with the same temperature, top-k
    and top-p), for comparison and for the reward's greedy baseline: through vLLM's batched
    generation for a ``VllmUpstream`` (all prompts in one call; prompt i sampled with
    seed + i), else transformers' ``generate`` in batches of ``batch_size``.

    ``openings``: for each prompt, text the answer must start with (e.g. "I'm sorry"); the
    model continues it, and the answer returned includes it (transformers only).
    """
    if openings is not None and len(openings) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(openings)} openings")
    if isinstance(llm, VllmUpstream):
        if openings is not None:
            raise NotImplementedError("answer openings need the transformers backend")
        return llm.generate_upstream(prompts, sampling, sample=sample, seed=seed)
    openings = openings or [""] * len(prompts)
    texts: list[str] = []
    for start in range(0, len(prompts), batch_size):
        end = start + batch_size
        texts.extend(_hf_generate(llm, prompts[start:end], openings[start:end], sampling, sample, seed + start))
    return texts


def _answer_ids(llm, prompt: str, opening: str) -> tuple[list[int], list[int]]:
    """(prompt token ids in the chat template, token ids of the answer's opening)."""
    opening_ids = llm.tokenizer(opening, add_special_tokens=False)["input_ids"] if opening else []
    return llm.encode_prompt(prompt), [int(i) for i in opening_ids]


def _left_padded(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) of rows left-padded to one width, as decoder-only generation needs."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1
    return ids, mask


def _pad_id(llm) -> int:
    pad = llm.tokenizer.pad_token_id
    return pad if pad is not None else min(llm.eos_token_ids or {0})


def _hf_generate(llm, prompts: list[str], openings: list[str], sampling: SamplingConfig, sample: bool,
                 seed: int) -> list[str]:
    encoded = [_answer_ids(llm, p, o) for p, o in zip(prompts, openings)]
    pad = _pad_id(llm)
    ids, mask = _left_padded([p + o for p, o in encoded], pad)
    s = sampling
    kwargs = dict(do_sample=True, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p) if sample \
        else dict(do_sample=False, temperature=None, top_k=None, top_p=None)
    torch.manual_seed(seed)
    out = llm.model.generate(
        input_ids=ids.to(llm.device), attention_mask=mask.to(llm.device),
        max_new_tokens=s.max_new_tokens, pad_token_id=pad, **kwargs,
    )
    width = ids.shape[1]
    return [llm.decode(opening + _until_eos(row[width:].tolist(), llm.eos_token_ids))
            for (_, opening), row in zip(encoded, out)]


def mean_log_likelihood(llm, prompts: list[str], responses: list[str], batch_size: int = 8,
                        max_tokens: int | None = None) -> np.ndarray:
    """(N,) the upstream model's mean log-probability per token of each response after its
    prompt (in the chat template): how fluent the model finds the answer; over its first
    ``max_tokens`` tokens only when given (e.g. the part an agent decided). An empty response
    scores 0 (transformers backend)."""
    return mean_per_token(answer_token_log_probs(llm, prompts, responses, batch_size), max_tokens)


def mean_per_token(token_log_probs: list[torch.Tensor], max_tokens: int | None = None) -> np.ndarray:
    """(N,) each response's mean over its first ``max_tokens`` token log-probabilities (all
    when None; ``answer_token_log_probs``), 0 for an empty response."""
    return np.array([float(lp[:max_tokens].mean()) if len(lp) else 0.0 for lp in token_log_probs])


# Tokens (rows x padded width) one forward of ``answer_token_log_probs`` may feed: bounds its
# activations whatever the prompts' length; a longer row goes alone.
FLUENCY_TOKENS_PER_FORWARD = 8192


@torch.no_grad()
def answer_token_log_probs(llm, prompts: list[str], responses: list[str], batch_size: int = 8,
                           tokens_per_forward: int = FLUENCY_TOKENS_PER_FORWARD) -> list[torch.Tensor]:
    """The upstream model's log-probability of each token of each response after its prompt
    (in the chat template): one (tokens,) float32 tensor on the CPU per response, empty for an
    empty response (transformers backend). One forward per group of at most ``batch_size``
    rows and ``tokens_per_forward`` tokens, whatever means are taken of it.

    Memory stays bounded whatever the prompts' length: the forward keeps no KV cache, and the
    output head runs only over the positions that predict answer tokens (``logits_to_keep``),
    so the full-vocabulary log-softmax covers answers, not prompts."""
    if isinstance(llm, VllmUpstream):
        raise NotImplementedError("the log-likelihood of answers needs the transformers backend")
    encoded = [_answer_ids(llm, p, r) for p, r in zip(prompts, responses)]
    pad = _pad_id(llm)
    out: list[torch.Tensor] = []
    for group in _forward_groups([len(p) + len(r) for p, r in encoded], batch_size, tokens_per_forward):
        rows = [encoded[i] for i in group]
        ids, mask = _left_padded([p + r for p, r in rows], pad)
        # Position t predicts token t + 1: a row's answer of n tokens is predicted by the n
        # positions before its last one (rows are left-padded, so answers end together).
        keep = max(len(answer) for _, answer in rows) + 1
        logits = llm.model(input_ids=ids.to(llm.device), attention_mask=mask.to(llm.device), use_cache=False,
                           logits_to_keep=keep).logits
        for row, (_, answer) in enumerate(rows):
            predicting = logits[row, keep - 1 - len(answer):keep - 1].float()  # (n, V)
            targets = torch.tensor(answer, dtype=torch.long, device=predicting.device)
            out.append(torch.log_softmax(predicting, dim=-1).gather(-1, targets[:, None])[:, 0].cpu())
    return out


def _forward_groups(lengths: list[int], batch_size: int, tokens_per_forward: int) -> list[list[int]]:
    """Consecutive row indices in groups of at most ``batch_size`` rows whose left-padded
    batch (rows x the longest row) holds at most ``tokens_per_forward`` tokens (a longer row alone)."""
    groups: list[list[int]] = []
    for i, length in enumerate(lengths):
        group = groups[-1] if groups else None
        if group and len(group) < batch_size \
                and (len(group) + 1) * max(length, *(lengths[j] for j in group)) <= tokens_per_forward:
            group.append(i)
        else:
            groups.append([i])
    return groups


def _until_eos(tokens: list[int], eos: set[int]) -> list[int]:
    for i, t in enumerate(tokens):
        if t in eos:
            return tokens[: i + 1]
    return tokens


SENTENCE_END = re.compile(r"[.!?](?=\s)|\n")  # a full stop, ! or ? before a space, or a line break


def decline_end(text: str, sentences: int) -> int | None:
    """Where an answer ends that keeps its first ``sentences`` sentences (a line break ends one
    too); None if it has fewer."""
    ends = [m.end() for m in SENTENCE_END.finditer(text)]
    return ends[sentences - 1] if len(ends) >= sentences else None


def ended_decline(text: str, sentences: int) -> str:
    """``text`` ended with its ``sentences``-th sentence (``decline_end``), whole if it has fewer."""
    end = decline_end(text, sentences)
    return text if end is None else text[:end].rstrip()


def _to_generation(r: DecodeResult) -> Generation:
    return Generation(
        prompt=r.prompt,
        text=r.response,
        finish_reason=r.finish_reason,
        num_tokens=len(r.response_ids),
        num_decisions=r.num_decisions,
        num_fallbacks=r.num_fallbacks,
        forward_tokens=r.forward_tokens,
        forward_steps=sum(r.forward_steps),
        accepted_positions=r.accepted_positions,
    )
