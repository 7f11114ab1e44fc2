"""Agent files: our safetensors format, the reference .pth format, and bad files."""

from __future__ import annotations

import pickle

import pytest
import torch


from core.agent_file import (AgentFileError, agent_state_features, load_agent, load_warm_start, read_agent_metadata,
                             save_agent, update_agent_metadata)
from core.networks import Actor, TwinCritic
from core.state_features import state_size


def test_actor_and_critic_shapes():
    actor, critic = Actor(state_dim=16, hidden_size=32), TwinCritic(state_dim=16, hidden_size=32)
    states = torch.randn(5, 16)
    probs = actor(states)
    assert probs.shape == (5, 2)
    torch.testing.assert_close(probs.sum(-1), torch.ones(5))
    q1, q2 = critic(states)
    assert q1.shape == q2.shape == (5, 2)
    assert not torch.equal(q1, q2)  # independent heads
    # about 4.5M parameters at d = 4096, as in the paper
    assert 4.4e6 < sum(p.numel() for p in Actor(4096).parameters()) < 4.6e6


def test_save_and_load_round_trip_with_metadata(tmp_path):
    actor = Actor(state_dim=16, hidden_size=32)
    path = save_agent(actor, tmp_path / "agent.safetensors", upstream_model="some/model")
    meta = read_agent_metadata(path)
    assert meta["state_dim"] == "16" and meta["hidden_size"] == "32" and meta["upstream_model"] == "some/model"
    loaded = load_agent(path, model_hidden_size=16)
    states = torch.randn(3, 16)
    torch.testing.assert_close(loaded(states), actor(states))


def test_mismatched_state_dim_names_both_numbers(tmp_path):
    path = save_agent(Actor(state_dim=16, hidden_size=32), tmp_path / "agent.safetensors")
    with pytest.raises(ValueError, match=r"16.*576|576.*16"):
        load_agent(path, model_hidden_size=576)


def test_reference_pth_checkpoint_imports(tmp_path):
    reference = Actor(state_dim=24, hidden_size=1024)
    path = tmp_path / "actor.pth"
    torch.save(reference.state_dict(), path)  # the reference's key names: ln, linear1, linear2, output_linear
    loaded = load_agent(path, model_hidden_size=24)
    states = torch.randn(4, 24)
    torch.testing.assert_close(loaded(states), reference(states))


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"linear1.weight": _Payload()}, f)
    with pytest.raises(AgentFileError, match="cannot read"):
        load_agent(path)


def test_missing_unreadable_and_wrong_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_agent(tmp_path / "nope.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(AgentFileError, match="cannot read"):
        load_agent(garbage)
    other = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(2)}, other)
    with pytest.raises(AgentFileError, match="missing tensors"):
        load_agent(other)


def test_an_agent_file_carries_the_decision_rule_it_recommends(tmp_path, capsys, tiny_llm_path):
    """`mara agent --recommend-decisions` writes it; generate, eval and serve use it unless told otherwise."""
    from cli.main import main as mara
    from core.agent_file import resolve_decisions
    from envs.generation import AlignedGenerator

    actor = Actor(state_dim=64, hidden_size=8)
    path = save_agent(actor, tmp_path / "agent.safetensors", upstream_model=str(tiny_llm_path))
    assert resolve_decisions("agent", path) == "greedy"  # nothing recommended
    assert mara(["agent", str(path), "--recommend-decisions", "sampled"]) == 0
    assert '"decisions": "sampled"' in capsys.readouterr().out
    assert read_agent_metadata(path)["decisions"] == "sampled" and read_agent_metadata(path)["state_dim"] == "64"
    torch.testing.assert_close(load_agent(path).state_dict(), actor.state_dict())  # the weights unchanged
    assert [p.name for p in tmp_path.iterdir()] == ["agent.safetensors"]  # rewritten in place, atomically
    assert resolve_decisions("agent", path) == "sampled" and resolve_decisions("greedy", path) == "greedy"
    assert not AlignedGenerator.from_paths(agent=str(path), device="cpu").greedy
    assert AlignedGenerator.from_paths(agent=str(path), device="cpu", decisions="greedy").greedy
    assert resolve_decisions("agent", "untrained") == "greedy"
    with pytest.raises(ValueError, match="decisions must be one of"):
        resolve_decisions("sometimes", path)
    # A file that is not an agent is refused before anything is written.
    (tmp_path / "notes.safetensors").write_bytes(b"not a safetensors file")
    assert mara(["agent", str(tmp_path / "notes.safetensors"), "--recommend-decisions", "greedy"]) == 2
    assert (tmp_path / "notes.safetensors").read_bytes() == b"not a safetensors file"


