"""Shared fixtures: a local Ray cluster started by the tests, and small upstream LLMs.

``tiny_llm_path`` is a randomly initialised 2-layer Llama (hidden size 64) saved with the
real SmolLM2 tokenizer and chat template, so unit tests exercise the same loading path
as real models in well under a second per forward. ``smollm2`` is the real embedded
SmolLM2-135M-Instruct, for the few integration tests.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TINY_HIDDEN = 64


def pytest_configure(config):
    # One intra-op thread: the test models are small, and on a shared 2-core machine a
    # second OpenMP thread spin-waits for a busy core (measured: a tiny-Llama forward
    # takes 8 ms with one thread, 230 ms with two while another job runs).
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need an NVIDIA GPU: skipped, with the reason, where torch sees none
    (``scripts/gpu_check.sh`` runs them on a GPU machine)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (torch sees none here); scripts/gpu_check.sh runs it on one")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def slow_llm(seconds_per_forward: float) -> str:
    """A synthetic upstream of the tiny model's width whose every forward takes this long
    (envs/synthetic.py): a slow environment, so that episodes are in flight for a while."""
    return f"synthetic:{TINY_HIDDEN}:{seconds_per_forward}"


def unreachable_reward_server() -> dict:
    """An ``http`` scorer whose server is down (a port nothing listens on): a real reward
    model that cannot score, refused at once."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return {"kind": "http", "path": f"http://127.0.0.1:{port}/score", "options": {"timeout": 2.0}}


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


def start_local_ray(attempts: int = 3):
    """The tests' local Ray (started once; a module-scoped fixture may call it directly).

    Ray gives a starting node a fixed 30 s to register its raylet (ray/_private/node.py); on a
    loaded 2-core machine that once ran out ("The current node timed out during startup") and
    errored three tests. Such a start is shut down and tried again; any other error is raised."""
    import ray

    for attempt in range(1, attempts + 1):
        if ray.is_initialized():
            break
        started = time.time()
        try:
            ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}})
        except Exception as err:
            ray.shutdown()
            _stop_ray_processes_of_a_failed_start(started)
            if attempt == attempts or "timed out during startup" not in str(err):
                raise
    return ray


def _stop_ray_processes_of_a_failed_start(started: float) -> None:
    """A start that gave up leaves its GCS server and raylet running, which ray.shutdown() does
    not know of (no node was connected): stop the Ray processes this process started since
    ``started`` (a ray.cluster_utils.Cluster's older ones are left alone)."""
    import psutil
    import ray

    ray_dir = str(Path(ray.__file__).parent)
    for child in psutil.Process().children(recursive=True):
        try:
            if child.create_time() >= started - 1 and any(ray_dir in part for part in child.cmdline()):
                child.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    from envs.upstream import embedded_model_path

    return embedded_model_path()


def save_tiny_llama(path: Path, smollm2_path: Path, context: int = 256) -> Path:
    """A tiny random Llama (2 layers, hidden size ``TINY_HIDDEN``) with SmolLM2's tokenizer,
    its full vocabulary and a context of ``context`` tokens, saved in ``path``."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_path))
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=TINY_HIDDEN, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=context, tie_word_embeddings=True, initializer_range=0.3,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


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
TINY_SCORER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=512)


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
