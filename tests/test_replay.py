"""Tests of replay/: ring buffer, Reverb-style rate limiter, snapshots and the Ray actor."""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import pytest


from core.config import ReplayConfig
from core.contracts import EpisodeTransitions
from replay import ReplayBuffer, SampleToInsertRatio, SnapshotError
from replay.server import ReplayServer

D = 8


def make_episode(length: int, first_id: int, d: int = D, version: int = 0,
                 reward: float = 1.0, seed: int = 0) -> EpisodeTransitions:
    """Feature 0 of each state is a unique integer id (exact in float16)."""
    rng = np.random.default_rng(seed + first_id)
    states = rng.standard_normal((length, d)).astype(np.float32)
    states[:, 0] = np.arange(first_id, first_id + length)
    return EpisodeTransitions(
        states=states,
        actions=rng.integers(0, 2, length).astype(np.int8),
        kl_penalties=-rng.random(length).astype(np.float32),
        policy_version=version,
        sentence_reward=reward,
    )


def make_episodes(lengths, start_id: int = 1) -> list[EpisodeTransitions]:
    episodes, next_id = [], start_id
    for i, n in enumerate(lengths):
        episodes.append(make_episode(n, next_id, version=i, reward=float(i)))
        next_id += n
    return episodes


def check_batch_against_episodes(batch, episodes, dtype=np.float16) -> set[int]:
    """Every sampled transition equals its source decision; returns the ids seen."""
    by_id = {}
    for ep in episodes:
        stored = ep.states.astype(dtype).astype(np.float32)
        nxt = np.zeros_like(stored)
        nxt[:-1] = stored[1:]
        for t in range(len(ep)):
            by_id[int(ep.states[t, 0])] = (stored[t], nxt[t], ep.actions[t], ep.rewards[t],
                                           ep.dones[t], ep.policy_version)
    seen = set()
    for i in range(len(batch)):
        key = int(batch.states[i, 0])
        state, nxt, action, reward, done, version = by_id[key]
        np.testing.assert_array_equal(batch.states[i], state)
        np.testing.assert_array_equal(batch.next_states[i], nxt)
        assert batch.actions[i] == action
        assert batch.rewards[i] == reward
        assert batch.dones[i] == float(done)
        assert batch.policy_versions[i] == version
        seen.add(key)
    return seen


# --- ReplayBuffer ----------------------------------------------------------------------
def test_next_state_is_following_decision_across_wraparound():
    buffer = ReplayBuffer(capacity=50, state_dim=D)
    episodes = make_episodes([7, 11, 13, 9, 17, 5, 12, 8])  # 82 transitions: wraps once
    assert buffer.add(episodes) == 82
    assert buffer.size() == 50 and buffer.stats()["write_position"] == 82 % 50
    # The 5th episode (slots 40..56 -> 40..49, 0..6) straddles the ring's end: slot 49
    # is not terminal and its next state is slot 0.
    assert not buffer._dones[49]
    stored_ids = set(int(x) for x in buffer._states[:, 0])
    # Stored: the tails of old episodes plus the 3 newest ones; 32 oldest evicted.
    assert min(stored_ids) == 33 and buffer.stats()["evicted_transitions"] == 32
    live = [ep for ep in episodes if int(ep.states[-1, 0]) >= 33]
    batch = buffer.sample(3000, np.random.default_rng(0))
    assert batch.states.dtype == np.float32 and batch.next_states.dtype == np.float32
    assert batch.actions.dtype == np.int64 and batch.dones.dtype == np.float32
    seen = check_batch_against_episodes(batch, live)
    assert seen == stored_ids  # every stored slot was drawn and checked
    done_rows = batch.dones == 1.0
    assert done_rows.any() and not batch.next_states[done_rows].any()
    wrap = batch.states[:, 0] == buffer._states[49, 0]
    np.testing.assert_array_equal(batch.next_states[wrap][0],
                                  buffer._states[0].astype(np.float32))


