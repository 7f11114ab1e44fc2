"""The accept/reject engine (envs/decoder.py) against plain decoding and full forwards."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from helpers.decoding import (
    PROMPTS,
    always_accept,
    always_reject,
    assert_same_episodes,
    assert_states_are_full_forwards,
    candidate_states,
    coin,
    emission_probabilities,
    hf_greedy,
    run,
    run_scripted,
)

from core.config import SamplingConfig
from core.contracts import ACCEPT, REJECT
from core.networks import Actor
from envs.decoder import MODES, AcceptRejectDecoder, NonFiniteStateError, resolve_mode
from envs.mdp import candidate_sets


@pytest.mark.parametrize("mode", MODES)
def test_always_accept_reproduces_greedy_decoding(tiny_llm, mode):
    results = run(tiny_llm, PROMPTS, always_accept, mode, max_new_tokens=16)
    for prompt, result in zip(PROMPTS, results):
        assert result.response_ids == hf_greedy(tiny_llm, prompt, 16)
        assert result.finish_reason == ("eos" if len(result.response_ids) < 16 else "length")
        assert all(k == 1 for k in result.accepted_positions)


def test_always_accept_reproduces_greedy_decoding_smollm2(smollm2):
    prompts = ["How can I bake bread?", "What is the capital of France?"]
    results = run(smollm2, prompts, always_accept, "lazy", max_new_tokens=24)
    for prompt, result in zip(prompts, results):
        assert result.response_ids == hf_greedy(smollm2, prompt, 24)
    assert "Paris" in results[1].response


@pytest.mark.parametrize("mode", MODES)
def test_always_reject_picks_the_last_candidate(tiny_llm, mode):
    sampling = SamplingConfig(max_new_tokens=10, top_k=5)
    (result,) = run(tiny_llm, PROMPTS[:1], always_reject, mode, sampling=sampling)
    prefix = tiny_llm.encode_prompt(PROMPTS[0])
    for i, token in enumerate(result.response_ids):
        hidden = tiny_llm.full_forward_hidden(prefix + result.response_ids[:i])[-1]
        (candidates, _), = candidate_sets(tiny_llm.logits(hidden)[None], sampling)
        assert token == candidates[-1]
    assert result.num_fallbacks == sum(1 for k in result.accepted_positions if k > 1)


def llm_with_early_eos(llm, mode):
    """The same model with one of its frequent tokens declared EOS, so that rows of a
    batch finish at different steps and the decoder drops them from the KV cache."""
    (first, *_) = run(llm, PROMPTS, coin, mode, max_new_tokens=10)
    early = copy.copy(llm)
    early.eos_token_ids = set(llm.eos_token_ids) | {first.response_ids[3]}
    return early


@pytest.mark.parametrize("early_eos", [False, True], ids=["same-length", "rows-end-apart"])
@pytest.mark.parametrize("mode", MODES)
def test_candidate_states_equal_a_full_forward(tiny_llm, mode, early_eos):
    llm = llm_with_early_eos(tiny_llm, mode) if early_eos else tiny_llm
    results = run(llm, PROMPTS, coin, mode, max_new_tokens=10)
    if early_eos:
        assert {r.finish_reason for r in results} == {"eos", "length"}
    assert_states_are_full_forwards(tiny_llm, results, with_prompt=False)


@pytest.mark.parametrize("mode", MODES)
def test_prompt_state_features_follow_each_candidate_state(tiny_llm, mode):
    """"candidate+prompt" states: the candidate's state, then the prompt's last hidden state,
    for rows that start together and rows that join as others end (continuous batching)."""
    results = run(tiny_llm, PROMPTS, coin, mode, max_new_tokens=10, state_features="candidate+prompt", max_rows=2)
    assert all(r.episode.states.shape[1] == 2 * tiny_llm.hidden_size for r in results)
    assert_states_are_full_forwards(tiny_llm, results, with_prompt=True)


def test_rank_and_log_probability_features_follow_the_hidden_states(tiny_llm):
    """Every part of the layout: the candidate's state, the prompt's, then the candidate's rank
    in its set and its log-probabilities there (core/state_features.py)."""
    sampling = SamplingConfig(max_new_tokens=10)
    results = run(tiny_llm, PROMPTS, coin, "hybrid", sampling=sampling, state_features="candidate+prompt+rank+logp",
                  max_rows=2)
    assert all(r.episode.states.shape[1] == 2 * tiny_llm.hidden_size + 4 for r in results)
    assert {k for r in results for _, k, _ in r.decision_points} > {0}  # first and later candidates
    assert_states_are_full_forwards(tiny_llm, results, with_prompt=True, sampling=sampling)


def test_eager_states_of_every_candidate_equal_a_full_forward(tiny_llm):
    sampling = SamplingConfig(max_new_tokens=8, top_k=6)
    decoder = AcceptRejectDecoder(tiny_llm, sampling, mode="eager")
    decoder.start(PROMPTS)
    decoder.apply([REJECT] * len(decoder.pending_rows()))
    decoder.apply([ACCEPT] * len(decoder.pending_rows()))
    for i in decoder.pending_rows():
        row = decoder.rows[i]
        states = candidate_states(decoder, i)
        for k, token in enumerate(row.cand_ids):
            full = tiny_llm.full_forward_hidden(row.prompt_ids + row.response_ids + [token])[-1]
            torch.testing.assert_close(states[k], full, atol=1e-4, rtol=0)


def test_emitted_candidates_follow_eq6(tiny_llm):
    """Driven by pi(accept | s) with stochastic actions, the decoder's first-accept-wins
    chain emits candidate k with the Eq. 6 probability of that position's candidates."""
    sampling = SamplingConfig(temperature=1.0, top_k=4, top_p=1.0, max_new_tokens=1)
    torch.manual_seed(0)
    actor = Actor(state_dim=tiny_llm.hidden_size, hidden_size=16)
    probe = AcceptRejectDecoder(tiny_llm, sampling, mode="eager")
    probe.start(PROMPTS[:1])
    accept = actor.accept_probability(candidate_states(probe, 0)).double().numpy()
    expected = emission_probabilities(accept)  # Eq. 6 over the position's 4 candidates
    assert len(expected) == 4 and expected.sum() == pytest.approx(1.0)

    n = 600
    decoder = AcceptRejectDecoder(tiny_llm, sampling, mode="lazy")
    decoder.start(PROMPTS[:1] * n)  # n independent draws of the same first position
    rng = np.random.default_rng(0)
    while decoder.has_pending():
        p = actor.accept_probability(decoder.pending_states()).double().numpy()
        decoder.apply((rng.random(len(p)) < p).astype(np.int64), p)
    emitted = [r.accepted_positions[0] - 1 for r in decoder.results()]
    observed = np.bincount(emitted, minlength=4) / n
    sigma = np.sqrt(expected * (1 - expected) / n)
    assert np.all(np.abs(observed - expected) <= 4 * sigma + 1e-3), (observed, expected)


