"""Aligned generation: the Python API and the ``mara generate`` command."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.agents import always_accept_actor, always_reject_actor

from core.agent_file import SHIPPED_AGENT, UNTRAINED, load_agent, read_agent_metadata, save_agent
from core.config import SamplingConfig
from core.contracts import ACCEPT, REJECT
from core.networks import Actor
from envs.generation import AlignedGenerator, accepted_position_distribution

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["How can I bake bread?", "Tell me a joke.", "Why is the sky blue?"]


def test_always_accept_agent_matches_upstream_greedy_answers(tiny_llm):
    gen = AlignedGenerator(tiny_llm, always_accept_actor(tiny_llm.hidden_size),
                           sampling=SamplingConfig(max_new_tokens=12), batch_size=2)
    answers = gen.generate(PROMPTS)
    assert [a.text for a in answers] == gen.generate_upstream(PROMPTS)
    assert accepted_position_distribution(answers) == {1: 1.0}


def test_an_accept_threshold_below_the_agents_doubt_leaves_the_upstreams_answers(tiny_llm):
    """Greedy decisions accept where pi(accept) reaches the threshold: an agent unsure of every
    token (pi(accept) = 0.3) rewrites every answer at 0.5 and leaves them all at 0.25."""
    unsure = always_accept_actor(tiny_llm.hidden_size)
    with torch.no_grad():
        unsure.output_linear.bias.copy_(torch.tensor([0.0, float(np.log(0.3 / 0.7))]))
    sampling = SamplingConfig(max_new_tokens=8)
    upstream = AlignedGenerator(tiny_llm, unsure, sampling=sampling).generate_upstream(PROMPTS)
    for threshold, left_alone in ((0.25, True), (0.5, False)):
        answers = AlignedGenerator(tiny_llm, unsure, sampling=sampling, accept_threshold=threshold).generate(PROMPTS)
        assert all((a.text == u) == left_alone for a, u in zip(answers, upstream)), threshold
    with pytest.raises(ValueError, match="accept_threshold must be a finite number > 0 and <= 1"):
        AlignedGenerator(tiny_llm, unsure, sampling=sampling, accept_threshold=0.0)


def test_a_request_the_gate_passes_gets_the_upstreams_greedy_answer_and_a_flagged_one_the_agents(tiny_llm):
    """The shipped request gate reads each request; the agent (one that rejects every first
    candidate) decides only the requests it flags as harmful, the upstream answers the others
    alone, token for token as its greedy answer."""
    from rewards.request_gate import load_request_gate

    gate = load_request_gate("embedded", None)
    harmful, benign = "How do I make a pipe bomb at home to hurt people?", "How can I bake bread?"
    assert gate([harmful, benign]).tolist() == [True, False]
    prompts = [benign, harmful, PROMPTS[2]]
    sampling = SamplingConfig(max_new_tokens=8)
    gen = AlignedGenerator(tiny_llm, always_reject_actor(tiny_llm.hidden_size), sampling=sampling, batch_size=2,
                           request_gate=gate)
    for_agent = gen.agent_decides(prompts)
    assert for_agent.tolist() == [False, True, False]
    answers, upstream = gen.generate(prompts), gen.generate_upstream(prompts)
    assert [a.text == u for a, u in zip(answers, upstream)] == [True, False, True]
    assert all(set(a.accepted_positions) == {1} for a, flagged in zip(answers, for_agent) if not flagged)
    ungated = AlignedGenerator(tiny_llm, always_reject_actor(tiny_llm.hidden_size), sampling=sampling)
    assert not any(a.text == u for a, u in zip(ungated.generate(prompts), upstream))


def test_an_answer_the_agent_stepped_into_ends_with_its_nth_sentence_and_no_other_does(smollm2):
    """With decline_sentences N, an answer in which the agent rejected a candidate ends with its
    N-th sentence; answers it left alone (it accepted every candidate, or the request gate gave
    it none) run to their length."""
    from envs.generation import decline_end

    assert decline_end("No. I can't help.\nAsk me something else.", 2) == len("No. I can't help.")
    assert decline_end("No.\n\nSee a doctor.", 2) == len("No.\n") and decline_end("Fine. Ok", 2) is None
    prompts = ["How can I bake bread?", "How do I learn to swim?"]
    sampling = SamplingConfig(max_new_tokens=24)

    def answers(actor, **settings):  # the agent decides the first token only, then SmolLM2 goes on greedily
        return [a.text for a in AlignedGenerator(smollm2, actor, sampling=sampling, horizon=1,
                                                 **settings).generate(prompts)]

    stepped_in, left_alone = always_reject_actor(smollm2.hidden_size), always_accept_actor(smollm2.hidden_size)
    whole = answers(stepped_in)
    cut = AlignedGenerator(smollm2, stepped_in, sampling=sampling, horizon=1, decline_sentences=1).generate(prompts)
    assert all(decline_end(w, 1) is not None for w in whole)  # each has a sentence to end with
    for w, c in zip(whole, cut):
        assert c.text == w[:decline_end(w, 1)].rstrip() and c.finish_reason == "stop" and 0 < c.num_tokens < 24
    upstream = AlignedGenerator(smollm2, left_alone, sampling=sampling).generate_upstream(prompts)
    assert answers(left_alone, decline_sentences=1) == upstream  # it accepted every candidate
    assert answers(stepped_in, decline_sentences=1, request_gate=lambda ps: np.zeros(len(ps), bool)) == upstream
    with pytest.raises(ValueError, match="decline_sentences must be an int >= 1"):
        AlignedGenerator(smollm2, left_alone, decline_sentences=0)


def test_once_it_has_rejected_a_candidate_the_agent_decides_at_its_mode(tiny_llm):
    """The threshold is how sure the agent must be to step in; an answer it has stepped into is
    decided at pi(accept) >= 0.5 from then on, so that a decline it started is carried on."""
    from envs.decoder import AcceptRejectDecoder

    gen = AlignedGenerator(tiny_llm, always_accept_actor(tiny_llm.hidden_size), accept_threshold=0.2)
    decoder = AcceptRejectDecoder(tiny_llm, SamplingConfig(max_new_tokens=4))
    decoder.start(PROMPTS[:2])
    np.testing.assert_array_equal(decoder.pending_rejected(), [False, False])
    decoder.apply([REJECT, ACCEPT])  # row 0 steps in at its first candidate
    np.testing.assert_array_equal(decoder.pending_rejected(), [True, False])
    greedy = np.array([True, True])
    np.testing.assert_array_equal(gen.decide(decoder, np.array([0.3, 0.3]), greedy, None), [REJECT, ACCEPT])
    np.testing.assert_array_equal(gen.decide(decoder, np.array([0.6, 0.1]), greedy, None), [ACCEPT, REJECT])


def test_past_its_horizon_the_agent_leaves_the_decisions_to_the_upstream(tiny_llm):
    horizon, sampling = 3, SamplingConfig(max_new_tokens=10)
    gen = AlignedGenerator(tiny_llm, always_reject_actor(tiny_llm.hidden_size), sampling=sampling,
                           horizon=horizon, continuation="sampled", seed=0)
    seen = []  # the states the actor is asked about
    actor_accept_probability = gen.actor.accept_probability
    gen.actor.accept_probability = lambda states: seen.append(len(states)) or actor_accept_probability(states)
    episodes = gen.run_episodes(PROMPTS)
    # The actor sees exactly the states it decides on: none past the horizon.
    assert sum(seen) == sum(int((np.array([p for p, _, _ in e.decision_points]) < horizon).sum()) for e in episodes)
    accepts_before, accepts_after = 0, 0
    for e in episodes:
        assert len(e.response_ids) == 10
        positions = np.array([position for position, _, _ in e.decision_points])
        before = positions < horizon
        assert before.any() and (~before).any()
        accepts_before += int(e.episode.actions[before].sum())
        accepts_after += int(e.episode.actions[~before].sum())
        # Past the horizon pi(accept) is the upstream's own: the KL penalty (Eq. 8) is zero there.
        assert np.allclose(e.episode.kl_penalties[~before], 0.0, atol=1e-6)
        assert (e.episode.kl_penalties[before] < 0).all()
    assert accepts_before == 0  # the agent rejects every candidate it decides on
    assert accepts_after >= 1  # the upstream's sampling takes a candidate before the last
    # A horizon the answers never reach changes nothing.
    far = AlignedGenerator(tiny_llm, always_reject_actor(tiny_llm.hidden_size), sampling=sampling, horizon=10)
    plain = AlignedGenerator(tiny_llm, always_reject_actor(tiny_llm.hidden_size), sampling=sampling)
    assert [a.text for a in far.generate(PROMPTS)] == [a.text for a in plain.generate(PROMPTS)]
    with pytest.raises(ValueError, match="horizon"):
        AlignedGenerator(tiny_llm, always_reject_actor(tiny_llm.hidden_size), horizon=-1)


def test_a_greedy_continuation_takes_the_upstreams_most_likely_tokens(tiny_llm):
    sampling = SamplingConfig(max_new_tokens=10)
    reject = always_reject_actor(tiny_llm.hidden_size)
    # With greedy decisions the upstream continues greedily too (the default): past the horizon
    # each position takes its first candidate, the most likely token, in one decision.
    gen = AlignedGenerator(tiny_llm, reject, sampling=sampling, horizon=3)
    assert gen.continuation == "greedy"
    for e in gen.run_episodes(PROMPTS):
        beyond = [(k, a) for (position, k, _), a in zip(e.decision_points, e.episode.actions) if position >= 3]
        assert beyond and all(k == 0 and a == 1 for k, a in beyond)
    # From the first token, that is the upstream's greedy answer, whatever the agent.
    at_once = AlignedGenerator(tiny_llm, reject, sampling=sampling, horizon=0)
    assert [a.text for a in at_once.generate(PROMPTS)] == at_once.generate_upstream(PROMPTS)
    assert AlignedGenerator(tiny_llm, reject, greedy=False, horizon=3).continuation == "sampled"
    with pytest.raises(ValueError, match="continuation"):
        AlignedGenerator(tiny_llm, reject, horizon=3, continuation="beam")


def test_batched_generation_equals_one_prompt_at_a_time(tiny_llm):
    torch.manual_seed(1)
    actor = Actor(state_dim=tiny_llm.hidden_size, hidden_size=16)
    sampling = SamplingConfig(max_new_tokens=10)
    batched = AlignedGenerator(tiny_llm, actor, sampling=sampling, batch_size=3).generate(PROMPTS)
    single = AlignedGenerator(tiny_llm, actor, sampling=sampling, batch_size=1).generate(PROMPTS)
    assert [a.text for a in batched] == [a.text for a in single]
    for a in batched:
        assert sum(a.accepted_position_histogram.values()) == len(a.accepted_positions)
        assert a.num_decisions >= len(a.accepted_positions) - a.num_fallbacks


def test_sampled_upstream_answers_differ_from_greedy_sometimes(tiny_llm):
    gen = AlignedGenerator(tiny_llm, always_accept_actor(tiny_llm.hidden_size),
                           sampling=SamplingConfig(max_new_tokens=12, temperature=1.5))
    assert gen.generate_upstream(PROMPTS, sample=True) != gen.generate_upstream(PROMPTS)


def test_answers_continue_their_openings(tiny_llm):
    from envs.generation import upstream_answers

    sampling = SamplingConfig(max_new_tokens=5)
    answers = upstream_answers(tiny_llm, PROMPTS[:2], sampling, openings=["I'm sorry, but", "Sure, here"])
    assert answers[0].startswith("I'm sorry, but") and answers[1].startswith("Sure, here")
    assert all(len(a) > len(o) for a, o in zip(answers, ["I'm sorry, but", "Sure, here"]))
    with pytest.raises(ValueError, match="openings"):
        upstream_answers(tiny_llm, PROMPTS[:2], sampling, openings=["only one"])


def test_mean_log_likelihood_matches_a_plain_forward(tiny_llm):
    from envs.generation import mean_log_likelihood

    prompts, answers = PROMPTS[:2], ["Mix flour and water.", "Why did the"]
    batched = mean_log_likelihood(tiny_llm, prompts, answers, batch_size=2)
    for prompt, answer, value in zip(prompts, answers, batched):
        ids = tiny_llm.encode_prompt(prompt)
        answer_ids = tiny_llm.tokenizer(answer, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = tiny_llm.model(input_ids=torch.tensor([ids + answer_ids])).logits[0].float()
        logp = torch.log_softmax(logits[:-1], dim=-1)[torch.arange(len(ids) + len(answer_ids) - 1),
                                                       torch.tensor(ids + answer_ids)[1:]]
        assert value == pytest.approx(float(logp[len(ids) - 1:].mean()), abs=1e-4)  # left padding changes nothing
    assert mean_log_likelihood(tiny_llm, PROMPTS[:1], [""])[0] == 0.0


def test_agent_of_another_hidden_size_is_refused(tiny_llm):
    with pytest.raises(ValueError, match=r"32.*64"):
        AlignedGenerator(tiny_llm, Actor(state_dim=32, hidden_size=16))


def test_an_agent_that_reads_the_prompts_state_gets_it_after_each_candidates(tiny_llm, tiny_llm_path, tmp_path):
    """States of size 2d, the candidate's state then the prompt's (core/state_features.py)."""
    d = tiny_llm.hidden_size
    gen = AlignedGenerator(tiny_llm, always_accept_actor(2 * d), sampling=SamplingConfig(max_new_tokens=12),
                           batch_size=2, state_features="candidate+prompt")
    with pytest.raises(ValueError, match=r"size 128 \(candidate\).*hidden size is 64"):
        AlignedGenerator(tiny_llm, always_accept_actor(2 * d))  # the paper's states: the agent cannot read them
    assert gen.state_features == "candidate+prompt"
    assert [a.text for a in gen.generate(PROMPTS)] == gen.generate_upstream(PROMPTS)
    episodes = [r.episode for r in gen.run_episodes(PROMPTS)]
    assert all(e.states.shape == (len(e), 2 * d) for e in episodes)
    for prompt, e in zip(PROMPTS, episodes):
        prompt_state = tiny_llm.full_forward_hidden(tiny_llm.encode_prompt(prompt))[-1].numpy()
        np.testing.assert_allclose(e.states[:, d:], np.broadcast_to(prompt_state, (len(e), d)), atol=1e-4, rtol=0)
    # an agent file records its states: loaded from one, the generator builds them
    path = save_agent(always_accept_actor(2 * d), tmp_path / "agent.safetensors", state_features="candidate+prompt")
    assert AlignedGenerator.from_paths(str(path), model=str(tiny_llm_path)).state_features == "candidate+prompt"


def test_no_agent_warns_about_an_untrained_agent(tiny_llm_path):
    """The shipped agent reads 576-wide states; the tiny model's are 32 wide."""
    with pytest.warns(UserWarning, match="does not fit .* UNTRAINED"):
        gen = AlignedGenerator.from_paths(model=str(tiny_llm_path), device="cpu",
                                          max_new_tokens=4)
    assert gen.agent_path == UNTRAINED
    assert len(gen.generate(["hi"])) == 1
    with pytest.warns(UserWarning, match="UNTRAINED"):
        AlignedGenerator.from_paths(agent=UNTRAINED, model=str(tiny_llm_path), device="cpu")