def test_the_sentence_reward_goes_to_the_last_decision_and_with_postback_to_earlier_accepted_ones():
    episode = EpisodeTransitions(states=np.zeros((5, 3), np.float32), actions=np.array([1, 0, 1, 1, 0], np.int8),
                                 kl_penalties=np.full(5, -0.1, np.float32))
    np.testing.assert_allclose(episode.with_sentence_reward(2.0).rewards, [-0.1, -0.1, -0.1, -0.1, 1.9])
    # postback 0.5: decision 0 has two accepted decisions after it, 2 and 3 one and none
    np.testing.assert_allclose(episode.with_sentence_reward(2.0, postback=0.5).rewards,
                               [-0.1 + 0.5, -0.1, -0.1 + 1.0, -0.1 + 2.0, 1.9], rtol=1e-6)
    with pytest.raises(ValueError, match="postback"):
        episode.with_sentence_reward(1.0, postback=1.5)


def test_partial_fill_samples_only_written_slots():
    buffer = ReplayBuffer(capacity=100, state_dtype="float32")
    episodes = make_episodes([3, 4])
    buffer.add(episodes)
    assert buffer.state_dim == D and buffer.size() == 7
    batch = buffer.sample(500, np.random.default_rng(1))
    assert check_batch_against_episodes(batch, episodes, np.float32) == set(range(1, 8))


def test_state_dim_mismatch_names_both_sizes():
    buffer = ReplayBuffer(capacity=100, state_dim=24)
    with pytest.raises(ValueError) as err:
        buffer.add([make_episode(3, 1, d=24), make_episode(3, 10, d=40)])
    assert "24" in str(err.value) and "40" in str(err.value)
    assert buffer.size() == 0  # validated before anything is written


def test_episode_longer_than_capacity_is_refused():
    buffer = ReplayBuffer(capacity=10, state_dim=D)
    with pytest.raises(ValueError, match="capacity 10"):
        buffer.add([make_episode(11, 1)])
    assert buffer.size() == 0


def test_non_finite_episodes_skipped_good_ones_kept(caplog):
    buffer = ReplayBuffer(capacity=100, state_dim=D)
    good1, nan_state, good2, inf_reward, overflow = (
        make_episode(4, 1), make_episode(5, 10), make_episode(6, 20), make_episode(3, 30),
        make_episode(2, 40),
    )
    nan_state.states[2, 3] = np.nan
    inf_reward.kl_penalties[1] = np.inf
    overflow.states[0, 1] = 1e6  # finite in float32, inf in float16 storage
    with caplog.at_level(logging.WARNING, logger="replay.buffer"):
        stored = buffer.add([good1, nan_state, good2, inf_reward, overflow])
    assert stored == 10 and buffer.size() == 10
    stats = buffer.stats()
    assert stats["rejected_episodes"] == 3 and stats["rejected_transitions"] == 10
    assert sum("skipped an episode" in r.getMessage() for r in caplog.records) == 3
    batch = buffer.sample(400, np.random.default_rng(0))
    assert check_batch_against_episodes(batch, [good1, good2]) == set(range(1, 5)) | set(
        range(20, 26))


def test_float16_storage_is_smaller_than_float32():
    fp16 = ReplayBuffer(capacity=10, state_dim=576, state_dtype="float16")
    fp32 = ReplayBuffer(capacity=10, state_dim=576, state_dtype="float32")
    assert fp16.bytes_per_transition() == 576 * 2 + 14
    assert fp32.bytes_per_transition() == 576 * 4 + 14
    assert fp16.bytes_per_transition() < fp32.bytes_per_transition() < 2 * 576 * 8
    assert fp16._states.nbytes * 2 == fp32._states.nbytes


