"""The vLLM backend of the frozen upstream LLM: rollout states, next-candidate logits and
baseline generation through vLLM engines instead of a transformers loop.

Where the states come from. vLLM has no API to run the model on new tokens against a
caller-managed KV cache with a custom mask (what ``envs/decoder.py`` does with
transformers). What it has is the pooling runner: a causal LM loaded with
``runner="pooling", convert="embed"`` and ``PoolerConfig(pooling_type="LAST",
use_activation=False)`` returns, per request, the last-layer hidden state of the
sequence's last token, after the final norm, unnormalised: exactly the MARA state of a
candidate when the request is prompt + response so far + candidate (checked against
transformers' ``last_hidden_state`` in tests/test_vllm.py). With automatic prefix caching
the KV blocks of prompt + response are reused across requests and decision steps, so a
request recomputes only the tokens after the last full cached block (fewer than
``block_size``). The next position's logits are the model's own output head applied to
the accepted candidate's state; the head is read from the checkpoint with safetensors.

One engine serves all episodes in flight: every step sends the requests of all rows in
one ``LLM.encode`` call, which vLLM schedules with continuous batching.

Usage::

    llm = VllmUpstream("smollm2", VllmEngineConfig(gpu_memory_utilization=0.2))
    decoder = VllmAcceptRejectDecoder(llm, sampling, kl, mode="lazy")   # same API as
    decoder.start(prompts)                                             # AcceptRejectDecoder
    while decoder.has_pending():
        accept_prob = policy(decoder.pending_states())
        decoder.apply(actions, accept_prob)
    results = decoder.results()
    texts = llm.generate_upstream(prompts, sampling, sample=False)     # vLLM batched generation
    llm.close()

``envs.generation.AlignedGenerator(llm, actor, backend="vllm")`` runs this loop for
aligned generation and the rollout workers (``model.backend: vllm`` in a run config).

vLLM starts worker processes: scripts that build an engine must do so under
``if __name__ == "__main__":``; inside a Ray actor vLLM must spawn them, not fork (the
rollout workers get ``VLLM_WORKER_MULTIPROC_METHOD=spawn`` in their runtime env, see
``VLLM_ACTOR_ENV``). vLLM is imported only when an engine is built.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch

from core.config import AUTO, DTYPES, SamplingConfig, VllmEngineConfig
from envs.decoder import _AcceptRejectMDP, _EpisodeRow
from envs.mdp import candidate_sets
from envs.upstream import DEFAULT_MODEL, UpstreamLLM, _eos_ids, resolve_model

# Environment of a Ray actor that builds vLLM engines: a forked engine process would share
# the actor's Ray connection (undefined behaviour, hangs), so vLLM must spawn. vLLM 0.32
# switches to spawn by itself when it detects a Ray actor; this makes it explicit.
VLLM_ACTOR_ENV = {"VLLM_WORKER_MULTIPROC_METHOD": "spawn"}


@dataclass
class EngineStats:
    """Work done by the pooling engine (for benchmarks and logs)."""

    calls: int = 0  # LLM.encode calls (one per batched decoder step)
    requests: int = 0  # pooled sequences
    prompt_tokens: int = 0  # tokens of those sequences
    cached_tokens: int = 0  # of which read from the prefix cache

    @property
    def computed_tokens(self) -> int:
        return self.prompt_tokens - self.cached_tokens


class VllmUpstream:
    """The frozen upstream LLM served by vLLM: the same prompt formatting, EOS set and
    hidden size as ``envs.upstream.UpstreamLLM``, plus

    - ``last_hidden_states(sequences)``: (n, d) final-norm state of each sequence's last token;
    - ``logits(hidden)``: the model's own output head on those states;
    - ``generate_upstream(prompts, sampling, sample, seed)``: baseline answers by vLLM's
      batched generation.
    """

    def __init__(self, model: str | None = DEFAULT_MODEL, engine: VllmEngineConfig = VllmEngineConfig(),
                 dtype: str = "float32", device: str = "auto") -> None:
        """``dtype``: the engines' weights and activations (float32 for states comparable
        with the transformers backend; "auto": bfloat16 on a GPU that supports it, else float32,
        as vLLM's CPU backend in bfloat16 is not measured here); ``device``: where the output head runs."""
        from transformers import AutoConfig, AutoTokenizer, GenerationConfig

        if dtype == AUTO:
            dtype = "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        source, model_id, kwargs = resolve_model(model)
        if kwargs:
            raise ValueError(f"the vLLM backend needs a safetensors checkpoint (folder or hub id), not {model_id!r}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.source, self.model_id, self.engine_config, self.engine_dtype = source, model_id, engine, dtype
        self.config = AutoConfig.from_pretrained(source)
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        try:
            generation_config = GenerationConfig.from_pretrained(source)
        except OSError:  # no generation_config.json
            generation_config = SimpleNamespace(eos_token_id=None)
        self.eos_token_ids = _eos_ids(SimpleNamespace(generation_config=generation_config), self.tokenizer)
        text_config = self.config.get_text_config()
        self.hidden_size = int(text_config.hidden_size)
        self.max_context = min(int(getattr(text_config, "max_position_embeddings", engine.max_model_len)),
                               engine.max_model_len)
        self._head = load_output_head(source, self.config).to(device)  # (V, d) float32
        self.stats = EngineStats()
        self._pooler = None
        self._generator = None

    @property
    def device(self) -> torch.device:
        return self._head.device

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    # ----------------------------------------------------------------- prompts
    # Prompts: the transformers backend's own formatting (chat template, context check), so
    # both backends see the same ids.
    encode_prompt = UpstreamLLM.encode_prompt
    encode_messages = UpstreamLLM.encode_messages
    encode_text = UpstreamLLM.encode_text
    _within_context = UpstreamLLM._within_context

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True).strip()

    # ----------------------------------------------------------------- engines
    @property
    def pooler(self):
        """The pooling engine (LAST token, no activation), built on first use."""
        if self._pooler is None:
            from vllm.config import PoolerConfig

            self._pooler = self._engine(runner="pooling", convert="embed",
                                        pooler_config=PoolerConfig(pooling_type="LAST", use_activation=False))
        return self._pooler

    @property
    def generator(self):
        """The generation engine for baselines, built on first use."""
        if self._generator is None:
            self._generator = self._engine(runner="generate")
        return self._generator

    def _engine(self, **kwargs):
        from vllm import LLM

        return LLM(model=self.source, dtype=self.engine_dtype, **self.engine_config.engine_kwargs(), **kwargs)

    def close(self) -> None:
        """Stop the engines' worker processes."""
        for engine in (self._pooler, self._generator):
            if engine is not None:
                engine.llm_engine.engine_core.shutdown()
        self._pooler = self._generator = None

    # ----------------------------------------------------------------- states
    @torch.no_grad()
    def last_hidden_states(self, sequences: list[list[int]]) -> torch.Tensor:
        """(n, d) float32 last-layer state (after the final norm) of each sequence's last
        token, on ``self.device``. All sequences go to the engine in one call."""
        from vllm.pooling_params import PoolingParams

        if not sequences:
            return torch.zeros(0, self.hidden_size, device=self.device)
        too_long = [len(s) for s in sequences if len(s) > self.engine_config.max_model_len]
        if too_long:
            raise ValueError(f"sequence of {too_long[0]} tokens exceeds max_model_len={self.engine_config.max_model_len}")
        outputs = self.pooler.encode([{"prompt_token_ids": list(s)} for s in sequences], pooling_task="embed",
                                     pooling_params=PoolingParams(use_activation=False), use_tqdm=False)
        self.stats.calls += 1
        self.stats.requests += len(sequences)
        self.stats.prompt_tokens += sum(len(s) for s in sequences)
        self.stats.cached_tokens += sum(int(o.num_cached_tokens or 0) for o in outputs)
        return torch.stack([o.outputs.data for o in outputs]).to(self.device, torch.float32)

    @torch.no_grad()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., d) hidden states -> (..., V) next-token logits, in float32."""
        return hidden.to(self.device, torch.float32) @ self._head.T

    def full_forward_hidden(self, token_ids: list[int]) -> torch.Tensor:
        """(T, d) states of every prefix of one sequence (one pooling request per prefix;
        for tests, not for speed)."""
        return self.last_hidden_states([token_ids[:t] for t in range(1, len(token_ids) + 1)])

    # ----------------------------------------------------------------- baselines
    def generate_ids(self, prompt_ids: list[list[int]], sampling: SamplingConfig, sample: bool = False,
                     seed: int = 0) -> list[list[int]]:
        """Generated token ids for each prompt (generation stops at the first EOS), greedy
        or sampled with the candidate-set temperature, top-k and top-p; request i uses
        seed + i."""
        from vllm import SamplingParams

        stop = sorted(self.eos_token_ids)
        if sample:
            params = [SamplingParams(temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p,
                                     max_tokens=sampling.max_new_tokens, seed=seed + i, stop_token_ids=stop)
                      for i in range(len(prompt_ids))]
        else:
            params = SamplingParams(temperature=0.0, max_tokens=sampling.max_new_tokens, stop_token_ids=stop)
        outputs = self.generator.generate([{"prompt_token_ids": list(p)} for p in prompt_ids], params,
                                          use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outputs]

    def generate_upstream(self, prompts: list[str], sampling: SamplingConfig, sample: bool = False,
                          seed: int = 0) -> list[str]:
        """The upstream model's own answers, decoded like ``AlignedGenerator.generate_upstream``."""
        ids = self.generate_ids([self.encode_prompt(p) for p in prompts], sampling, sample, seed)
        return [self.decode(row) for row in ids]