def test_an_agent_file_carries_the_horizon_it_recommends(tmp_path, capsys, tiny_llm_path):
    """`mara agent --recommend-horizon` writes how many tokens the agent decides; generation uses it."""
    from cli.main import main as mara
    from core.agent_file import resolve_horizon
    from envs.generation import AlignedGenerator

    path = save_agent(Actor(state_dim=64, hidden_size=8), tmp_path / "agent.safetensors",
                      upstream_model=str(tiny_llm_path))
    assert resolve_horizon("agent", path) is None  # nothing recommended: every token
    assert mara(["agent", str(path), "--recommend-horizon", "12"]) == 0
    assert '"horizon": "12"' in capsys.readouterr().out
    assert resolve_horizon("agent", path) == 12 and resolve_horizon(None, path) == 12
    assert resolve_horizon("all", path) is None and resolve_horizon(3, path) == 3 and resolve_horizon("5", path) == 5
    assert AlignedGenerator.from_paths(agent=str(path), device="cpu").horizon == 12
    assert AlignedGenerator.from_paths(agent=str(path), device="cpu", horizon="all").horizon is None
    assert resolve_horizon("agent", "untrained") is None
    for bad in ("-1", "soon", "1.5"):
        with pytest.raises(ValueError, match="horizon must be"):
            resolve_horizon(bad, path)
    assert mara(["agent", str(path), "--recommend-horizon", "agent"]) == 2  # only a number or 'all'
    assert mara(["agent", str(path), "--recommend-horizon", "all"]) == 0
    assert resolve_horizon("agent", path) is None
    update_agent_metadata(path, horizon="tomorrow")  # a file edited by hand
    with pytest.raises(AgentFileError, match="unknown horizon"):
        resolve_horizon("agent", path)


def test_an_agent_file_carries_the_accept_threshold_it_recommends(tmp_path, capsys, tiny_llm_path):
    """`mara agent --recommend-accept-threshold` writes how sure a rejection must be; generation uses it."""
    from cli.main import main as mara
    from core.agent_file import resolve_accept_threshold
    from envs.generation import AlignedGenerator

    path = save_agent(Actor(state_dim=64, hidden_size=8), tmp_path / "agent.safetensors",
                      upstream_model=str(tiny_llm_path))
    assert resolve_accept_threshold("agent", path) == 0.5  # nothing recommended: the agent's mode
    assert mara(["agent", str(path), "--recommend-accept-threshold", "0.2"]) == 0
    assert '"accept_threshold": "0.2"' in capsys.readouterr().out
    assert resolve_accept_threshold("agent", path) == resolve_accept_threshold(None, path) == 0.2
    assert resolve_accept_threshold(0.7, path) == 0.7 and resolve_accept_threshold("1", path) == 1.0
    assert AlignedGenerator.from_paths(agent=str(path), device="cpu").accept_threshold == 0.2
    assert AlignedGenerator.from_paths(agent=str(path), device="cpu", accept_threshold=0.5).accept_threshold == 0.5
    assert resolve_accept_threshold("agent", "untrained") == 0.5
    for bad in ("0", "-0.1", "1.5", "nan", "often", True):
        with pytest.raises(ValueError, match="accept threshold must be"):
            resolve_accept_threshold(bad, path)
    assert mara(["agent", str(path), "--recommend-accept-threshold", "agent"]) == 2  # only a number
    for bad in ("0", "2"):
        with pytest.raises(SystemExit):  # argparse's own refusal
            mara(["agent", str(path), "--recommend-accept-threshold", bad])
    assert "accept threshold must be a number in (0, 1]" in capsys.readouterr().err
    assert resolve_accept_threshold("agent", path) == 0.2  # nothing was written
    update_agent_metadata(path, accept_threshold="sometimes")  # a file edited by hand
    with pytest.raises(AgentFileError, match="unknown accept threshold"):
        resolve_accept_threshold("agent", path)