def test_non_finite_states_are_refused_clearly(tiny_llm, monkeypatch):
    forward = tiny_llm.forward
    monkeypatch.setattr(tiny_llm, "forward", lambda *args: forward(*args) * float("nan"))
    decoder = AcceptRejectDecoder(tiny_llm, SamplingConfig(max_new_tokens=4))
    with pytest.raises(NonFiniteStateError, match="non-finite hidden states.*float32"):
        decoder.start(PROMPTS[:1])


def test_transitions_follow_the_next_state_rule_on_a_scripted_policy(tiny_llm):
    script = [REJECT, REJECT, ACCEPT, REJECT, ACCEPT, ACCEPT, REJECT]
    sampling = SamplingConfig(max_new_tokens=6, top_k=8)
    decoder = AcceptRejectDecoder(tiny_llm, sampling, mode="lazy")
    decoder.start(PROMPTS[:1])
    n = 0
    while decoder.has_pending():
        decoder.apply([script[n % len(script)]])
        n += 1
    (result,) = decoder.results()
    ep = result.episode
    d = tiny_llm.hidden_size
    assert ep.states.shape == (n, d) and ep.actions.shape == (n,) and ep.rewards.shape == (n,)
    assert list(ep.actions) == [script[i % len(script)] for i in range(n)]
    assert list(ep.dones) == [False] * (n - 1) + [True]
    np.testing.assert_array_equal(ep.next_states[:-1], ep.states[1:])
    assert not ep.next_states[-1].any()
    # Eq. 5 on the recorded decision points
    points = result.decision_points
    for (pos, k, _), (next_pos, next_k, _), action in zip(points, points[1:], ep.actions):
        if action == ACCEPT:
            assert next_pos > pos and next_k == 0
        elif next_pos == pos:
            assert next_k == k + 1
        else:  # the rejected candidate was the second to last: the last was accepted
            assert next_pos > pos and next_k == 0
    assert result.num_decisions == n
    assert np.all(ep.kl_penalties <= 0)


