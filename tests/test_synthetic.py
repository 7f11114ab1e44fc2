"""envs/synthetic.py: the model-free LLM of the scaling benchmark runs through the real decoder."""

from __future__ import annotations

import pytest

from core.config import SamplingConfig
from core.networks import Actor
from envs.generation import AlignedGenerator, load_llm
from envs.synthetic import parse
from envs.upstream import model_hidden_size


def test_a_synthetic_model_gives_episodes_of_its_hidden_size():
    llm = load_llm("synthetic:256:0")
    assert model_hidden_size("synthetic:256") == 256
    gen = AlignedGenerator(llm, Actor(256, 32), sampling=SamplingConfig(max_new_tokens=12), greedy=False,
                           batch_size=2)
    results = gen.run_episodes(["one prompt", "another prompt here", "a third"], max_rows=2)
    assert len(results) == 3
    for r in results:
        assert 1 <= len(r.response_ids) <= 12 and r.episode.states.shape[1:] == (256,)
        assert len(r.episode) == len(r.decision_points)


@pytest.mark.parametrize("name", ["synthetic:", "synthetic:wide", "synthetic:16", "synthetic:256:-1"])
def test_bad_synthetic_names_are_refused(name):
    with pytest.raises(ValueError, match="synthetic"):
        parse(name)