def test_an_agent_file_carries_the_request_gate_it_recommends(tmp_path, capsys, tiny_llm_path):
    """`mara agent --recommend-request-gate` writes which requests the agent may touch; generation
    loads that gate, and a gate file that is not there is refused before anything is loaded."""
    from cli.generator_args import generator_from_args
    from cli.main import build_parser
    from cli.main import main as mara
    from core.agent_file import resolve_request_gate
    from rewards.request_gate import RequestGate, request_gate_file

    path = save_agent(Actor(state_dim=64, hidden_size=8), tmp_path / "agent.safetensors",
                      upstream_model=str(tiny_llm_path))
    assert resolve_request_gate("agent", path) == resolve_request_gate(None, path) == "off"  # nothing recommended
    def generator_gate():
        args = build_parser().parse_args(["generate", "--agent", str(path), "--device", "cpu", "hello"])
        return generator_from_args(args).request_gate

    assert generator_gate() is None
    assert mara(["agent", str(path), "--recommend-request-gate", "embedded"]) == 0
    assert '"request_gate": "embedded"' in capsys.readouterr().out
    assert resolve_request_gate("agent", path) == "embedded" and resolve_request_gate("off", path) == "off"
    gate = generator_gate()
    assert isinstance(gate, RequestGate) and gate.path.endswith("request_gate.safetensors")
    assert resolve_request_gate("agent", "untrained") == "off"
    assert mara(["agent", str(path), "--recommend-request-gate", "agent"]) == 2  # not itself
    with pytest.raises(FileNotFoundError, match="request gate: response-class head file not found"):
        request_gate_file(str(tmp_path / "missing.safetensors"), path)
    for bad in ("", "  ", 3):
        with pytest.raises(ValueError, match="request gate must be"):
            resolve_request_gate(bad, path)
    update_agent_metadata(path, request_gate=" ")  # a file edited by hand
    with pytest.raises(AgentFileError, match="unknown request gate"):
        resolve_request_gate("agent", path)


def test_an_agent_file_carries_where_a_decline_ends(tmp_path, capsys, tiny_llm_path):
    """`mara agent --recommend-decline-sentences N` writes how many sentences an answer the agent
    stepped into keeps; generation uses it unless told otherwise."""
    from cli.main import main as mara
    from core.agent_file import resolve_decline_sentences
    from envs.generation import AlignedGenerator

    path = save_agent(Actor(state_dim=64, hidden_size=8), tmp_path / "agent.safetensors",
                      upstream_model=str(tiny_llm_path))
    assert resolve_decline_sentences("agent", path) is None  # nothing recommended: answers run to their length
    assert mara(["agent", str(path), "--recommend-decline-sentences", "3"]) == 0
    assert '"decline_sentences": "3"' in capsys.readouterr().out
    assert resolve_decline_sentences("agent", path) == resolve_decline_sentences(None, path) == 3
    assert resolve_decline_sentences("off", path) is None and resolve_decline_sentences("2", path) == 2
    assert AlignedGenerator.from_paths(agent=str(path), device="cpu").decline_sentences == 3
    assert AlignedGenerator.from_paths(agent=str(path), device="cpu", decline_sentences="off").decline_sentences is None
    for bad in ("0", "-1", "two", "", True, 1.5):
        with pytest.raises(ValueError, match="decline sentences must be a number of sentences >= 1"):
            resolve_decline_sentences(bad, path)
    assert mara(["agent", str(path), "--recommend-decline-sentences", "agent"]) == 2  # not itself
    update_agent_metadata(path, decline_sentences="many")  # a file edited by hand
    with pytest.raises(AgentFileError, match="unknown decline sentences"):
        resolve_decline_sentences("agent", path)