def test_fast_cast_matches_numpy_bit_for_bit():
    from replay.buffer import _cast_into

    rng = np.random.default_rng(0)
    half_bits = np.arange(65536, dtype=np.uint16).view(np.float16)
    finite16 = half_bits[np.isfinite(half_bits)]
    # float32 values on and between float16 grid points: ties, subnormals, -0, extremes.
    src32 = np.concatenate([
        finite16.astype(np.float32),
        (finite16[:-1].astype(np.float32) + finite16[1:].astype(np.float32)) / 2,
        rng.standard_normal(50_000).astype(np.float32) * 1e-5,
        np.array([-0.0, 65504.0, -65504.0, 6e-8, 3e-8, 2.9e-8], np.float32),
    ]).astype(np.float32)
    src32 = src32[np.isfinite(src32) & (np.abs(src32) <= 65504)]
    out16 = np.empty(src32.shape, np.float16)
    _cast_into(out16, src32)
    assert out16.view(np.uint16).tobytes() == src32.astype(np.float16).view(np.uint16).tobytes()
    out32 = np.empty(finite16.shape, np.float32)
    _cast_into(out32, finite16)
    assert out32.view(np.uint32).tobytes() == finite16.astype(np.float32).view(np.uint32).tobytes()


# --- snapshots -------------------------------------------------------------------------
def test_snapshot_restore_identical_contents_and_samples(tmp_path):
    buffer = ReplayBuffer(capacity=40, state_dim=D)
    buffer.add(make_episodes([9, 12, 7, 15, 6]))  # 49 transitions: wrapped
    buffer.sample(10, np.random.default_rng(3))
    path = buffer.save(tmp_path / "replay.arrow", extra={"note": "x", "n": 3})
    assert not [p for p in tmp_path.iterdir() if p.name != "replay.arrow"]  # no temp left

    loaded = ReplayBuffer.load(path)
    fresh = ReplayBuffer(capacity=40)
    saved_stats = buffer.stats()
    assert fresh.restore(path) == {"note": "x", "n": 3}
    for other in (loaded, fresh):
        assert other.stats()["write_position"] == buffer.stats()["write_position"] == 9
        assert other.size() == buffer.size() and other.stats() == saved_stats
        for name in ("_states", "_actions", "_rewards", "_dones", "_policy_versions"):
            a, b = getattr(buffer, name), getattr(other, name)
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), name
        a = buffer.sample(256, np.random.default_rng(11))
        b = other.sample(256, np.random.default_rng(11))
        for field in ("states", "actions", "rewards", "next_states", "dones", "policy_versions"):
            assert getattr(a, field).tobytes() == getattr(b, field).tobytes(), field


def _host_arrays(batch) -> dict:
    return {f: np.asarray(getattr(batch, f)) for f in ("states", "actions", "rewards", "next_states", "dones",
                                                       "policy_versions")}


@pytest.mark.parametrize("state_dtype,copy", [("float16", False), ("float32", False), ("float16", True)])
def test_the_device_buffer_draws_the_host_buffers_batches_and_restores_its_copy(tmp_path, state_dtype, copy):
    """replay.on_learner_device: sampled on the device (here torch's CPU device, with views of the
    host ring, or with a copy uploaded as on a GPU), the same transitions come out as from the host
    ring, as torch tensors the learner takes as is."""
    import torch

    from learner.sac import batch_to_tensors
    from replay.device_buffer import DeviceReplayBuffer

    def device_buffer(**sizes):
        return DeviceReplayBuffer(capacity=40, state_dtype=state_dtype, device="cpu", copy_on_cpu=copy, **sizes)

    host = ReplayBuffer(capacity=40, state_dim=D, state_dtype=state_dtype)
    device = device_buffer(state_dim=D)
    episodes = make_episodes([9, 12, 7, 15, 6])  # 49 transitions: wraps once, an episode straddles the end
    # One call (the host) and one call per episode (the device: the 4th wraps, uploaded in two pieces).
    assert host.add(episodes) == sum(device.add([ep]) for ep in episodes) == 49
    a, b = host.sample(500, np.random.default_rng(4)), device.sample(500, np.random.default_rng(4))
    assert isinstance(b.states, torch.Tensor) and b.states.dtype == torch.float32
    for field, value in _host_arrays(b).items():
        assert getattr(a, field).dtype == value.dtype and getattr(a, field).tobytes() == value.tobytes(), field
    assert device.stats() == {**host.stats(), "sampled_on": "cpu"}  # same counters (sampled transitions too)
    # On torch's CPU device the "copy" is views of the host ring unless asked: no second copy.
    assert (device._device_ring["states"].data_ptr() == device._states.ctypes.data) is not copy
    tensors = batch_to_tensors(b, "cpu", state_dim=D)
    assert tensors.states.data_ptr() == b.states.data_ptr()  # taken as is, not copied
    assert tensors.mean_policy_version == pytest.approx(float(a.policy_versions.mean()))

    # A snapshot of either restores into a device buffer, which uploads its copy again.
    path = device.save(tmp_path / "replay.arrow")
    for restored in (device_buffer(), device_buffer(state_dim=D)):
        restored.restore(path)
        again = restored.sample(500, np.random.default_rng(4))
        for field, value in _host_arrays(again).items():
            assert value.tobytes() == getattr(a, field).tobytes(), field
        restored.add(make_episodes([5], start_id=100))  # inserts after a restore reach the copy too
        check_batch_against_episodes(_Batch(restored.sample(200, np.random.default_rng(1))),
                                     [ep for ep in episodes if ep.states[-1, 0] >= 15] + make_episodes([5], 100),
                                     dtype=np.dtype(state_dtype))


