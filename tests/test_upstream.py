"""The upstream LLM backend (envs/upstream.py): prompt formatting, dtypes, the GGUF path."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from core.config import SamplingConfig
from envs.decoder import AcceptRejectDecoder
from core.model_files import embedded_gguf_path, resolve_model
from envs.upstream import UpstreamLLM, cpu_computes_bf16_natively, load_upstream, resolve_dtype

PROMPT = "How can I bake bread?"


def test_prompts_go_through_the_tokenizers_chat_template(tiny_llm):
    ids = tiny_llm.encode_prompt(PROMPT)
    expected = tiny_llm.tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=False)
    assert tiny_llm.tokenizer.decode(ids) == expected
    assert "<|im_start|>user" in expected and expected.rstrip().endswith("assistant")


def test_tokenizers_without_a_chat_template_get_plain_text(tiny_llm):
    tokenizer = copy.deepcopy(tiny_llm.tokenizer)
    tokenizer.chat_template = None
    plain = UpstreamLLM(tiny_llm.model, tokenizer, model_id="plain")
    assert plain.encode_prompt(PROMPT) == tokenizer(PROMPT, add_special_tokens=True)["input_ids"]


def test_half_precision_models_give_float32_states_close_to_float32(tiny_llm, tiny_llm_path):
    half = load_upstream(str(tiny_llm_path), dtype="bfloat16", device="cpu")
    assert half.dtype == torch.bfloat16
    states = {}
    for name, llm in (("fp32", tiny_llm), ("bf16", half)):
        decoder = AcceptRejectDecoder(llm, SamplingConfig(max_new_tokens=2), mode="lazy")
        decoder.start([PROMPT])
        states[name] = decoder.pending_states()
    assert states["bf16"].dtype == torch.float32
    # bfloat16 keeps ~3 significant digits: the same direction, not the same bits.
    assert torch.nn.functional.cosine_similarity(states["bf16"], states["fp32"]).min() > 0.99


def test_auto_dtype_is_bfloat16_where_the_hardware_computes_it(tiny_llm_path, monkeypatch):
    """dtype "auto" (model.dtype's default): bfloat16 on a CPU with native bfloat16 products
    (AVX-512 BF16, AMX), float32 on other CPUs; a named dtype is kept."""
    assert resolve_dtype("float16", "cpu") == "float16"
    native = cpu_computes_bf16_natively()
    assert resolve_dtype("auto", "cpu") == ("bfloat16" if native else "float32")
    assert load_upstream(str(tiny_llm_path), dtype="auto", device="cpu").dtype == (
        torch.bfloat16 if native else torch.float32)
    import envs.upstream as upstream
    for flags, expected in (("fpu sse avx512f avx512_bf16", "bfloat16"), ("fpu amx_bf16 amx_tile", "bfloat16"),
                            ("fpu sse avx2 avx512f", "float32")):
        cpuinfo = f"processor\t: 0\nflags\t\t: {flags}\n"
        monkeypatch.setattr(upstream.Path, "read_text", lambda self, text=cpuinfo: text)
        assert resolve_dtype("auto", "cpu") == expected, flags
    with pytest.raises(ValueError, match="dtype must be one of"):
        resolve_dtype("int8", "cpu")


def test_bad_backend_settings_are_refused(tiny_llm_path, tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        load_upstream(str(tiny_llm_path), dtype="int8")
    with pytest.raises(ValueError, match="4-D masks"):
        load_upstream(str(tiny_llm_path), attn_implementation="flash_attention_2")
    with pytest.raises(FileNotFoundError, match="GGUF file not found"):
        resolve_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        resolve_model(str(tmp_path / "missing-model"))


# GGUF tensor -> the transformers name it has in the converted checkpoint: one of each
# quantization the file holds (Q8_0, Q4_1, F32), first and last layers.
GGUF_SAMPLE = {"token_embd.weight": "model.embed_tokens.weight",
               "blk.0.ffn_down.weight": "model.layers.0.mlp.down_proj.weight",
               "blk.29.attn_v.weight": "model.layers.29.self_attn.v_proj.weight",
               "blk.3.attn_norm.weight": "model.layers.3.input_layernorm.weight",
               "output_norm.weight": "model.norm.weight"}


def test_the_cached_conversion_holds_the_gguf_files_weights(smollm2_path):
    """The embedded SmolLM2 is a GGUF file that transformers' GGUF reader converts once
    (scripts/install.sh, else the first load) to the safetensors checkpoint every load reads:
    its weights are the file's, dequantized, bit for bit."""
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors import safe_open

    gguf = embedded_gguf_path()
    # A .gguf model name is read by transformers' GGUF reader from its folder, as the conversion did.
    assert resolve_model(str(gguf)) == (str(gguf.parent), str(gguf), {"gguf_file": gguf.name})
    tensors = {t.name: t for t in GGUFReader(str(gguf)).tensors}
    with safe_open(str(smollm2_path / "model.safetensors"), "pt") as converted:
        for name, converted_name in GGUF_SAMPLE.items():
            expected = converted.get_tensor(converted_name).numpy()
            dequantized = dequantize(tensors[name].data, tensors[name].tensor_type).reshape(expected.shape)
            np.testing.assert_array_equal(dequantized, expected, err_msg=name)


def test_the_hidden_size_is_read_from_a_checkpoints_config_without_transformers(tiny_llm_path, smollm2_path):
    """launch.py sizes the agent before any worker starts: from a checkpoint folder's
    config.json, the value transformers' config gives, without importing transformers there."""
    import subprocess
    import sys

    from envs.upstream import model_config, model_hidden_size

    for model in (str(tiny_llm_path), "smollm2"):
        assert model_hidden_size(model) == model_config(model).hidden_size
    check = ("import sys; from envs.upstream import model_hidden_size; "
             "print(model_hidden_size('smollm2'), 'transformers' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", check], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.stdout.split() == ["576", "False"], proc.stderr[-2000:]
