"""The model families users bring: tiny random checkpoints of Llama, Qwen2, Qwen3, Mistral,
Gemma 2, Gemma 3 and Phi-3 (SmolLM2's tokenizer, two layers) through the accept/reject
decoder. In every decoding mode an always-accept agent reproduces transformers' greedy
decoding token for token, and lazy, eager and hybrid give the same candidate states for the
same decisions (each of which equals a full forward of its prefix)."""

from __future__ import annotations

import pytest
import torch

from helpers.decoding import (
    PROMPTS,
    always_accept,
    assert_same_episodes,
    assert_states_are_full_forwards,
    hf_greedy,
    run,
    run_scripted,
)

from core.config import SamplingConfig
from envs.decoder import MODES

COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True)
# family -> (config class, its extra settings); head_dim where the family sets it on its own
FAMILIES = {
    "llama": ("LlamaConfig", {"initializer_range": 0.3}),
    "qwen2": ("Qwen2Config", {"initializer_range": 0.3}),
    "qwen3": ("Qwen3Config", {"initializer_range": 0.3, "head_dim": 16}),
    "mistral": ("MistralConfig", {"initializer_range": 0.3, "sliding_window": 4096}),
    "gemma2": ("Gemma2Config", {"initializer_range": 0.3, "head_dim": 16, "sliding_window": 4096}),
    "gemma3": ("Gemma3TextConfig", {"initializer_range": 0.3, "head_dim": 16, "sliding_window": 4096}),
    "phi3": ("Phi3Config", {"initializer_range": 0.3, "pad_token_id": 0}),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_llm(request, tmp_path_factory, smollm2_path):
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from envs.upstream import load_upstream

    config_class, extra = FAMILIES[request.param]
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_path))
    config = getattr(transformers, config_class)(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                                 eos_token_id=tokenizer.eos_token_id, **{**COMMON, **extra})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    path = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return load_upstream(str(path), device="cpu")


@pytest.mark.parametrize("mode", MODES)
def test_an_always_accept_agent_reproduces_greedy_decoding(family_llm, mode):
    for prompt, result in zip(PROMPTS, run(family_llm, PROMPTS, always_accept, mode, max_new_tokens=10)):
        assert result.response_ids == hf_greedy(family_llm, prompt, 10), (family_llm.model_id, mode)


def test_every_mode_computes_the_same_candidate_states(family_llm):
    sampling = SamplingConfig(max_new_tokens=8, top_k=6, top_p=1.0)  # six candidates at every position
    runs = {mode: run_scripted(family_llm, PROMPTS, [0, 0, 1, 0, 1], mode, sampling) for mode in MODES}
    for mode, results in runs.items():
        for a, b in zip(runs["lazy"], results):
            assert_same_episodes(a, b, mode)
    assert_states_are_full_forwards(family_llm, runs["hybrid"], with_prompt=False)