class _Batch:
    """A device batch read as numpy arrays (for check_batch_against_episodes)."""

    def __init__(self, batch) -> None:
        self.__dict__.update(_host_arrays(batch))

    def __len__(self) -> int:
        return len(self.actions)


def test_snapshot_errors(tmp_path):
    buffer = ReplayBuffer(capacity=40, state_dim=D)
    buffer.add(make_episodes([5, 5]))
    with pytest.raises(FileNotFoundError, match="not found"):
        ReplayBuffer.load(tmp_path / "missing.arrow")
    garbage = tmp_path / "garbage.arrow"
    garbage.write_bytes(b"not an arrow file at all" * 10)
    with pytest.raises(SnapshotError, match="cannot read"):
        ReplayBuffer.load(garbage)
    good = buffer.save(tmp_path / "good.arrow")
    truncated = tmp_path / "truncated.arrow"
    truncated.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(SnapshotError):
        buffer.restore(truncated)
    assert buffer.size() == 10  # a failed restore changes nothing
    other = ReplayBuffer(capacity=41, state_dim=D)
    with pytest.raises(SnapshotError, match="capacity"):
        other.restore(good)


# --- rate limiter ----------------------------------------------------------------------
def test_limiter_blocks_only_sampling_below_min_size():
    lim = SampleToInsertRatio(samples_per_insert=2.0, min_size_to_sample=10, error_buffer=4.0)
    lim.insert(9)
    assert not lim.can_sample(1)
    assert lim.can_insert(1)
    lim.insert(1)
    assert lim.can_sample(1)
    # Size counts deletes: evicting drops the buffer below the minimum again.
    lim.delete(1)
    assert not lim.can_sample(1)


def test_limiter_blocks_inserts_at_plus_error_buffer():
    lim = SampleToInsertRatio(samples_per_insert=2.0, min_size_to_sample=10, error_buffer=4.0)
    lim.insert(10)  # diff = 0
    assert lim.can_insert(2) and not lim.can_insert(3)  # diff after insert: 4 / 6
    lim.insert(2)
    assert lim.diff == 4.0 and not lim.can_insert(1)
    lim.sample(2)
    assert lim.can_insert(1) and not lim.can_insert(2)


def test_limiter_blocks_samples_at_minus_error_buffer():
    lim = SampleToInsertRatio(samples_per_insert=2.0, min_size_to_sample=10, error_buffer=4.0)
    lim.insert(10)
    assert lim.can_sample(4) and not lim.can_sample(5)
    lim.sample(4)
    assert lim.diff == -4.0 and not lim.can_sample(1)
    lim.insert(1)
    assert lim.can_sample(2) and not lim.can_sample(3)