def test_an_agent_file_records_what_its_states_hold(tmp_path):
    """core/state_features.py: the candidate's state (d numbers), or that and the prompt's (2d).
    The file says which, so an agent of a 2d-wide upstream is not taken for a d-wide one's."""
    assert state_size("candidate+prompt", 576) == 1152
    plain = save_agent(Actor(state_dim=32, hidden_size=8), tmp_path / "plain.safetensors")
    both = save_agent(Actor(state_dim=32, hidden_size=8), tmp_path / "both.safetensors",
                      state_features="candidate+prompt")
    assert agent_state_features(plain) == "candidate" and agent_state_features(both) == "candidate+prompt"
    assert load_agent(plain, model_hidden_size=32).state_dim == load_agent(both, model_hidden_size=16).state_dim == 32
    with pytest.raises(ValueError, match=r"size 32 \(candidate\).*hidden size is 16: its candidate states are of size 16"):
        load_agent(plain, model_hidden_size=16)
    with pytest.raises(ValueError, match=r"hidden size is 32: its candidate\+prompt states are of size 64"):
        load_agent(both, model_hidden_size=32)
    unknown = save_agent(Actor(state_dim=32, hidden_size=8), tmp_path / "unknown.safetensors", state_features="prompt")
    with pytest.raises(ValueError, match="records unknown state features 'prompt'"):
        load_agent(unknown, model_hidden_size=16)
    # a warm start must read the run's states: the same features, the same upstream
    with pytest.raises(AgentFileError, match=r"reads candidate\+prompt states, which this run's "
                                             r"rollout.state_features candidate does not hold"):
        load_warm_start(both, state_dim=32, hidden_size=8)
    with pytest.raises(AgentFileError, match="reads states of size 32, but this run's states are of size 64"):
        load_warm_start(both, state_dim=64, hidden_size=8, state_features="candidate+prompt")
    actor, alpha = load_warm_start(both, state_dim=32, hidden_size=8, state_features="candidate+prompt")
    assert actor.state_dim == 32 and alpha is None


def test_a_warm_start_widens_an_agent_to_a_layout_with_more_parts(tmp_path):
    """An agent of the paper's state starts a run that also reads the candidate's rank and
    log-probability (and the prompt): its weights move to where their parts sit and the new
    inputs start with zero weight, so it decides as before up to the LayerNorm's statistics."""
    d = 32
    torch.manual_seed(0)
    old = Actor(state_dim=d, hidden_size=8)
    with torch.no_grad():  # a trained LayerNorm is not the identity
        old.ln.weight.uniform_(0.5, 1.5)
        old.ln.bias.uniform_(-0.1, 0.1)
    path = save_agent(old, tmp_path / "paper.safetensors", alpha="0.4")
    wide_features = "candidate+prompt+rank+logp"
    assert state_size(wide_features, d) == 2 * d + 4 and state_size("candidate+rank+logp", 576) == 580
    actor, alpha = load_warm_start(path, state_dim=2 * d + 4, hidden_size=8, state_features=wide_features)
    assert actor.state_dim == 2 * d + 4 and alpha == pytest.approx(0.4)
    assert (actor.linear1.weight[:, d:] == 0).all() and (actor.linear1.weight[:, :d] == old.linear1.weight).all()
    # with the candidate's rank and log-probability only (4 new inputs among 36) it decides as before
    scalars, _ = load_warm_start(path, state_dim=d + 4, hidden_size=8, state_features="candidate+rank+logp")
    states = torch.randn(512, d)
    extra = torch.cat([torch.randint(0, 2, (512, 1)).float(), torch.rand(512, 1), -3 * torch.rand(512, 2)], dim=1)
    before, after = old.accept_probability(states), scalars.accept_probability(torch.cat([states, extra], dim=1))
    assert ((before >= 0.5) == (after >= 0.5)).float().mean() > 0.9
    assert (before - after).abs().mean() < 0.05
    with pytest.raises(AgentFileError, match="reads states of size 32, but this run's states are of size 40"):
        load_warm_start(path, state_dim=40, hidden_size=8, state_features="candidate")
    rank = save_agent(Actor(state_dim=d + 2, hidden_size=8), tmp_path / "rank.safetensors", state_features="candidate+rank")
    with pytest.raises(AgentFileError, match=r"reads candidate\+rank states, which this run's rollout.state_features "
                                             r"candidate\+logp does not hold"):
        load_warm_start(rank, state_dim=d + 2, hidden_size=8, state_features="candidate+logp")
