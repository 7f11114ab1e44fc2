"""Shared fixtures: a local Ray cluster started by the tests, and small upstream LLMs.

``tiny_llm_path`` is a randomly initialised 2-layer Llama (hidden size 64) saved with the
real SmolLM2 tokenizer and chat template, so unit tests exercise the same loading path
as real models in well under a second per forward. ``smollm2`` is the real embedded
SmolLM2-135M-Instruct, for the few integration tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers.models import TINY_SCORER, save_tiny_llama, start_local_ray

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_configure(config):
    # One intra-op thread: the test models are small, and on a shared 2-core machine a
    # second OpenMP thread spin-waits for a busy core (measured: a tiny-Llama forward
    # takes 8 ms with one thread, 230 ms with two while another job runs). The same for the
    # processes the tests start (launch.py, mara, Ray's), which read it from the environment;
    # and the tokenizer's own thread pool.
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need an NVIDIA GPU: skipped, with the reason, where torch sees none
    (``scripts/gpu_check.sh`` runs them on a GPU machine)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (torch sees none here); scripts/gpu_check.sh runs it on one")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def _ray_session():
    """Shuts the tests' Ray cluster down at the end of the session."""
    yield
    import ray

    ray.shutdown()


@pytest.fixture
def ray_local(_ray_session):
    """A local Ray cluster started by the tests themselves (4 logical CPUs, no dashboard),
    shared by the tests that use it. A test module that needs the machine's memory for
    itself (the vLLM engines) shuts it down first; the next test that asks starts it again."""
    return start_local_ray()


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    from core.model_files import embedded_model_path

    return embedded_model_path()


@pytest.fixture(scope="session")
def tiny_llm_path(tmp_path_factory, smollm2_path) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), smollm2_path)


@pytest.fixture(scope="session")
def tiny_llm(tiny_llm_path):
    from envs.upstream import load_upstream

    return load_upstream(str(tiny_llm_path), device="cpu")


@pytest.fixture(scope="session")
def smollm2(smollm2_path):
    from envs.upstream import load_upstream

    return load_upstream("smollm2", device="cpu")


# A tiny reward model body (score models, sequence classifiers).


@pytest.fixture(scope="session")
def tiny_score_model(tmp_path_factory, smollm2_path):
    """A random Llama body + score_head written in safe-rlhf's LlamaForScore layout."""
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_path))
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, **TINY_SCORER)
    config.architectures = ["LlamaForScore"]
    config.score_dim = 1
    torch.manual_seed(0)
    body, head = LlamaModel(config).eval(), torch.nn.Linear(TINY_SCORER["hidden_size"], 1)
    state = {f"model.{k}": v.contiguous() for k, v in body.state_dict().items()}
    state.update({f"score_head.{k}": v.detach().clone() for k, v in head.state_dict().items()})
    path = tmp_path_factory.mktemp("tiny-score-model")
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path, body, head, tokenizer
