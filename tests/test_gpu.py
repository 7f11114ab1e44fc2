"""The GPU paths (``@pytest.mark.gpu``: skipped with the reason where torch sees no CUDA
device; ``scripts/gpu_check.sh`` runs them on a machine with one NVIDIA GPU).

On the GPU, the accept/reject decoder must give what it gives on the CPU: an always-accept
agent reproduces greedy decoding in every mode, and the candidate states of the same
decisions match the CPU's; the learner updates on the GPU with the replay's copy there."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.decoding import PROMPTS, always_accept, hf_greedy, run, run_scripted

from core.config import SamplingConfig
from envs.decoder import MODES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_llm(tiny_llm_path):
    from envs.upstream import load_upstream

    return load_upstream(str(tiny_llm_path), device="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("mode", MODES)
def test_an_always_accept_agent_reproduces_greedy_decoding_on_the_gpu(gpu_llm, mode):
    for prompt, result in zip(PROMPTS, run(gpu_llm, PROMPTS, always_accept, mode, max_new_tokens=12)):
        assert result.response_ids == hf_greedy(gpu_llm, prompt, 12)


@pytest.mark.gpu
def test_candidate_states_on_the_gpu_match_the_cpus(gpu_llm, tiny_llm):
    sampling = SamplingConfig(max_new_tokens=8, top_k=6, top_p=1.0)
    for mode in MODES:
        on_gpu = run_scripted(gpu_llm, PROMPTS, [0, 1, 0, 0, 1], mode, sampling)
        on_cpu = run_scripted(tiny_llm, PROMPTS, [0, 1, 0, 0, 1], mode, sampling)
        for a, b in zip(on_gpu, on_cpu):
            assert a.response_ids == b.response_ids, mode
            np.testing.assert_allclose(a.episode.states, b.episode.states, atol=1e-3, rtol=1e-3)


@pytest.mark.gpu
def test_the_learner_updates_on_the_gpu_with_the_replay_there(device: str = "cuda"):
    from core.contracts import EpisodeTransitions
    from core.config import SACConfig
    from learner.learner import SACLearner
    from replay.device_buffer import DeviceReplayBuffer

    d, rng = 32, np.random.default_rng(0)
    learner = SACLearner(state_dim=d, sac=SACConfig(batch_size=64, hidden_size=64), device=device, seed=0)
    buffer = DeviceReplayBuffer(capacity=4096, state_dim=d, device=device, copy_on_cpu=True)
    episodes = [EpisodeTransitions(states=rng.standard_normal((20, d)).astype(np.float32),
                                   actions=rng.integers(0, 2, 20).astype(np.int8),
                                   kl_penalties=np.zeros(20, np.float32), prompt="p", response="r")
                for _ in range(10)]
    for episode in episodes:
        episode.with_sentence_reward(1.0)
    assert buffer.add(episodes) == 200
    losses = [learner.update(buffer.sample(64, rng)).critic_loss for _ in range(5)]
    assert learner.updates == 5 and np.all(np.isfinite(losses))
    assert next(learner.state.critic.parameters()).device.type == torch.device(device).type


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: gpu_check.sh would run all of it")
def test_the_gpu_check_runs_on_a_cpu_to_its_first_gpu_step_and_says_why_it_stops():
    proc = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "GPU_CHECK_SKIP_INSTALL": "1"})
    assert proc.returncode == 1
    assert "1/5 the GPU-marked tests" in proc.stdout and re.search(r"\b5/\d+ tests collected", proc.stdout)
    # It lists and runs this module's: no other test module carries the mark.
    marked = {path.name for path in (ROOT / "tests").glob("test_*.py") if "mark.gpu" in path.read_text()}
    assert marked == {"test_gpu.py"}
    assert "2/5 is there an NVIDIA GPU?" in proc.stdout and "3/5" not in proc.stdout  # nothing installed
    assert "gpu_check: no NVIDIA GPU here (nvidia-smi not found)" in proc.stderr
