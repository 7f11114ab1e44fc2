"""Accept/reject episodes for tests: scripted policies and decisions, transformers' own greedy
decoding to compare with, and checks that states are full forwards and episodes equal."""

from __future__ import annotations

import numpy as np
import torch

from core.config import SamplingConfig
from envs.decoder import AcceptRejectDecoder
from envs.mdp import candidate_sets

PROMPTS = ["How can I bake bread?", "Tell me a joke.", "Why is the sky blue? Answer briefly please."]


def run(llm, prompts, policy, mode, max_new_tokens=12, sampling=None, ragged=None, state_features="candidate",
        max_rows=None):
    """Run episodes where ``policy(rng, n) -> actions`` decides."""
    sampling = sampling or SamplingConfig(max_new_tokens=max_new_tokens)
    decoder = AcceptRejectDecoder(llm, sampling, mode=mode, ragged=ragged, state_features=state_features)
    decoder.start(prompts, max_rows=max_rows)
    rng = np.random.default_rng(0)
    while decoder.has_pending():
        decoder.apply(policy(rng, len(decoder.pending_rows())))
    return decoder.results()


def emission_probabilities(accept_probs) -> np.ndarray:
    """Eq. 6, the oracle the decoder is checked against: pi(y_i = t^k) = pi(accept | t^k) *
    prod_{k' < k} pi(reject | t^k'). The last candidate is accepted whenever it is reached (the
    fallback rule), so its own accept probability is taken as 1 and the result sums to 1."""
    accept = np.asarray(accept_probs, dtype=np.float64).copy()
    accept[-1] = 1.0
    reach = np.concatenate([[1.0], np.cumprod(1.0 - accept[:-1])])
    return reach * accept


def pending_candidates(decoder) -> list[tuple[int, int]]:
    """(token id, 1-based candidate index) of each waiting row's current candidate."""
    return [(decoder.rows[i].cand_ids[decoder.rows[i].k], decoder.rows[i].k + 1) for i in decoder.pending_rows()]


def candidate_states(decoder, row: int) -> torch.Tensor:
    """(K, state_dim) states of all candidates of a row's current position (eager mode only)."""
    r = decoder.rows[row]
    assert decoder.mode == "eager" and len(r.cand_hidden) == len(r.cand_ids), "eager mode keeps every candidate"
    return torch.stack([decoder._state(r, k) for k in range(len(r.cand_ids))]).float()


def always_accept(rng, n):
    return np.ones(n, dtype=np.int64)


def always_reject(rng, n):
    return np.zeros(n, dtype=np.int64)


def coin(rng, n):
    return rng.integers(0, 2, n)


def hf_greedy(llm, prompt, max_new_tokens):
    """transformers' own greedy decoding, cut after the first EOS (as the decoder stops there)."""
    ids = torch.tensor([llm.encode_prompt(prompt)], device=llm.device)
    out = llm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, temperature=None, top_k=None, top_p=None)
    tokens = out[0, ids.shape[1]:].tolist()
    ends = [i for i, t in enumerate(tokens) if t in llm.eos_token_ids]
    return tokens[: ends[0] + 1] if ends else tokens


def assert_states_are_full_forwards(llm, results, with_prompt: bool, sampling=None) -> None:
    """Each recorded state is the candidate's hidden state from a plain forward of the whole
    sequence, then (``with_prompt``) the prompt's last hidden state, then (``sampling``: the
    run's candidate sets, for layouts with "rank" and "logp") the candidate's rank and
    log-probabilities within its set (core/state_features.py)."""
    d, checked = llm.hidden_size, 0
    for result in results:
        prefix = llm.encode_prompt(result.prompt)
        prompt_state = llm.full_forward_hidden(prefix)[-1].numpy()
        for t, (position, k, token) in enumerate(result.decision_points):
            state = result.episode.states[t]
            full = llm.full_forward_hidden(prefix + result.response_ids[:position] + [token])[-1]
            np.testing.assert_allclose(state[:d], full.numpy(), atol=1e-4, rtol=0)
            if with_prompt:
                np.testing.assert_allclose(state[d:2 * d], prompt_state, atol=1e-4, rtol=0)
            if sampling is not None:
                before = llm.full_forward_hidden(prefix + result.response_ids[:position])[-1:]
                ids, probs = candidate_sets(llm.logits(before), sampling)[0]
                assert ids[k] == token
                expected = [float(k == 0), 1 / (k + 1), np.log(probs[k]), np.log(probs[k] / probs[k:].sum())]
                # the log-probabilities come from the decoder's batched float32 logits: as close to a
                # full forward's as the hidden states are (a few 1e-5 nats apart)
                np.testing.assert_allclose(state[-4:], expected, atol=1e-4, rtol=0)
            checked += 1
    assert checked > 10


def run_scripted(llm, prompts, decisions, mode, sampling, max_rows=None, offsets=None, ragged=None):
    """Episodes where row i's j-th decision is ``decisions[(offsets[i] + j) % len(decisions)]``
    (offsets[i] = i by default): the same decisions per row in every mode and batching,
    whichever rows are waiting at each call."""
    offsets = offsets if offsets is not None else list(range(len(prompts)))
    decoder = AcceptRejectDecoder(llm, sampling, mode=mode, ragged=ragged)
    decoder.start(prompts, max_rows=max_rows)
    made = [0] * len(prompts)
    while decoder.has_pending():
        rows = decoder.pending_rows()
        decoder.apply([decisions[(offsets[i] + made[i]) % len(decisions)] for i in rows])
        for i in rows:
            made[i] += 1
    return decoder.results()


def assert_same_episodes(a, b, label=""):
    assert a.prompt == b.prompt and a.response_ids == b.response_ids, label
    assert a.decision_points == b.decision_points and a.finish_reason == b.finish_reason, label
    np.testing.assert_array_equal(a.episode.actions, b.episode.actions)
    np.testing.assert_allclose(a.episode.kl_penalties, b.episode.kl_penalties, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(a.episode.states, b.episode.states, atol=1e-4, rtol=0)