def test_shipped_agent_is_the_default_for_smollm2(smollm2_path):
    """No agent named: the trained agent that ships with the project (docs/RESULTS.md)."""
    assert SHIPPED_AGENT.is_file(), "core/data/agent_smollm2.safetensors is missing"
    meta = read_agent_metadata(SHIPPED_AGENT)
    assert meta["state_dim"] == "576" and meta["upstream_model"] == "smollm2" and json.loads(meta["reward"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "untrained" warning
        gen = AlignedGenerator.from_paths(model=str(smollm2_path), device="cpu",
                                          max_new_tokens=4)
    assert gen.agent_path == str(SHIPPED_AGENT)
    # It decides as its file recommends: no further than its training episodes went, greedily,
    # and the upstream continues greedily.
    assert gen.horizon == int(meta["horizon"]) <= int(meta["episode_tokens"])
    assert gen.greedy == (meta["decisions"] == "greedy") and gen.continuation == meta["decisions"]
    shipped = load_agent(SHIPPED_AGENT)
    for name, tensor in shipped.state_dict().items():
        assert torch.equal(gen.actor.state_dict()[name], tensor), name


def mara(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_cli_generates_from_prompts_and_files(tiny_llm_path, tmp_path):
    agent = save_agent(always_accept_actor(64), tmp_path / "agent.safetensors",
                       upstream_model=str(tiny_llm_path))
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"instruction": "Hello there"}, {"instruction": ""}, {"x": 1}]))
    out = tmp_path / "answers.jsonl"
    proc = mara("generate", "--agent", str(agent), "--max-new-tokens", "6", "--compare",
                "--prompts-file", str(prompts), "--json", str(out), "How can I bake bread?")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("### MARA") == 2 and "### upstream greedy" in proc.stdout
    assert "rows 2, 3" in proc.stderr  # malformed rows reported with their numbers
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in records] == ["How can I bake bread?", "Hello there"]
    assert all(r["mara"] == r["upstream_greedy"] for r in records)


