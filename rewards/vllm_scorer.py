"""``vllm-reward``: a one-output sequence-classification reward model served by vLLM's
pooling runner (``classify`` task, raw logit, no activation).

Takes the same checkpoints as ``seq-cls`` when vLLM supports their architecture
(``*ForSequenceClassification`` of a causal LM: Llama, Qwen2, Mistral, Gemma, ...; e.g.
Skywork-Reward). The pair is written exactly as ``seq-cls`` writes it: the tokenizer's
chat template (a user and an assistant message) when it has one, else
``"{prompt}\\n\\n{response}"``; the scorer tokenizes and sends token ids, so both backends
score the same tokens. Not for safe-rlhf / beaver ``score-model`` checkpoints (their
``LlamaForScore`` architecture is not one vLLM knows).

Registered as the scorer kind ``vllm-reward`` in ``rewards/__init__.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from rewards.seq_cls import SeqClsScorer


class VllmRewardScorer:
    """Batched reward scoring in one vLLM engine (built at construction)."""

    def __init__(self, path: str, dtype: str = "auto", max_length: int = 2048, use_chat_template: bool = True,
                 gpu_memory_utilization: float = 0.2, kv_cache_memory_bytes: int | None = None,
                 enforce_eager: bool = False, name: str | None = None) -> None:
        from transformers import AutoTokenizer
        from vllm import LLM

        from core.config import VllmEngineConfig
        from rewards._common import local_or_hub

        folder = local_or_hub(path, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"])
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.use_chat_template = use_chat_template and bool(getattr(self.tokenizer, "chat_template", None))
        self.max_length = max_length
        if dtype == "auto":
            import torch

            dtype = "bfloat16" if torch.cuda.is_available() else "float32"
        engine = VllmEngineConfig(max_model_len=max_length, gpu_memory_utilization=gpu_memory_utilization,
                                  kv_cache_memory_bytes=kv_cache_memory_bytes, enforce_eager=enforce_eager)
        self.engine = LLM(model=str(folder), runner="pooling", dtype=dtype, **engine.engine_kwargs())
        if "classify" not in self.engine.supported_tasks:
            raise ValueError(f"{path}: vLLM serves it with tasks {self.engine.supported_tasks}, not 'classify'")
        self.name = name or f"vllm-reward:{Path(path).name or path}"

    format = SeqClsScorer.format  # the pair exactly as seq-cls writes it (uses tokenizer, use_chat_template)

    def token_ids(self, prompt: str, response: str) -> list[int]:
        # A chat template already contains the special tokens. Too long a pair is cut at
        # the end, as seq-cls's tokenizer truncation does.
        ids = self.tokenizer(self.format(prompt, response), add_special_tokens=not self.use_chat_template)["input_ids"]
        return ids[: self.max_length]

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        from vllm.pooling_params import PoolingParams

        requests = [{"prompt_token_ids": self.token_ids(p, r)} for p, r in zip(prompts, responses)]
        if not requests:
            return np.zeros(0, dtype=np.float64)
        outputs = self.engine.classify(requests, pooling_params=PoolingParams(use_activation=False), use_tqdm=False)
        scores = []
        for out in outputs:
            logits = np.asarray(out.outputs.probs, dtype=np.float64).reshape(-1)
            if logits.size != 1:
                raise ValueError(f"{self.name}: a reward model needs exactly one output, it has {logits.size}")
            scores.append(logits[0])
        return np.asarray(scores, dtype=np.float64)

    def close(self) -> None:
        self.engine.llm_engine.engine_core.shutdown()

