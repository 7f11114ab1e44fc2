"""Tests of learner/: SAC losses on hand-made batches, training, checkpoints, Ray actor."""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict

import numpy as np
import pytest
import torch
from torch import nn


from helpers.learning import learner_from_checkpoint

from core.agent_file import load_agent, read_agent_metadata
from core.config import LearnerConfig, SACConfig
from core.contracts import TransitionBatch
from core.networks import Actor, TwinCritic
from learner.learner import MANIFEST_FILE, TENSORS_FILE, SACLearner, resolve_device
from learner.sac import (
    TensorBatch,
    actor_loss,
    alpha_loss,
    batch_to_tensors,
    critic_loss,
    init_sac_state,
    sac_update,
    soft_update,
)
from learner.service import LearnerService, latest_checkpoint

D = 16
HIDDEN = 32
SMALL = SACConfig(hidden_size=HIDDEN, batch_size=32)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """These networks are tiny: a second intra-op thread only adds spin-waiting on a
    shared 2-core machine (7 ms vs 22 ms per update here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_batch(rng: np.random.Generator, n: int = 32, d: int = D, version: int = 0) -> TransitionBatch:
    return TransitionBatch.random(rng, n, d, version=version)


def tensors(states, actions, rewards, next_states, dones) -> TensorBatch:
    return TensorBatch(
        states=torch.as_tensor(states, dtype=torch.float32),
        actions=torch.as_tensor(actions, dtype=torch.int64),
        rewards=torch.as_tensor(rewards, dtype=torch.float32),
        next_states=torch.as_tensor(next_states, dtype=torch.float32),
        dones=torch.as_tensor(dones, dtype=torch.float32),
    )


class FixedPolicy(nn.Module):
    """An 'actor' whose pi(.|s) is the same given distribution for every state."""

    def __init__(self, probs):
        super().__init__()
        self.log_probs = nn.Parameter(torch.log(torch.tensor(probs, dtype=torch.float32)))

    def logits(self, states):
        return self.log_probs.expand(states.shape[0], 2)


class FixedCritic(nn.Module):
    """Q1(s, .) and Q2(s, .) are the same given rows for every state."""

    def __init__(self, q1, q2):
        super().__init__()
        self.q1 = nn.Parameter(torch.tensor(q1, dtype=torch.float32))
        self.q2 = nn.Parameter(torch.tensor(q2, dtype=torch.float32))

    def forward(self, states):
        b = states.shape[0]
        return self.q1.expand(b, 2), self.q2.expand(b, 2)


# --- config -----------------------------------------------------------------------------


def test_config_defaults_and_validation():
    cfg = SACConfig()
    assert (cfg.gamma, cfg.tau, cfg.actor_lr, cfg.critic_lr, cfg.alpha_lr) == (0.99, 0.005, 3e-3, 3e-3, 3e-3)
    assert (cfg.init_alpha, cfg.grad_clip, cfg.batch_size, cfg.hidden_size) == (0.01, 0.5, 1024, 1024)
    assert cfg.target_entropy == pytest.approx(0.6 * math.log(2))
    with pytest.raises(ValueError, match="gamma"):
        SACConfig(gamma=1.5)
    with pytest.raises(ValueError, match="init_alpha"):
        SACConfig(init_alpha=0.0)
    with pytest.raises(ValueError, match="batch_size"):
        SACConfig(batch_size=0)
    with pytest.raises(ValueError, match="publish_every"):
        LearnerConfig(publish_every=0)
    with pytest.raises(ValueError, match="device"):
        LearnerConfig(device="tpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


# --- losses on hand-made batches -----------------------------------------------------------


def test_critic_target_is_reward_when_done():
    state = init_sac_state(D, SMALL, "cpu", seed=0)
    rng = np.random.default_rng(0)
    b = random_batch(rng, n=8)
    b.dones[:] = 1.0
    out = critic_loss(state.critic, state.target_critic, state.actor,
                      batch_to_tensors(b, "cpu"), alpha=0.5, gamma=0.99)
    torch.testing.assert_close(out.q_target, torch.from_numpy(b.rewards))


def test_critic_loss_matches_hand_computation():
    # pi(.|s') = (0.25, 0.75); Q1' = (1, 3), Q2' = (2, 2) -> min = (1, 2); alpha = 0.1.
    actor = FixedPolicy([0.25, 0.75])
    target = FixedCritic([1.0, 3.0], [2.0, 2.0])
    online = FixedCritic([0.5, -1.0], [0.0, 1.0])
    batch = tensors(np.zeros((2, 4)), [0, 1], [1.0, -2.0], np.zeros((2, 4)), [0.0, 1.0])
    out = critic_loss(online, target, actor, batch, alpha=0.1, gamma=0.9)
    entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    v_next = 0.25 * 1.0 + 0.75 * 2.0 + 0.1 * entropy  # sum_a pi [minQ' - alpha log pi]
    y = [1.0 + 0.9 * v_next, -2.0]  # the second transition is terminal
    torch.testing.assert_close(out.q_target, torch.tensor(y))
    q1_taken, q2_taken = [0.5, -1.0], [0.0, 1.0]  # Q(s, a) for a = 0 then a = 1
    expected = 0.5 * np.mean([(q - t) ** 2 for q, t in zip(q1_taken, y)]) \
        + 0.5 * np.mean([(q - t) ** 2 for q, t in zip(q2_taken, y)])
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)


def test_actor_loss_value_and_direction():
    actor = FixedPolicy([0.25, 0.75])
    critic = FixedCritic([1.0, 3.0], [2.0, 2.0])  # min Q = (1, 2)
    out = actor_loss(actor, critic, torch.zeros(3, 4), alpha=0.1)
    entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert out.loss.item() == pytest.approx(-(0.1 * entropy + 0.25 * 1 + 0.75 * 2), rel=1e-6)
    assert out.entropy.mean().item() == pytest.approx(entropy, rel=1e-6)

    # A real actor moves toward the higher-Q action (accept); the critic gets no gradient.
    torch.manual_seed(0)
    real = Actor(4, hidden_size=HIDDEN)
    critic = FixedCritic([0.0, 1.0], [0.0, 1.5])
    states = torch.randn(16, 4)
    before = real(states)[:, 1].mean().item()
    opt = torch.optim.SGD(real.parameters(), lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        actor_loss(real, critic, states, alpha=0.01).loss.backward()
        opt.step()
    assert real(states)[:, 1].mean().item() > before
    assert critic.q1.grad is None and critic.q2.grad is None


def test_alpha_moves_toward_target_entropy():
    target = 0.6 * math.log(2)
    assert alpha_loss(torch.tensor([math.log(0.5)]), torch.tensor([0.6]), 0.4).item() == pytest.approx(0.1)
    for entropy, direction in ((0.69, -1), (0.1, +1)):  # above target -> lower alpha
        log_alpha = torch.tensor([math.log(0.01)], requires_grad=True)
        opt = torch.optim.Adam([log_alpha], lr=3e-3)
        for _ in range(3):
            opt.zero_grad()
            alpha_loss(log_alpha, torch.full((8,), entropy), target).backward()
            opt.step()
        assert direction * (log_alpha.exp().item() - 0.01) > 0


def test_soft_update_tau_one_copies_and_zero_keeps():
    torch.manual_seed(0)
    source, target = TwinCritic(D, HIDDEN), TwinCritic(D, HIDDEN)
    original = [p.clone() for p in target.parameters()]
    soft_update(target, source, tau=0.0)
    for p, o in zip(target.parameters(), original):
        torch.testing.assert_close(p, o)
    soft_update(target, source, tau=0.25)
    for p, o, s in zip(target.parameters(), original, source.parameters()):
        torch.testing.assert_close(p, 0.75 * o + 0.25 * s)
    soft_update(target, source, tau=1.0)
    for p, s in zip(target.parameters(), source.parameters()):
        torch.testing.assert_close(p, s)


# --- whole updates ---------------------------------------------------------------------------


def test_sac_update_steps_everything_and_polyak_averages_the_target():
    cfg = SACConfig(hidden_size=HIDDEN, batch_size=32, tau=0.1)
    state = init_sac_state(D, cfg, "cpu", seed=0)
    before = {name: [p.detach().clone() for p in getattr(state, name).parameters()]
              for name in ("actor", "critic", "target_critic")}
    log_alpha = state.log_alpha.item()
    state, metrics = sac_update(state, batch_to_tensors(random_batch(np.random.default_rng(0)), "cpu"), cfg)
    assert state.updates == metrics.updates == 1
    assert state.log_alpha.item() != log_alpha and metrics.alpha == pytest.approx(state.alpha)
    for name in ("actor", "critic"):
        assert any(not torch.equal(a, b) for a, b in zip(before[name], getattr(state, name).parameters()))
    for old, new, online in zip(before["target_critic"], state.target_critic.parameters(),
                                state.critic.parameters()):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * online)
    assert all(math.isfinite(v) for v in asdict(metrics).values() if v == v)



def test_a_warm_start_loads_the_actor_and_lets_the_critics_learn_first(tmp_path):
    """learner.init_agent + sac.actor_warmup_updates: the actor starts as the file's and stays so
    for the warm-up updates while the critics learn; then it learns too."""
    source = SACLearner(state_dim=D, sac=SMALL, device="cpu", seed=7)
    path = source.export_agent(tmp_path / "agent.safetensors")
    cfg = SACConfig(hidden_size=HIDDEN, batch_size=32, actor_warmup_updates=3)
    learner = SACLearner(state_dim=D, sac=cfg, device="cpu", seed=0)
    learner.load_actor(path)
    loaded = {k: v.clone() for k, v in learner.state.actor.state_dict().items()}
    assert all(torch.equal(loaded[k], v) for k, v in source.state.actor.state_dict().items())
    critic = [p.detach().clone() for p in learner.state.critic.parameters()]
    log_alpha = learner.state.log_alpha.item()
    batch = random_batch(np.random.default_rng(0))
    for _ in range(3):
        metrics = learner.update(batch)
        assert metrics.actor_grad_norm == 0.0 and math.isfinite(metrics.actor_loss)
    assert all(torch.equal(loaded[k], v) for k, v in learner.state.actor.state_dict().items())
    assert learner.state.log_alpha.item() == log_alpha
    assert any(not torch.equal(a, b) for a, b in zip(critic, learner.state.critic.parameters()))
    learner.update(batch)  # the fourth update moves the actor
    assert any(not torch.equal(loaded[k], v) for k, v in learner.state.actor.state_dict().items())
    with pytest.raises(ValueError, match="reads states of size 16, but this run.s states are of size 17"):
        SACLearner(state_dim=D + 1, sac=SMALL, device="cpu").load_actor(path)
    with pytest.raises(ValueError, match="hidden size 32, but sac.hidden_size is 64"):
        SACLearner(state_dim=D, sac=SACConfig(hidden_size=64, batch_size=32), device="cpu").load_actor(path)
    with pytest.raises(ValueError, match="actor_warmup_updates"):
        SACConfig(actor_warmup_updates=-1)


def test_a_warm_start_takes_the_temperature_the_agent_file_records(tmp_path):
    """An agent file records its learner's alpha; a warm start continues at it (not at
    sac.init_alpha), and a file without it keeps sac.init_alpha."""
    from core.agent_file import read_agent_metadata, update_agent_metadata

    source = SACLearner(state_dim=D, sac=SACConfig(hidden_size=HIDDEN, batch_size=32, init_alpha=0.7),
                        device="cpu", seed=7)
    path = source.export_agent(tmp_path / "agent.safetensors")
    assert float(read_agent_metadata(path)["alpha"]) == pytest.approx(0.7)
    learner = SACLearner(state_dim=D, sac=SMALL, device="cpu", seed=0)
    assert learner.state.alpha == pytest.approx(SMALL.init_alpha)
    learner.load_actor(path)
    assert learner.state.alpha == pytest.approx(0.7)

    update_agent_metadata(path, alpha="")  # an older file: no temperature recorded
    learner = SACLearner(state_dim=D, sac=SMALL, device="cpu", seed=0)
    learner.load_actor(path)
    assert learner.state.alpha == pytest.approx(SMALL.init_alpha)
    for bad in ("nan", "-1", "warm"):
        update_agent_metadata(path, alpha=bad)
        with pytest.raises(ValueError, match=f"alpha = {bad} is not a positive number"):
            SACLearner(state_dim=D, sac=SMALL, device="cpu").load_actor(path)


def test_learns_to_accept_when_accepting_pays():
    rng = np.random.default_rng(1)
    n = 64
    states = rng.standard_normal((n, D), dtype=np.float32)
    actions = np.tile([0, 1], n // 2).astype(np.int64)
    batch = TransitionBatch(states=states, actions=actions,
                            rewards=np.where(actions == 1, 1.0, -1.0).astype(np.float32),
                            next_states=np.zeros_like(states), dones=np.ones(n, np.float32))
    learner = SACLearner(state_dim=D, sac=SACConfig(hidden_size=HIDDEN, batch_size=n),
                         device="cpu", seed=0)
    first = learner.update(batch)
    for _ in range(299):
        last = learner.update(batch)
    assert last.updates == 300
    assert last.accept_prob > 0.8 > first.accept_prob
    assert last.critic_loss < 0.05
    q1, q2 = learner.state.critic(torch.from_numpy(states))
    assert q1[:, 1].mean().item() == pytest.approx(1.0, abs=0.15)
    assert q1[:, 0].mean().item() == pytest.approx(-1.0, abs=0.15)
    assert math.isfinite(last.alpha) and last.alpha > 0


def test_policy_version_lag_and_metrics():
    learner = SACLearner(state_dim=D, sac=SMALL, device="cpu")
    rng = np.random.default_rng(0)
    learner.publish()
    learner.publish()
    metrics = learner.update(random_batch(rng, version=0))
    assert metrics.policy_version_lag == pytest.approx(2.0)
    empty = random_batch(rng)
    empty.policy_versions = np.zeros(0, np.int64)
    assert math.isnan(learner.update(empty).policy_version_lag)


def test_batch_checks_and_readonly_arrays():
    rng = np.random.default_rng(0)
    b = random_batch(rng, n=8)
    for arr in (b.states, b.next_states, b.actions, b.rewards, b.dones):
        arr.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = batch_to_tensors(b, "cpu", state_dim=D)
    assert t.states.shape == (8, D) and t.actions.dtype == torch.int64
    with pytest.raises(ValueError, match=f"size {D}.*expects 20"):
        batch_to_tensors(b, "cpu", state_dim=20)
    bad = random_batch(rng, n=8)
    bad.actions[0] = 2
    with pytest.raises(ValueError, match="actions"):
        batch_to_tensors(bad, "cpu")


def test_publish_versions_and_copies():
    learner = SACLearner(state_dim=D, sac=SMALL, device="cpu")
    assert learner.version == 0
    version, weights = learner.publish()
    assert version == learner.version == 1
    assert set(weights) == set(learner.state.actor.state_dict())
    snapshot = {k: v.copy() for k, v in weights.items()}
    learner.update(random_batch(np.random.default_rng(0)))
    current = learner.actor_weights()
    assert any(not np.array_equal(current[k], snapshot[k]) for k in weights)  # it did learn
    for k in weights:  # published arrays are copies, untouched by later updates
        np.testing.assert_array_equal(weights[k], snapshot[k])


# --- checkpoints -----------------------------------------------------------------------------


def _state_tensors(learner: SACLearner) -> dict[str, torch.Tensor]:
    s = learner.state
    out = {f"actor/{k}": v for k, v in s.actor.state_dict().items()}
    out.update({f"critic/{k}": v for k, v in s.critic.state_dict().items()})
    out.update({f"target/{k}": v for k, v in s.target_critic.state_dict().items()})
    out["log_alpha"] = s.log_alpha.detach()
    for name in ("actor_optimizer", "critic_optimizer", "alpha_optimizer"):
        for idx, st in getattr(s, name).state_dict()["state"].items():
            for key, value in st.items():
                out[f"{name}/{idx}/{key}"] = value
    return out


def test_checkpoint_roundtrip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    learner = SACLearner(state_dim=D, sac=SMALL, device="cpu", seed=3, upstream_model="tiny")
    for _ in range(3):
        learner.update(random_batch(rng))
    learner.publish()
    learner.save_checkpoint(tmp_path / "ckpt")
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {
        "learner.safetensors", "learner.json", "agent.safetensors"}

    restored = SACLearner(state_dim=D, sac=SMALL, device="cpu", seed=99)
    restored.restore_checkpoint(tmp_path / "ckpt")
    other = learner_from_checkpoint(tmp_path / "ckpt", state_dim=D)
    for copy in (restored, other):
        assert (copy.updates, copy.version) == (3, 1)
        a, b = _state_tensors(learner), _state_tensors(copy)
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert other.upstream_model == "tiny"

    batch = random_batch(rng)
    m0, m1 = learner.update(batch), restored.update(batch)
    assert m0 == m1 and m1.updates == 4
    for k, v in _state_tensors(learner).items():
        torch.testing.assert_close(v, _state_tensors(restored)[k], rtol=0, atol=0, msg=k)

    agent = load_agent(tmp_path / "ckpt" / "agent.safetensors", model_hidden_size=D)
    x = torch.from_numpy(batch.states)
    torch.testing.assert_close(agent(x), other.state.actor(x))


def test_a_learner_of_prompt_states_records_them_in_its_agents_and_checkpoints(tmp_path):
    learner = SACLearner(state_dim=D, sac=SMALL, device="cpu", state_features="candidate+prompt")
    learner.save_checkpoint(tmp_path / "ckpt")
    learner.export_agent(tmp_path / "agent.safetensors")
    for path in (tmp_path / "agent.safetensors", tmp_path / "ckpt" / "agent.safetensors"):
        assert read_agent_metadata(path)["state_features"] == "candidate+prompt"
        assert load_agent(path, model_hidden_size=D // 2).state_dim == D
    assert learner_from_checkpoint(tmp_path / "ckpt").state_features == "candidate+prompt"


def test_checkpoint_errors(tmp_path):
    learner = SACLearner(state_dim=D, sac=SMALL, device="cpu")
    learner.save_checkpoint(tmp_path / "ckpt")
    wrong = SACLearner(state_dim=24, sac=SMALL, device="cpu")
    with pytest.raises(ValueError, match=r"state_dim 16.*state_dim 24"):
        wrong.restore_checkpoint(tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"16.*24"):
        learner_from_checkpoint(tmp_path / "ckpt", state_dim=24)
    with pytest.raises(ValueError, match=r"hidden_size 32.*hidden_size 64"):
        SACLearner(state_dim=D, sac=SACConfig(hidden_size=64), device="cpu").restore_checkpoint(
            tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match="no learner checkpoint"):
        learner.restore_checkpoint(tmp_path / "nowhere")
    # the same size read otherwise: the paper's states of a 16-wide upstream, or an 8-wide one's with its prompt's
    prompts = SACLearner(state_dim=D, sac=SMALL, device="cpu", state_features="candidate+prompt")
    with pytest.raises(ValueError, match=r"agent of candidate states, but this learner's are candidate\+prompt"):
        prompts.restore_checkpoint(tmp_path / "ckpt")
    # A save interrupted between the tensors and the manifest is detected.
    learner.update(random_batch(np.random.default_rng(0)))
    manifest = (tmp_path / "ckpt" / MANIFEST_FILE).read_text()
    learner.save_checkpoint(tmp_path / "ckpt")
    (tmp_path / "ckpt" / MANIFEST_FILE).write_text(manifest)
    with pytest.raises(ValueError, match="torn"):
        learner.restore_checkpoint(tmp_path / "ckpt")
    (tmp_path / "ckpt" / TENSORS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=TENSORS_FILE):
        learner.restore_checkpoint(tmp_path / "ckpt")


# --- Ray actor ---------------------------------------------------------------------------------


def _fake_replay_cls(ray):
    @ray.remote
    class FakeReplay:
        """Random batches; every ``none_every``-th call returns None ("not yet"). Given the
        learner (``watch``), it notes the learner's update count when each call arrives."""

        def __init__(self, d: int, none_every: int = 0, seed: int = 0):
            self.rng = np.random.default_rng(seed)
            self.d, self.none_every, self.calls = d, none_every, 0
            self.learner, self.updates_at_call = None, []

        def watch(self, learner) -> None:
            self.learner = learner

        def sample(self, n: int, timeout_s: float = 0.0):
            import ray

            if self.learner is not None:
                self.updates_at_call.append(ray.get(self.learner.metrics.remote()).updates)
            self.calls += 1
            if self.none_every and self.calls % self.none_every == 0:
                return None
            # Self-contained (no helpers of this module): Ray workers cannot import tests.
            from core.contracts import TransitionBatch

            return TransitionBatch.random(self.rng, n, self.d, version=self.calls // 10)

        def stats(self):
            return self.calls, self.updates_at_call

    return FakeReplay


def _learner(ray, **kwargs):
    from actors.worker_group import start_actor

    return start_actor(LearnerService, {"num_cpus": 0, "max_concurrency": 4}, **kwargs)


def test_a_learner_service_with_init_agent_publishes_the_loaded_actor_first(ray_local, tmp_path):
    ray = ray_local
    source = SACLearner(state_dim=D, sac=SMALL, device="cpu", seed=7)
    path = source.export_agent(tmp_path / "agent.safetensors")
    learner = LearnerService(state_dim=D, sac=SMALL, config=LearnerConfig(device="cpu", init_agent=str(path)),
                             run_dir=str(tmp_path / "run"))  # in this process, as Ray builds it in an actor's
    version, _, ref = learner.latest_weights(None)
    assert version == 0
    weights = ray.get(ref)
    assert all(np.array_equal(weights[k], v.numpy()) for k, v in source.state.actor.state_dict().items())


def test_learner_service_runs_publishes_and_checkpoints(ray_local, tmp_path):
    ray = ray_local

    replay = _fake_replay_cls(ray).remote(D, none_every=3)
    config = LearnerConfig(publish_every=5, checkpoint_every=10, device="cpu", sample_timeout_s=0.0)
    sac = SACConfig(hidden_size=HIDDEN, batch_size=16)
    learner = _learner(ray, state_dim=D, sac=sac, config=config, run_dir=str(tmp_path / "run"))
    assert ray.get(learner.latest_weights.remote(None))[0] == 0  # initial weights, version 0

    stats = ray.get(learner.run.remote(replay, until_updates=20))
    assert stats.run_updates == stats.updates == 20 and not stats.running
    assert stats.version == 4 and stats.empty_samples >= 5
    assert 0 < stats.update_share <= 1 and stats.update_s + stats.wait_s <= stats.wall_s * 1.01
    calls, _ = ray.get(replay.stats.remote())
    assert calls == 20 + stats.empty_samples  # no wasted prefetch once until_updates is reached

    assert ray.get(learner.latest_weights.remote(4, stats.incarnation)) is None
    version, incarnation, ref = ray.get(learner.latest_weights.remote(2, stats.incarnation))
    assert incarnation == stats.incarnation and stats.restored is None
    assert version == 4
    actor = Actor(D, HIDDEN)
    actor.load_state_dict({k: torch.tensor(v) for k, v in ray.get(ref).items()})
    assert math.isfinite(stats.policy_version_lag) and stats.updates_per_second > 0

    found = latest_checkpoint(tmp_path / "run")
    assert found is not None and found.name == "update_000000020"

    # A new learner on the same run folder resumes (as after a Ray restart; built in this process,
    # as Ray would build it in an actor's).
    again = LearnerService(state_dim=D, sac=sac, config=config, run_dir=str(tmp_path / "run"))
    resumed = again.metrics()
    assert resumed.updates == 20 and resumed.restored == "update_000000020"
    version, incarnation, _ = again.latest_weights(4, stats.incarnation)
    assert version == 4 and incarnation == resumed.incarnation != stats.incarnation  # new to its workers
    # A learner of another state size cannot start from that folder: its constructor says why
    # (an actor whose constructor raised is not rebuilt by Ray).
    with pytest.raises(ValueError, match=f"state_dim {D}.*state_dim {D + 1}"):
        LearnerService(state_dim=D + 1, sac=sac, config=config, run_dir=str(tmp_path / "run"))
    for handle in (learner, replay):
        ray.kill(handle)


def test_a_stop_before_run_is_kept(ray_local):
    """The driver's stop can reach a learner that Ray rebuilt before the retried run does:
    that run must end at once, not train on forever."""
    ray = ray_local
    replay = _fake_replay_cls(ray).remote(D)
    learner = LearnerService(state_dim=D, sac=SACConfig(hidden_size=HIDDEN, batch_size=16),
                             config=LearnerConfig(device="cpu", sample_timeout_s=0.0))
    learner.stop()
    stats = learner.run(replay)
    assert stats.run_updates == 0 and not stats.running
    ray.kill(replay)


def test_learner_service_stop_serves_weights_while_running_and_prefetches(ray_local, tmp_path):
    ray = ray_local
    replay = _fake_replay_cls(ray).remote(256)
    config = LearnerConfig(publish_every=2, checkpoint_every=10_000, device="cpu", sample_timeout_s=0.0)
    # Updates big enough (~tens of ms) that a prefetched call clearly arrives during one.
    learner = _learner(ray, state_dim=256, sac=SACConfig(hidden_size=1024, batch_size=1024), config=config,
                       run_dir=str(tmp_path / "run"))
    ray.get([learner.metrics.remote(), replay.watch.remote(learner)])  # both started (slow on 2 cores)
    done = learner.run.remote(replay)
    deadline = time.time() + 60
    seen = None
    while time.time() < deadline:
        polled = ray.get(learner.latest_weights.remote(seen), timeout=60)  # served during run()
        if polled is not None:
            seen = polled[0]
        if ray.get(learner.metrics.remote()).updates >= 6 and seen:
            break
        time.sleep(0.02)
    assert seen and seen >= 1
    ray.get(learner.stop.remote())
    stats = ray.get(done, timeout=60)
    assert not stats.running and stats.updates >= 6
    assert (tmp_path / "run" / "checkpoints" / f"update_{stats.updates:09d}").is_dir()

    # Prefetch: the request for batch i + 1 reaches the replay before update i (on batch i)
    # has ended, i.e. while the learner has done at most i updates. Without prefetching the
    # request would follow update i, so this would never happen.
    _, updates_at_call = ray.get(replay.stats.remote())
    early = sum(updates <= i - 1 for i, updates in enumerate(updates_at_call) if i >= 1)
    assert early >= 0.5 * (len(updates_at_call) - 1)
    for handle in (learner, replay):
        ray.kill(handle)


@pytest.mark.parametrize("on_learner_device", [False, True])
def test_a_learner_holding_the_replay_trains_on_its_own_buffer_only(ray_local, tmp_path, on_learner_device):
    """``replay.in_learner``: what reaches the actor's handle lands in its buffer, and every
    update's batch comes from that buffer (nothing else samples it), drawn on the host or on the
    learner's device (CPU here: the path a GPU learner takes, replay/device_buffer.py). The
    learner asks for the next batch before updating on the last one, so at most one batch is
    drawn and not used."""
    from actors.worker_group import start_actor
    from core.config import ReplayConfig
    from core.contracts import EpisodeTransitions
    from driver.learner_with_replay import LearnerWithReplay

    ray, rng = ray_local, np.random.default_rng(0)
    sac = SACConfig(hidden_size=HIDDEN, batch_size=16)
    learner = start_actor(LearnerWithReplay, {"num_cpus": 0, "max_concurrency": 4}, state_dim=D, sac=sac,
                          replay_config=ReplayConfig(capacity=1000, min_size_to_sample=32, samples_per_insert=1.0,
                                                     error_buffer=1000.0, in_learner=True,
                                                     on_learner_device=on_learner_device),
                          config=LearnerConfig(device="cpu", sample_timeout_s=1.0), run_dir=str(tmp_path / "run"))
    episodes = [EpisodeTransitions(states=rng.standard_normal((20, D)).astype(np.float32),
                                   actions=rng.integers(0, 2, 20).astype(np.int8),
                                   kl_penalties=np.zeros(20, np.float32)).with_sentence_reward(1.0)
                for _ in range(10)]
    assert ray.get(learner.add.remote(episodes)) == 200
    stats = ray.get(learner.run.remote(learner, until_updates=20), timeout=240)
    assert stats.updates == 20
    replay = ray.get(learner.stats.remote())
    assert replay["size"] == replay["inserted_transitions"] == 200
    assert replay["sampled_on"] == ("cpu" if on_learner_device else "host")
    unused = replay["samples"] - 20 * sac.batch_size
    assert unused in (0, sac.batch_size)
    ray.kill(learner)
