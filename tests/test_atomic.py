"""Atomic writes (core/atomic.py): a save that fails half-way leaves the previous file."""

from __future__ import annotations

import json

import pytest
import torch

import core.agent_file
from core.agent_file import load_agent, save_agent
from core.atomic import atomic_path, write_json_atomic
from core.networks import Actor


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "state.json"
    write_json_atomic(target, {"step": 1})
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_path(target) as tmp:
            tmp.write_text('{"step": 2, "half')  # a torn write, then the process "crashes"
            raise RuntimeError("crash")
    assert json.loads(target.read_text()) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
    write_json_atomic(target, {"step": 2})
    assert json.loads(target.read_text()) == {"step": 2}


def test_an_agent_save_interrupted_mid_write_leaves_the_previous_agent(tmp_path, monkeypatch):
    path = tmp_path / "agent.safetensors"
    torch.manual_seed(0)
    old = Actor(state_dim=8, hidden_size=16)
    save_agent(old, path)

    def torn_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 100)  # part of a file, then the "crash"
        raise OSError("disk full")

    monkeypatch.setattr(core.agent_file, "save_file", torn_save)
    with pytest.raises(OSError, match="disk full"):
        save_agent(Actor(state_dim=8, hidden_size=16), path)
    states = torch.randn(3, 8)
    torch.testing.assert_close(load_agent(path)(states), old(states))
    assert [p.name for p in tmp_path.iterdir()] == ["agent.safetensors"]