def test_lazy_mode_feeds_fewer_tokens_than_eager(tiny_llm):
    lazy = run(tiny_llm, PROMPTS, always_accept, "lazy")
    eager = run(tiny_llm, PROMPTS, always_accept, "eager")
    assert [r.response_ids for r in lazy] == [r.response_ids for r in eager]
    assert sum(r.forward_tokens for r in lazy) == sum(len(r.response_ids) for r in lazy)
    assert sum(r.forward_tokens for r in eager) > sum(r.forward_tokens for r in lazy)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("max_rows", [1, 2, 4])
def test_continuous_batching_gives_each_prompt_its_episode_alone(tiny_llm, mode, max_rows):
    """Rows of mixed lengths leave the batch and waiting prompts join it between positions;
    every prompt gets a complete episode equal to decoding it alone."""
    prompts = PROMPTS + ["Name a color.", "Count to three.", "What is two plus two?"]
    sampling = SamplingConfig(max_new_tokens=10, top_k=6)
    decisions = [0, 1, 1, 0, 0, 1]
    # One of the first answer's tokens declared EOS, so that answers end at different steps.
    (first, *_) = run_scripted(tiny_llm, prompts, decisions, mode, sampling)
    llm = copy.copy(tiny_llm)
    llm.eos_token_ids = set(tiny_llm.eos_token_ids) | {first.response_ids[3]}
    batched = run_scripted(llm, prompts, decisions, mode, sampling, max_rows=max_rows)
    assert len({len(r.response_ids) for r in batched}) > 1  # the rows really ended apart
    for i, (prompt, result) in enumerate(zip(prompts, batched)):
        (alone,) = run_scripted(llm, [prompt], decisions, mode, sampling, offsets=[i])
        assert_same_episodes(alone, result, f"prompt {i}")


def test_continuous_batching_keeps_at_most_max_rows_in_the_cache(tiny_llm, monkeypatch):
    widths = []
    forward = tiny_llm.forward

    def recording(ids, *args):
        widths.append(ids.shape[0])
        return forward(ids, *args)

    monkeypatch.setattr(tiny_llm, "forward", recording)
    prompts = PROMPTS * 3
    results = run(tiny_llm, prompts, coin, "hybrid", max_new_tokens=6)
    assert max(widths) == len(prompts)
    widths.clear()
    decoder = AcceptRejectDecoder(tiny_llm, SamplingConfig(max_new_tokens=6), mode="hybrid")
    decoder.start(prompts, max_rows=4)
    while decoder.has_pending():
        decoder.apply(np.ones(len(decoder.pending_rows()), dtype=np.int64))
    assert len(decoder.results()) == len(prompts) == len(results)
    assert max(widths) == 4 and all(r.finish_reason for r in decoder.results())
    with pytest.raises(ValueError, match="max_rows"):
        decoder.start(prompts, max_rows=0)


@pytest.mark.parametrize("decisions", [[1], [0], [0, 1], [0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 1]],
                         ids=["accept", "reject", "alternate", "mixed", "mostly-reject"])
def test_every_mode_gives_identical_episodes_for_the_same_decisions(tiny_llm, decisions):
    """Whether rows of different widths share one padded forward or get forwards of their own."""
    sampling = SamplingConfig(max_new_tokens=10, top_k=6)
    runs = {(mode, ragged): run_scripted(tiny_llm, PROMPTS, decisions, mode, sampling, ragged=ragged)
            for mode in MODES for ragged in (False, True)}
    for label, results in runs.items():
        for a, b in zip(runs["lazy", False], results):
            assert_same_episodes(a, b, str(label))


@pytest.mark.parametrize("mode", ["hybrid", "eager"])
def test_rows_of_different_widths_feed_less_padding_in_forwards_of_their_own(tiny_llm, monkeypatch, mode):
    """On a CPU (the default there) a step's rows are grouped by the tokens they feed: the same
    episodes, with less padding fed, and each row still fed once per step."""
    widths = []
    forward = tiny_llm.forward

    def recording(ids, *args):
        widths.append(tuple(ids.shape))
        return forward(ids, *args)

    monkeypatch.setattr(tiny_llm, "forward", recording)
    prompts = PROMPTS * 3
    sampling = SamplingConfig(max_new_tokens=8, top_k=30, temperature=0.3)  # candidate sets of many sizes
    fed = {}
    for ragged in (False, True):
        decoder = AcceptRejectDecoder(tiny_llm, sampling, mode=mode, ragged=ragged)
        assert AcceptRejectDecoder(tiny_llm, sampling, mode=mode).ragged  # the tiny model runs on a CPU
        decoder.start(prompts)
        rng = np.random.default_rng(0)
        widths.clear()
        while decoder.has_pending():
            decoder.apply(coin(rng, len(decoder.pending_rows())))
        results = decoder.results()
        fed[ragged] = (decoder.fed_tokens, decoder.forwards, results, list(widths))
    padded, grouped = fed[False], fed[True]
    for a, b in zip(padded[2], grouped[2]):
        assert_same_episodes(a, b)
    assert grouped[0] < padded[0]  # fewer tokens fed, padding included
    assert grouped[1] > padded[1]  # in more, narrower forwards
    assert sum(r.forward_tokens for r in grouped[2]) == sum(r.forward_tokens for r in padded[2])
    assert sorted(sum(r.forward_steps) for r in grouped[2]) == sorted(sum(r.forward_steps) for r in padded[2])
    assert max(rows for rows, _ in grouped[3][1:]) <= len(prompts)