def test_limiter_refuses_too_small_error_buffer():
    with pytest.raises(ValueError, match="error_buffer"):
        SampleToInsertRatio(samples_per_insert=2.0, min_size_to_sample=1, error_buffer=3.9)
    with pytest.raises(ValueError, match="error_buffer"):
        SampleToInsertRatio(samples_per_insert=0.5, min_size_to_sample=1, error_buffer=1.9)
    SampleToInsertRatio(samples_per_insert=0.5, min_size_to_sample=1, error_buffer=2.0)
    with pytest.raises(ValueError, match="error_buffer"):
        ReplayConfig(samples_per_insert=32.0, error_buffer=63.0)


def test_limiter_state_roundtrip_and_unit_rule_never_deadlocks():
    lim = SampleToInsertRatio(samples_per_insert=3.0, min_size_to_sample=5, error_buffer=6.0)
    rng = np.random.default_rng(0)
    for _ in range(2000):  # Reverb's guarantee: one unit step is always allowed
        can_i, can_s = lim.can_insert(1), lim.can_sample(1)
        assert can_i or can_s
        if can_i and (not can_s or rng.random() < 0.5):
            lim.insert(1)
        else:
            lim.sample(1)
        assert -6.0 - 1 <= lim.diff <= 6.0 or lim.size <= 5
    copy = SampleToInsertRatio.from_state(lim.state())
    assert copy.state() == lim.state() and copy.diff == lim.diff


def test_config_validation():
    cfg = ReplayConfig()
    assert cfg.capacity == 1_000_000 and cfg.min_size_to_sample == 65_536
    assert cfg.error_buffer >= 2 * cfg.samples_per_insert
    with pytest.raises(ValueError, match="exceeds capacity"):
        ReplayConfig(capacity=100, min_size_to_sample=101)
    with pytest.raises(ValueError, match="state_dtype"):
        ReplayConfig(state_dtype="bfloat16")
    with pytest.raises(ValueError, match="capacity"):
        ReplayConfig(capacity=10.5)
    with pytest.raises(ValueError, match="on_learner_device needs in_learner"):
        ReplayConfig(on_learner_device=True)
    assert ReplayConfig(in_learner=True, on_learner_device=True).on_learner_device


# --- the asyncio server (no Ray) --------------------------------------------------------
def _small_config(**kw) -> ReplayConfig:
    base = dict(capacity=2000, min_size_to_sample=200, samples_per_insert=4.0,
                error_buffer=100.0, seed=5)
    return ReplayConfig(**{**base, **kw})


def test_server_producer_consumer_keeps_ratio_and_forced_inserts_avoid_deadlock():
    async def run(config, episode_len, batch, n_episodes):
        server = ReplayServer(config=config, state_dim=D)
        diffs = []

        async def producer():
            for i in range(n_episodes):
                await server.add([make_episode(episode_len, 1 + i * episode_len)])
                if server._limiter.size >= config.min_size_to_sample:
                    diffs.append(server._limiter.diff)

        async def consumer(done: asyncio.Event):
            while True:
                out = await server.sample(batch, timeout_s=0.05)
                if server._limiter.size >= config.min_size_to_sample:
                    diffs.append(server._limiter.diff)
                if out is None and done.is_set():
                    return

        done = asyncio.Event()
        consume = asyncio.create_task(consumer(done))
        await asyncio.wait_for(producer(), timeout=20)
        done.set()
        await asyncio.wait_for(consume, timeout=20)
        return await server.stats(), diffs

    # Chunks fit the tolerance (20*4 + 32 <= 2*100): the diff stays within the buffer.
    stats, diffs = asyncio.run(run(_small_config(), 20, 32, 60))
    assert stats["forced_inserts"] == 0
    assert len(diffs) > 100 and all(-100.0 <= d <= 100.0 for d in diffs)
    assert stats["inserts"] == 1200
    assert abs(stats["samples_per_insert_after_min_size"] - 4.0) <= 100.0 / 1000
    # Chunks too big for the tolerance (40*4 + 64 > 2*20): without forced inserts this
    # deadlocks; with them both sides finish. An insert is forced only while the diff is
    # below batch - error_buffer, so the diff stays below that plus one episode.
    stats, diffs = asyncio.run(run(_small_config(error_buffer=20.0), 40, 64, 30))
    assert stats["forced_inserts"] > 0 and stats["inserts"] == 1200
    assert -20.0 <= min(diffs) and max(diffs) < 64 - 20.0 + 40 * 4.0


