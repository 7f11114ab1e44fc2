"""A synthetic upstream LLM, for measuring the distributed system without a model.

``model.name: synthetic:D[:SECONDS]`` gives rollout workers an LLM with hidden size D whose
every forward returns random hidden states after sleeping SECONDS (default 0): episodes,
transitions and weights then flow through the real decoder, replay, learner and driver at
the size of a large model (D = 4096) and at a rate that does not depend on the cores
(benchmarks/bench_scaling.py). Its vocabulary is 64 tokens, its logits are the first 64
features of a state, and token 63 ends an answer. Not for training anything real.
"""

from __future__ import annotations

import time
import zlib

import torch

PREFIX = "synthetic:"
VOCAB = 64


def is_synthetic(name: str) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def parse(name: str) -> tuple[int, float]:
    """(hidden size, seconds per forward) of a ``synthetic:D[:SECONDS]`` name."""
    parts = name[len(PREFIX):].split(":")
    try:
        hidden = int(parts[0])
        seconds = float(parts[1]) if len(parts) > 1 else 0.0
    except (ValueError, IndexError):
        raise ValueError(f"a synthetic model is named synthetic:HIDDEN[:SECONDS_PER_FORWARD], got {name!r}") from None
    if hidden < VOCAB or seconds < 0:
        raise ValueError(f"synthetic model {name!r}: hidden size must be >= {VOCAB} and seconds >= 0")
    return hidden, seconds


class _NoCache:
    """The decoder's KV cache bookkeeping works on ``layers``: a synthetic model has none."""

    layers: list = []


class SyntheticLLM:
    """The interface of ``envs.upstream.UpstreamLLM`` (what the decoder uses), without a model."""

    def __init__(self, name: str, seed: int = 0) -> None:
        self.hidden_size, self.forward_s = parse(name)
        self.model_id = name
        self.max_context = 4096
        self.eos_token_ids = {VOCAB - 1}
        self.device, self.dtype = torch.device("cpu"), torch.float32
        self._generator = torch.Generator().manual_seed(seed)

    def encode_prompt(self, prompt: str) -> list[int]:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("empty prompt: give the model something to answer")
        return [zlib.crc32(word.encode()) % (VOCAB - 1) for word in prompt.split()][:64] or [0]

    def encode_messages(self, messages: list[dict[str, str]]) -> list[int]:
        return self.encode_prompt(" ".join(m["content"] for m in messages))

    encode_text = encode_prompt

    def decode(self, token_ids: list[int]) -> str:
        return " ".join(f"w{t}" for t in token_ids if t not in self.eos_token_ids)

    def new_cache(self) -> _NoCache:
        return _NoCache()

    def forward(self, input_ids, position_ids, attention_mask, cache) -> torch.Tensor:
        if self.forward_s:
            time.sleep(self.forward_s)
        batch, width = input_ids.shape
        return torch.randn(batch, width, self.hidden_size, generator=self._generator)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden[..., :VOCAB].float() * 2.0