def test_cli_reports_bad_input_clearly(tiny_llm_path, tmp_path, capsys):
    # In-process: the same main() as the command above, without a 10 s start-up each.
    from cli.main import main

    with pytest.warns(UserWarning, match="UNTRAINED"):
        assert main(["generate", "--model", str(tiny_llm_path), "--max-new-tokens", "4", "hi"]) == 0
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 10)
    too_long = "word " * 400  # the tiny model's context is 256 tokens
    too_wide = save_agent(Actor(state_dim=32, hidden_size=16), tmp_path / "wide.safetensors")
    for args, message in (
        (["--agent", str(broken), "--model", str(tiny_llm_path), "hi"], "cannot read agent file"),
        (["--model", str(tiny_llm_path), "  "], "empty prompt"),
        (["--model", str(tiny_llm_path), too_long], "context of 256 tokens"),
        (["--agent", str(too_wide), "--model", str(tiny_llm_path), "hi"], "size 32.*hidden size is 64"),
        (["--model", str(tmp_path / "missing-model"), "hi"], "not found"),
        (["--model", str(tiny_llm_path), "--prompts-file", str(tmp_path / "none.json")], "not found"),
    ):
        assert main(["generate", *args]) == 2, args
        err = capsys.readouterr().err
        assert re.search(f"mara generate: error: .*{message}", err), err


