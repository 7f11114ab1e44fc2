"""Pure MDP functions: candidate sets, Eq. 6 emission probabilities, Eq. 8 KL penalties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers.decoding import emission_probabilities

from core.config import KLConfig, SamplingConfig
from envs.mdp import Draw, candidate_sets, kl_penalty, reference_accept_probability


def test_candidates_are_top_k_then_top_p_sorted_by_probability():
    logits = torch.log(torch.tensor([[0.05, 0.5, 0.3, 0.1, 0.05]]))
    (ids, probs), = candidate_sets(logits, SamplingConfig(temperature=1.0, top_k=4, top_p=0.85))
    # top-4 = [1, 2, 3, 0|4] renormalised over 0.95; cumulative 0.53, 0.84, 0.95 -> three kept
    assert ids == [1, 2, 3]
    assert probs.sum() == pytest.approx(1.0)
    assert list(probs) == sorted(probs, reverse=True)


def test_temperature_sharpens_and_top_p_one_keeps_top_k():
    logits = torch.randn(2, 100, generator=torch.Generator().manual_seed(0))  # not the suite's global RNG
    cold = candidate_sets(logits, SamplingConfig(temperature=0.05, top_k=40, top_p=0.95))
    hot = candidate_sets(logits, SamplingConfig(temperature=5.0, top_k=40, top_p=1.0))
    assert all(len(ids) <= 3 for ids, _ in cold)
    assert all(len(ids) == 40 for ids, _ in hot)


def test_invalid_sampling_settings_are_refused():
    for bad in (dict(temperature=0), dict(top_k=0), dict(top_p=0), dict(max_new_tokens=0)):
        with pytest.raises(ValueError):
            SamplingConfig(**bad)
    with pytest.raises(ValueError, match="estimator"):
        KLConfig(estimator="forward")


def test_eq6_emission_probabilities_sum_to_one():
    rng = np.random.default_rng(0)
    for k in (1, 2, 5, 40):
        accept = rng.random(k)
        probs = emission_probabilities(accept)
        assert probs.sum() == pytest.approx(1.0)
        assert probs[0] == pytest.approx(accept[0] if k > 1 else 1.0)
    np.testing.assert_allclose(emission_probabilities([0.5, 0.5, 0.9]), [0.5, 0.25, 0.25])


def test_reference_accept_chain_reproduces_upstream_probabilities():
    q = np.array([0.5, 0.3, 0.15, 0.05])
    ref_accept = np.array([reference_accept_probability(q, k) for k in range(len(q))])
    np.testing.assert_allclose(emission_probabilities(ref_accept), q)


def test_per_decision_log_ratios_add_up_to_the_token_log_ratio():
    q = np.array([0.6, 0.25, 0.1, 0.05])
    accept = np.array([0.2, 0.7, 0.4, 0.9])
    # token 3 (index 2) emitted: reject, reject, accept
    path = [(0, 0), (1, 0), (2, 1)]
    total = sum(-kl_penalty(accept[k], reference_accept_probability(q, k), a, KLConfig(1.0, "kl"))
                for k, a in path)
    expected = math.log(emission_probabilities(accept)[2]) - math.log(q[2])
    assert total == pytest.approx(expected)


def test_kl_estimators():
    p, q = 0.8, 0.5
    lr = math.log(0.8 / 0.5)
    assert kl_penalty(p, q, 1, KLConfig(0.1, "kl")) == pytest.approx(-0.1 * lr)
    assert kl_penalty(p, q, 0, KLConfig(0.1, "abs")) == pytest.approx(-0.1 * abs(math.log(0.2 / 0.5)))
    assert kl_penalty(p, q, 1, KLConfig(0.1, "mse")) == pytest.approx(-0.1 * 0.5 * lr ** 2)
    full = 0.8 * lr + 0.2 * math.log(0.2 / 0.5)
    assert kl_penalty(p, q, 0, KLConfig(0.1, "full")) == pytest.approx(-0.1 * full)
    assert kl_penalty(q, q, 1, KLConfig(0.1, "full")) == pytest.approx(0.0)


def test_decisions_greedy_sampled_and_mixed_per_row():
    from envs.mdp import decide

    probs = np.array([0.2, 0.5, 0.7, 0.9])
    np.testing.assert_array_equal(decide(probs, True), [0, 1, 1, 1])
    np.testing.assert_array_equal(decide(probs, False, [0.1, 0.6, 0.7, 0.05]), [1, 0, 0, 1])
    np.testing.assert_array_equal(decide(probs, [True, False, True, False], [0.0, 0.6, 0.9, 0.95]), [0, 0, 1, 0])
    # An accept threshold moves greedy decisions only: sampled ones still draw with pi.
    np.testing.assert_array_equal(decide(probs, True, threshold=0.15), [1, 1, 1, 1])
    np.testing.assert_array_equal(decide(probs, True, threshold=0.8), [0, 0, 0, 1])
    np.testing.assert_array_equal(decide(probs, False, [0.1, 0.6, 0.7, 0.05], threshold=0.01), [1, 0, 0, 1])
    with pytest.raises(ValueError, match="uniforms"):
        decide(probs, False)


def test_a_draw_refuses_bad_settings_naming_them_however_it_is_built():
    assert Draw(0.5, 3) == Draw(temperature=0.5, top_k=3)
    for args, kwargs, message in (((-1.0,), {}, "^temperature must be a finite number >= 0"),
                                  ((), {"top_p": 0}, "^top_p must be a finite number > 0 and <= 1"),
                                  ((None, True), {}, "^top_k must be an int >= 1, got True")):
        with pytest.raises(ValueError, match=message):
            Draw(*args, **kwargs)
    with pytest.raises(TypeError, match="takes 3 settings"):
        Draw(1.0, 2, 0.5, 7)


def test_a_draw_reshapes_the_candidate_sets_distribution_within_the_set():
    """A request's temperature / top-k / top-p act within the candidate set the agent judges:
    re-tempered probabilities are the upstream's softmax(logits / T) over the same candidates."""
    logits = torch.tensor([[3.0, 2.0, 1.5, 1.0, -4.0]])
    (ids, probs), = candidate_sets(logits, SamplingConfig(temperature=0.8, top_k=4, top_p=1.0))
    assert ids == [0, 1, 2, 3]
    hot = Draw(temperature=2.0).probabilities(probs, set_temperature=0.8)
    np.testing.assert_allclose(hot, torch.softmax(logits[0, :4] / 2.0, -1).numpy(), rtol=1e-6)
    assert list(Draw().probabilities(probs, 0.8)) == pytest.approx(list(probs))  # nothing given: as it is
    assert np.count_nonzero(Draw(top_k=2).probabilities(probs, 0.8)) == 2
    narrow = Draw(top_p=0.01).probabilities(probs, 0.8)
    assert narrow[0] == 1.0 and narrow[1:].sum() == 0  # the first candidate is always kept
    # pi_ref(accept) of the draw: the last candidate it keeps is accepted for sure
    assert reference_accept_probability(Draw(top_k=2).probabilities(probs, 0.8), 1) == pytest.approx(1.0)


def test_greedy_draws_and_the_upstreams_own_sampling_under_a_draw():
    assert Draw(temperature=0).greedy and Draw(temperature=1e-9).greedy and Draw(top_k=1).greedy
    assert not Draw().greedy and not Draw(temperature=0.7, top_p=0.01).greedy
    candidates = SamplingConfig(temperature=0.8, top_k=40, top_p=0.95, max_new_tokens=7)
    assert Draw(temperature=0).upstream_sampling(candidates) == SamplingConfig(1.0, 1, 1.0, 7)
    assert Draw(top_p=0.5).upstream_sampling(candidates) == SamplingConfig(0.8, 40, 0.5, 7)
    assert Draw(temperature=0.3).over(Draw(temperature=1.0, top_k=5)) == Draw(0.3, 5, None)
    with pytest.raises(ValueError, match="temperature"):
        Draw(temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        Draw(top_p=0)
