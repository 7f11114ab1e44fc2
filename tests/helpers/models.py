"""Tiny upstream models and reward models for tests, and real components that fail or lag."""

from __future__ import annotations

import time
from pathlib import Path

import torch

TINY_HIDDEN = 64


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
            # "local": never the cluster the other test process started last (test_cluster's)
            ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}})
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


TINY_SCORER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=512)


# (prompt, response) pairs the counted scorer was asked about, in the process that scores
SCORED: list[tuple[str, str]] = []


def counted_word_count(prompt: str, response: str) -> float:
    """rewards.examples.word_count that records each pair it scores (``SCORED``)."""
    from rewards.examples import word_count

    SCORED.append((prompt, response))
    return word_count(prompt, response)