@pytest.mark.parametrize("policy", [always_accept, always_reject, coin], ids=["accept", "reject", "coin"])
def test_hybrid_mode_runs_at_most_two_forward_steps_per_position(tiny_llm, policy):
    sampling = SamplingConfig(max_new_tokens=12, top_k=8)
    results = {mode: run(tiny_llm, PROMPTS, policy, mode, sampling=sampling) for mode in MODES}
    for hybrid, lazy in zip(results["hybrid"], results["lazy"]):
        assert len(hybrid.forward_steps) == len(hybrid.response_ids)  # every position counted
        assert max(hybrid.forward_steps) <= 2
        # one step where the first candidate was accepted (or was the only one), two otherwise
        rejected_at = {pos for pos, k, _ in hybrid.decision_points if k > 0}
        assert [2 if pos in rejected_at else 1 for pos in range(len(hybrid.response_ids))] == hybrid.forward_steps
    if policy is always_reject:  # lazy pays one step per rejection
        assert max(max(r.forward_steps) for r in results["lazy"]) > 2
        assert all(max(r.forward_steps) == 1 for r in results["eager"])


def test_auto_mode_is_hybrid_on_a_gpu_and_lazy_on_a_cpu(tiny_llm):
    """model.mode's default: on a GPU a tree of candidates costs about one token's forward, on a
    CPU every token fed costs compute (the README's rollout-speed table)."""
    assert resolve_mode("auto", torch.device("cuda", 0)) == "hybrid"
    assert resolve_mode("auto", torch.device("cpu")) == "lazy"
    assert [resolve_mode(m, torch.device("cpu")) for m in MODES] == list(MODES)
    with pytest.raises(ValueError, match="mode must be one of"):
        resolve_mode("fast", torch.device("cpu"))
    from envs.generation import AlignedGenerator
    assert AlignedGenerator(tiny_llm, Actor(state_dim=tiny_llm.hidden_size), mode="auto").mode == "lazy"


@pytest.mark.parametrize("mode", MODES)
def test_rows_advance_in_lockstep_one_forward_per_position(tiny_llm, monkeypatch, mode):
    """Rows that need no decision at a position wait for the others, so a batch costs one
    LLM forward and one output-head call per output position, as plain decoding does."""
    calls = {"forward": 0, "logits": 0}
    for name in calls:
        method = getattr(tiny_llm, name)

        def counted(*args, _method=method, _name=name):
            calls[_name] += 1
            return _method(*args)

        monkeypatch.setattr(tiny_llm, name, counted)
    sampling = SamplingConfig(max_new_tokens=12, temperature=0.3)  # many single-candidate positions
    results = run(tiny_llm, PROMPTS, always_accept, mode, sampling=sampling, ragged=False)
    longest = max(len(r.response_ids) for r in results)
    # Both kinds of position occurred: with a decision, and with a single candidate.
    assert 0 < sum(len(r.accepted_positions) for r in results) < sum(len(r.response_ids) for r in results)
    assert calls == {"forward": 1 + longest, "logits": longest}  # prefill, then one per position


def test_bad_prompts_are_refused_with_clear_errors(tiny_llm):
    decoder = AcceptRejectDecoder(tiny_llm, SamplingConfig(max_new_tokens=4))
    with pytest.raises(ValueError, match="empty prompt"):
        decoder.start(["fine", "   "])
    with pytest.raises(ValueError, match="context"):
        decoder.start(["word " * 400])
    with pytest.raises(ValueError, match="no prompts"):
        decoder.start([])
    with pytest.raises(ValueError, match="mode"):
        AcceptRejectDecoder(tiny_llm, mode="greedy")


def test_apply_checks_the_number_of_actions(tiny_llm):
    decoder = AcceptRejectDecoder(tiny_llm, SamplingConfig(max_new_tokens=4))
    decoder.start(PROMPTS[:2])
    with pytest.raises(ValueError, match="waiting"):
        decoder.apply([ACCEPT] * 5)