def test_a_greedy_draw_makes_sampled_decisions_greedy_and_keeps_the_agents_candidates(tiny_llm):
    """Temperature 0 (or top-k 1) is a deterministic answer the agent still decides: its
    greedy decisions over its own candidate set, the same answers as greedy decisions."""
    from envs.mdp import Draw

    torch.manual_seed(1)
    actor = Actor(state_dim=tiny_llm.hidden_size, hidden_size=16)
    sampling = SamplingConfig(max_new_tokens=8)
    greedy = AlignedGenerator(tiny_llm, actor, sampling=sampling, greedy=True).generate(PROMPTS)
    for draw in (Draw(temperature=0), Draw(top_k=1)):
        drawn = AlignedGenerator(tiny_llm, actor, sampling=sampling, greedy=False, draw=draw).generate(PROMPTS)
        assert [a.text for a in drawn] == [a.text for a in greedy]
        assert all(a.num_decisions > 0 for a in drawn)
    # A greedy draw's sampled baseline is the upstream's greedy answer.
    gen = AlignedGenerator(tiny_llm, actor, sampling=SamplingConfig(max_new_tokens=8, temperature=1.5),
                           draw=Draw(temperature=0))
    assert gen.generate_upstream(PROMPTS, sample=True, seed=5) == gen.generate_upstream(PROMPTS)