def load_output_head(source: str, config) -> torch.Tensor:
    """(V, d) float32 weight of the model's output head, read from the checkpoint's
    safetensors: ``lm_head.weight``, or the input embedding when the two are tied."""
    from safetensors import safe_open

    for attr in ("final_logit_softcapping", "logit_scale", "output_multiplier_scale"):
        value = getattr(config.get_text_config(), attr, None)
        if value not in (None, 1, 1.0):
            raise NotImplementedError(f"{source}: output head with {attr}={value} is not a plain linear head")
    files = _safetensors_files(source)
    names = ["lm_head.weight"]
    if getattr(config, "tie_word_embeddings", False):
        names = ["model.embed_tokens.weight", "lm_head.weight"]
    for name in names + ["model.embed_tokens.weight"]:
        for file in files:
            with safe_open(str(file), framework="pt") as f:
                if name in f.keys():
                    return f.get_tensor(name).float()
    raise KeyError(f"{source}: no lm_head.weight or model.embed_tokens.weight in {[f.name for f in files]}")


def _safetensors_files(source: str) -> list[Path]:
    folder = Path(source).expanduser()
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(source, allow_patterns=["*.safetensors", "*.json"]))
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return [folder / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors files in {folder}")
    return files


# ---------------------------------------------------------------------------------------
# The accept/reject MDP over vLLM
# ---------------------------------------------------------------------------------------

@dataclass
class _Episode(_EpisodeRow):
    """An episode and the pooling requests its next engine call must send."""

    needs_prefill: bool = True  # the prompt's own state (first position's logits) is not computed yet
    open_from: torch.Tensor | None = None  # state whose logits open the next position
    todo: list[int] = field(default_factory=list)  # candidate indices whose states the next call computes

    @property
    def busy(self) -> bool:
        return bool(self.todo) or self.open_from is not None or self.needs_prefill


class VllmAcceptRejectDecoder(_AcceptRejectMDP):
    """``envs.decoder.AcceptRejectDecoder`` over a ``VllmUpstream``: same MDP, same API
    (start, has_pending, pending_rows, pending_states, apply, results), same ``DecodeResult``.

    Each step sends one pooling request per candidate whose state is needed (lazy: the
    current candidate only; eager: all K candidates of a new position) for all rows at
    once; prefix caching keeps each request's cost near its uncached tail.
    """

    llm: VllmUpstream
    rows: list[_Episode]

    def pending_states(self) -> torch.Tensor:
        """(n, state_dim) float32 state of the candidate each waiting row must decide on."""
        if not self.has_pending():  # an empty batch on the head's device rather than an error
            return torch.zeros(0, self.state_dim, device=self.llm.device)
        return super().pending_states()

    # ------------------------------------------------------------------ MDP hooks
    def _begin(self, prompts: list[str], prompt_ids: list[list[int]]) -> list[_Episode]:
        return [_Episode(prompt=p, prompt_ids=ids) for p, ids in zip(prompts, prompt_ids)]

    def _schedule(self, row: _Episode, k: int) -> None:
        row.todo = self._to_compute(row, k)

    def _discard(self, row: _Episode, k: int) -> None:
        pass  # the prefix cache keeps no per-candidate state of ours

    def _close_position(self, row: _Episode, k: int) -> None:
        pass  # the next requests simply include the accepted token

    def _open_next(self, row: _Episode, hidden: torch.Tensor) -> None:
        row.open_from = hidden  # its logits give the next position's candidates

    # ------------------------------------------------------------------ engine calls
    def _advance(self) -> None:
        """Run engine calls until every unfinished row waits for a decision."""
        while True:
            self._open_positions()
            rows = [r for r in self.rows if not r.finished and (r.needs_prefill or r.todo)]
            if not rows:
                return
            sequences, owners = [], []
            for r in rows:
                prefix = r.prompt_ids + r.response_ids
                if r.needs_prefill:
                    sequences.append(prefix)
                    owners.append((r, None))
                    continue
                for k in r.todo:
                    sequences.append(prefix + [r.cand_ids[k]])
                    owners.append((r, k))
            hidden = self.llm.last_hidden_states(sequences)
            for (r, k), h in zip(owners, hidden):
                if k is None:
                    r.needs_prefill, r.open_from, r.prompt_hidden = False, h, h
                else:
                    r.cand_hidden[k] = h
                    r.forward_tokens += 1
            for r in rows:
                if r.todo:
                    self._count_forward(r)
                    r.todo = []
                    self._visit_candidate(r)

    def _open_positions(self) -> None:
        """Candidate sets of every row whose next position is open, from one batched head
        call; single-candidate positions are accepted at once (no decision), which may
        open further positions."""
        while True:
            rows = [r for r in self.rows if r.open_from is not None]
            if not rows:
                return
            logits = self.llm.logits(torch.stack([r.open_from for r in rows]))
            for r, (ids, probs) in zip(rows, candidate_sets(logits, self.sampling)):
                r.open_from = None
                r.cand_ids, r.ref_probs, r.k, r.cand_hidden = ids, probs, 0, {}
                r.todo = list(range(len(ids))) if self.mode == "eager" else [0]
