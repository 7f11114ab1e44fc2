"""The vLLM backend (envs/vllm_backend.py) against the transformers backend on the real
SmolLM2-135M, float32 on both sides.

One vLLM engine pair is shared by the whole module (start-up takes about a minute on
CPU); the module is skipped when vLLM is not importable.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs.vllm_backend import vllm_available

_OK, _WHY = vllm_available()
pytestmark = pytest.mark.skipif(not _OK, reason=_WHY)

from envs.decoder import AcceptRejectDecoder  # noqa: E402
from envs.mdp import SamplingConfig, candidate_sets  # noqa: E402

PROMPTS = ["How can I bake bread?", "What is the capital of France?"]
MIN_COSINE = 0.999


@pytest.fixture(scope="module")
def vllm_llm():
    from envs.vllm_backend import VllmEngineConfig, VllmUpstream

    # enforce_eager: no torch.compile, so the engine starts in about a minute on CPU.
    llm = VllmUpstream("smollm2", VllmEngineConfig(enforce_eager=True, max_model_len=1024), device="cpu")
    yield llm
    llm.close()


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)


def test_engine_config_is_validated():
    from envs.vllm_backend import VllmEngineConfig

    with pytest.raises(ValueError, match="dtype"):
        VllmEngineConfig(dtype="int8")
    with pytest.raises(ValueError, match="block_size"):
        VllmEngineConfig(block_size=24)


def test_same_prompt_ids_eos_and_head(vllm_llm, smollm2):
    assert vllm_llm.encode_prompt(PROMPTS[0]) == smollm2.encode_prompt(PROMPTS[0])
    assert vllm_llm.eos_token_ids == smollm2.eos_token_ids
    assert vllm_llm.hidden_size == smollm2.hidden_size == 576
    hidden = torch.randn(3, 576)
    torch.testing.assert_close(vllm_llm.logits(hidden), smollm2.logits(hidden), rtol=1e-5, atol=1e-4)


def test_states_and_candidate_sets_match_transformers(vllm_llm, smollm2):
    sampling = SamplingConfig()
    for prompt in PROMPTS:
        prompt_ids = smollm2.encode_prompt(prompt)
        response = _hf_greedy(smollm2, prompt_ids, 8)
        sequence = prompt_ids + response
        reference = smollm2.full_forward_hidden(sequence)[len(prompt_ids) - 1:]  # (8 + 1, d)
        prefixes = [sequence[:t] for t in range(len(prompt_ids), len(sequence) + 1)]
        states = vllm_llm.last_hidden_states(prefixes)
        assert states.shape == reference.shape
        assert cosine(states, reference).min() >= MIN_COSINE
        ours = candidate_sets(vllm_llm.logits(states), sampling)
        theirs = candidate_sets(smollm2.logits(reference), sampling)
        assert [ids for ids, _ in ours] == [ids for ids, _ in theirs]
        for (_, p), (_, q) in zip(ours, theirs):
            np.testing.assert_allclose(p, q, atol=1e-3)


def _hf_greedy(llm, prompt_ids, n):
    ids = torch.tensor([prompt_ids])
    out = llm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                             temperature=None, top_k=None, top_p=None)
    return out[0, ids.shape[1]:].tolist()


def _token_rule(candidates):
    """A policy that depends only on (token id, candidate index): both backends must then
    take exactly the same path."""
    return np.array([int(token % 3 == 0 or k >= 3) for token, k in candidates], dtype=np.int64)


def _run(decoder, prompts):
    decoder.start(prompts)
    states = []
    while decoder.has_pending():
        states.append(decoder.pending_states().clone())
        decoder.apply(_token_rule(decoder.pending_candidates()))
    return decoder.results()


@pytest.mark.parametrize("mode", ["lazy", "eager"])
def test_decoder_takes_the_transformers_path(vllm_llm, smollm2, mode):
    from envs.vllm_backend import VllmAcceptRejectDecoder

    sampling = SamplingConfig(max_new_tokens=10)
    ours = _run(VllmAcceptRejectDecoder(vllm_llm, sampling, mode=mode), PROMPTS)
    theirs = _run(AcceptRejectDecoder(smollm2, sampling, mode=mode), PROMPTS)
    for a, b in zip(ours, theirs):
        assert a.response_ids == b.response_ids
        assert a.decision_points == b.decision_points
        assert a.accepted_positions == b.accepted_positions
        assert a.finish_reason == b.finish_reason
        assert a.forward_tokens == b.forward_tokens
        assert a.num_decisions > 0
        assert cosine(torch.from_numpy(a.episode.states), torch.from_numpy(b.episode.states)).min() >= MIN_COSINE
        np.testing.assert_allclose(a.episode.kl_penalties, b.episode.kl_penalties, atol=1e-4)


def test_run_episodes_with_an_actor(vllm_llm):
    from envs.vllm_backend import run_episodes
    from mara.networks import Actor

    torch.manual_seed(0)
    results = run_episodes(vllm_llm, Actor(state_dim=576), PROMPTS, SamplingConfig(max_new_tokens=6), greedy=False)
    assert [r.prompt for r in results] == PROMPTS
    for r in results:
        assert 1 <= len(r.response_ids) <= 6
        assert r.episode.states.shape == (r.num_decisions, 576)
    assert vllm_llm.stats.cached_tokens > 0  # prefix caching is doing its job


def test_greedy_baseline_matches_transformers(vllm_llm, smollm2):
    from mara.generation import AlignedGenerator
    from mara.networks import Actor

    sampling = SamplingConfig(max_new_tokens=24)
    theirs = AlignedGenerator(smollm2, Actor(state_dim=576), sampling=sampling).generate_upstream(PROMPTS)
    ours = vllm_llm.generate_upstream(PROMPTS, sampling)
    assert ours == theirs
    assert "Paris" in ours[1]


def test_sampled_baseline_is_seeded(vllm_llm):
    sampling = SamplingConfig(max_new_tokens=8)
    first = vllm_llm.generate_upstream(PROMPTS, sampling, sample=True, seed=3)
    again = vllm_llm.generate_upstream(PROMPTS, sampling, sample=True, seed=3)
    assert first == again and all(first)


def test_aligned_generator_with_the_vllm_backend(vllm_llm):
    import inspect

    from mara.generation import AlignedGenerator
    from mara.networks import Actor

    if "backend" not in inspect.signature(AlignedGenerator).parameters:
        pytest.skip("AlignedGenerator has no backend option yet (the mara/generation.py hook is not applied)")
    torch.manual_seed(0)
    gen = AlignedGenerator(vllm_llm, Actor(state_dim=576), sampling=SamplingConfig(max_new_tokens=6), backend="vllm")
    answers = gen.generate(PROMPTS)
    assert [a.prompt for a in answers] == PROMPTS and all(1 <= a.num_tokens <= 6 for a in answers)
    assert gen.generate_upstream(PROMPTS) == vllm_llm.generate_upstream(PROMPTS, gen.sampling)


@pytest.fixture(scope="module")
def tiny_reward_path(tmp_path_factory, smollm2_path):
    """SmolLM2 with a seeded one-output classification head: a real-architecture reward model."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(smollm2_path), num_labels=1, dtype=torch.float32)
    torch.nn.init.normal_(model.score.weight, std=0.05)
    model.config.pad_token_id = model.config.eos_token_id
    path = tmp_path_factory.mktemp("smollm2-reward")
    model.save_pretrained(str(path))
    AutoTokenizer.from_pretrained(str(smollm2_path)).save_pretrained(str(path))
    return path


def test_vllm_reward_scorer_matches_seq_cls(vllm_llm, tiny_reward_path):
    import mara.rewards.vllm_scorer  # noqa: F401  registers the kind
    from mara.rewards import SCORER_KINDS, ScorerSpec, build_scorer
    from mara.rewards.seq_cls import SeqClsScorer

    assert "vllm-reward" in SCORER_KINDS
    vllm_llm.close()  # one engine at a time: the CPU is small
    prompts = ["How can I bake bread?", "Tell me a joke."]
    responses = ["Mix flour, water, yeast and salt, knead, let it rise, then bake.", "No."]
    reference = SeqClsScorer(str(tiny_reward_path), device="cpu", dtype="float32").score(prompts, responses)
    scorer = build_scorer(ScorerSpec("vllm-reward", path=str(tiny_reward_path),
                                     options={"enforce_eager": True, "max_length": 512}))
    try:
        np.testing.assert_allclose(scorer.score(prompts, responses), reference, rtol=1e-3, atol=1e-3)
    finally:
        scorer.close()