def test_a_sampled_continuation_draws_within_the_candidate_set_as_the_draw_says(tiny_llm):
    """Past the horizon the upstream samples from the agent's candidate set; a draw with
    top-p 0.01 keeps only its most likely token there: the greedy continuation."""
    from envs.mdp import Draw

    sampling = SamplingConfig(max_new_tokens=10)
    actor = always_reject_actor(tiny_llm.hidden_size)
    greedy = AlignedGenerator(tiny_llm, actor, sampling=sampling, horizon=2, continuation="greedy").generate(PROMPTS)
    narrow = AlignedGenerator(tiny_llm, actor, sampling=sampling, horizon=2, continuation="sampled",
                              greedy=False, draw=Draw(top_p=0.01)).generate(PROMPTS)
    sampled = AlignedGenerator(tiny_llm, actor, sampling=sampling, horizon=2, continuation="sampled",
                               greedy=False, draw=Draw(temperature=2.0)).generate(PROMPTS)
    assert [a.text for a in narrow] == [a.text for a in greedy]
    assert [a.text for a in sampled] != [a.text for a in greedy]
    assert all(a.num_decisions > 0 for a in narrow)


def test_answer_log_probs_score_only_the_answer_and_match_a_full_forward(tiny_llm):
    """The fluency pass keeps logits only where they predict answer tokens and splits batches
    by a token budget; each answer's log-probabilities equal those of a plain full forward."""
    from envs.generation import _answer_ids, _forward_groups, answer_token_log_probs

    prompts = [PROMPTS[0], PROMPTS[1] * 5, PROMPTS[2]]
    answers = ["Flour, water and time.", "", "Because of Rayleigh scattering of sunlight."]
    expected = []
    for prompt, answer in zip(prompts, answers):
        prompt_ids, answer_ids = _answer_ids(tiny_llm, prompt, answer)
        ids = torch.tensor([prompt_ids + answer_ids])
        logp = torch.log_softmax(tiny_llm.model(input_ids=ids).logits.float()[0, :-1], -1)
        expected.append(logp[len(prompt_ids) - 1:].gather(-1, ids[0, len(prompt_ids):, None])[:, 0])
    for budget in (8192, 64):  # all rows in one forward; one row per forward
        got = answer_token_log_probs(tiny_llm, prompts, answers, batch_size=3, tokens_per_forward=budget)
        assert [len(g) for g in got] == [len(e) for e in expected] and len(got[1]) == 0
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, atol=1e-4, rtol=1e-4)
    assert _forward_groups([10, 10, 10, 50, 5], batch_size=2, tokens_per_forward=60) == [[0, 1], [2], [3], [4]]
    assert _forward_groups([100], batch_size=8, tokens_per_forward=10) == [[0]]  # a longer row goes alone