def test_server_snapshot_restores_limiter_and_rng(tmp_path):
    async def run():
        config = _small_config(error_buffer=1000.0)  # 300 inserts fit without sampling
        a = ReplayServer(config=config, state_dim=D)
        for i in range(15):
            await a.add([make_episode(20, 1 + 20 * i)])
        await a.sample(32)
        await a.save(tmp_path / "snap.arrow")
        # As a resumed run or Ray's rebuild of a dead replay starts: from the snapshot file.
        c = ReplayServer(config=config, state_dim=D, snapshot=tmp_path / "snap.arrow")
        identity = ("incarnation", "restored")  # which actor it is, and what it started from
        stats = [await server.stats() for server in (a, c)]
        sa, sc = ({k: v for k, v in st.items() if k not in identity} for st in stats)
        assert sa == sc and sc["size"] == 300
        assert (await c.stats())["restored"] == {"path": str(tmp_path / "snap.arrow"), "size": 300}
        assert (await a.stats())["restored"] is None and (await a.stats())["incarnation"] != (await c.stats())["incarnation"]
        x, z = await a.sample(64), await c.sample(64)
        assert x.states.tobytes() == z.states.tobytes() and x.next_states.tobytes() == z.next_states.tobytes()

    asyncio.run(asyncio.wait_for(run(), timeout=20))


# --- the Ray actor ----------------------------------------------------------------------
def test_ray_actor_concurrent_producer_consumer(ray_local):
    ray = ray_local
    config = _small_config()
    from actors.worker_group import start_actor

    replay = start_actor(ReplayServer, {"num_cpus": 0}, config=config, state_dim=D)

    # The task body uses only its arguments: workers cannot import this test module.
    @ray.remote(num_cpus=0)
    def produce(handle, episodes) -> int:
        # Waits on each ref, so the rate limiter's backpressure reaches the producer.
        return sum(ray.get(handle.add.remote([ep])) for ep in episodes)

    producer = produce.remote(replay, [make_episode(20, 1 + i * 20) for i in range(60)])
    # Nobody samples yet: the producer must stall once the ratio's upper bound is hit.
    deadline = time.monotonic() + 60
    while ray.get(replay.stats.remote())["waiting_inserts"] == 0:
        assert time.monotonic() < deadline, "the producer never blocked"
        time.sleep(0.1)
    time.sleep(0.3)
    stalled = ray.get(replay.stats.remote())
    assert not ray.wait([producer], timeout=0)[0]
    assert stalled["inserts"] == 220  # (220 - 200) * 4 = 80 <= 100 < (240 - 200) * 4
    assert stalled["waiting_inserts"] == 1 and stalled["samples"] == 0
    assert ray.get(replay.sample.remote(32, timeout_s=0.0)) is not None

    diffs, batches = [], 0
    while True:
        batch = ray.get(replay.sample.remote(32, timeout_s=0.5))
        stats = ray.get(replay.stats.remote())
        diffs.append(stats["limiter_diff"])
        if batch is None:
            if ray.wait([producer], timeout=0)[0]:
                break
            continue
        batches += 1
        assert batch.states.shape == (32, D) and batch.states.dtype == np.float32
    assert ray.get(producer) == 1200
    stats = ray.get(replay.stats.remote())
    assert stats["forced_inserts"] == 0 and stats["size"] == 1200
    assert all(-100.0 <= d <= 100.0 for d in diffs)
    measured = stats["samples"] / (stats["inserts"] - 200)
    assert abs(measured - 4.0) <= 100.0 / 1000, stats
    assert batches >= 100
    ray.kill(replay)
