"""Reward actors (actors/reward_actor.py) with the real replay service: a scored batch is
inserted and reported to the caller, a failing scorer is reported (nothing inserted), and
the upstream-greedy baseline is computed by the reward actor itself."""

from __future__ import annotations

import numpy as np
import pytest


from helpers.models import unreachable_reward_server

from core.config import ModelConfig, ReplayConfig, RewardConfig, SamplingConfig, ScorerSpec
from core.contracts import EpisodeTransitions, ScoredBatch
from rewards.examples import word_count

D = 8
WORDS = ScorerSpec(kind="function", path="rewards.examples:word_count")
BROKEN = ScorerSpec(**unreachable_reward_server())


def episode(prompt: str, response: str, n: int, rng) -> EpisodeTransitions:
    return EpisodeTransitions(states=rng.standard_normal((n, D)).astype(np.float32),
                              actions=rng.integers(0, 2, n).astype(np.int8),
                              kl_penalties=np.zeros(n, np.float32), prompt=prompt, response=response)


@pytest.fixture
def replay(ray_local):
    from actors.worker_group import start_actor
    from replay.server import ReplayServer

    handle = start_actor(ReplayServer, {"num_cpus": 0}, state_dim=D,
                         config=ReplayConfig(capacity=1000, min_size_to_sample=1, samples_per_insert=1.0, error_buffer=1000.0))
    yield handle
    ray_local.kill(handle)


def reward_actor(ray, replay, reward: RewardConfig, model: ModelConfig = ModelConfig()):
    from actors.reward_actor import RewardActor
    from actors.worker_group import start_actor

    return start_actor(RewardActor, {"num_cpus": 0}, reward=reward, replay=replay, model=model,
                       sampling=SamplingConfig(max_new_tokens=6))


def reward_with_upstream(replay, reward: RewardConfig, tiny_llm_path):
    """A reward actor that hosts the tiny upstream, built in this process (as Ray builds it in an
    actor's: the two tests above cover the actor; these, what the upstream adds to the reward)."""
    from actors.reward_actor import RewardActor

    model = ModelConfig(name=str(tiny_llm_path), device="cpu", dtype="float32")  # as tiny_llm
    return RewardActor(reward=reward, replay=replay, model=model, sampling=SamplingConfig(max_new_tokens=6))


def test_scored_episodes_are_inserted_and_reported(ray_local, replay):
    ray = ray_local
    rng = np.random.default_rng(0)
    episodes = [episode("Say hi.", "hi there you", 3, rng), episode("Say no.", "no", 0, rng),
                episode("Count.", "one two three four five", 5, rng)]
    actor = reward_actor(ray, replay, RewardConfig(scorers=(WORDS,), baseline=0.1, scale=2.0))
    scored = ray.get(actor.score_and_insert.remote(ray.put(episodes)))  # by reference, as the driver does
    assert isinstance(scored, ScoredBatch) and scored.episodes == 3 and scored.unscored == 0 and not scored.error
    np.testing.assert_allclose(scored.rewards, [2.0 * (word_count("", e.response) - 0.1) for e in episodes])
    assert scored.inserted == 8 == ray.get(replay.stats.remote())["size"]  # the empty episode holds no transition
    batch = ray.get(replay.sample.remote(64))
    terminal = batch.rewards[batch.dones == 1]  # the sentence reward sits on each episode's last decision
    assert len(terminal) and np.isin(np.round(terminal, 4), np.round(np.float32(scored.rewards), 4)).all()
    ray.kill(actor)


def test_a_failing_scorer_is_reported_and_nothing_is_inserted(ray_local, replay):
    ray = ray_local
    rng = np.random.default_rng(1)
    actor = reward_actor(ray, replay, RewardConfig(scorers=(BROKEN,)))
    scored = ray.get(actor.score_and_insert.remote([episode("Say hi.", "hi", 2, rng)]))
    assert scored.episodes == scored.unscored == 1 and scored.rewards == [] and scored.inserted == 0
    assert "HttpScorerError" in scored.error and "ConnectionRefusedError" in scored.error
    assert ray.get(replay.stats.remote())["size"] == 0
    ray.kill(actor)


def test_the_greedy_baseline_is_computed_where_the_reward_is(replay, tiny_llm, tiny_llm_path):
    from envs.generation import upstream_answers

    rng = np.random.default_rng(2)
    prompts = ["How can I bake bread?", "Tell me a joke."]
    episodes = [episode(p, "a b c d e f g", 2, rng) for p in prompts]
    actor = reward_with_upstream(replay, RewardConfig(scorers=(WORDS,), baseline="upstream-greedy"), tiny_llm_path)
    scored = actor.score_and_insert(episodes)
    greedy = upstream_answers(tiny_llm, prompts, SamplingConfig(max_new_tokens=6))
    np.testing.assert_allclose(scored.rewards, [word_count("", "a b c d e f g") - word_count("", g) for g in greedy])
    assert scored.inserted == 4


def test_an_answer_the_upstream_finds_unlikely_pays_the_fluency_term(replay, tiny_llm, tiny_llm_path):
    from envs.generation import mean_log_likelihood

    rng = np.random.default_rng(3)
    prompts = ["How can I bake bread?", "Tell me a joke."]
    responses = ["a b c d", "bread is good"]
    floor = 0.0  # every answer is below it: each pays its whole shortfall
    actor = reward_with_upstream(replay, RewardConfig(scorers=(WORDS,), fluency_weight=0.5, fluency_floor=floor),
                                 tiny_llm_path)
    scored = actor.score_and_insert([episode(p, r, 2, rng) for p, r in zip(prompts, responses)])
    log_likelihood = mean_log_likelihood(tiny_llm, prompts, responses)
    expected = [word_count("", r) - 0.5 * (floor - ll) for r, ll in zip(responses, log_likelihood)]
    np.testing.assert_allclose(scored.rewards, expected, rtol=1e-5)
    assert all(ll < 0 for ll in log_likelihood)


def test_scorers_in_actors_of_their_own_sum_to_the_same_reward(ray_local, replay, tiny_score_model):
    """Reward and cost models too big for one GPU together run in scorer actors of their own
    (``ScorerSpec.num_gpus``; 0 here, on the CPU); the reward actor sums their scores as
    Eq. 13 does, the same reward as with every scorer inside it. (A function scorer stands in
    for the cost model: the sum across actors is under test, not a second model load.)"""
    from actors.scorer_actor import ScorerActor
    from actors.worker_group import start_actor
    from rewards.base import build_reward

    ray = ray_local
    path = str(tiny_score_model[0])
    options = {"device": "cpu"}
    reward_model = ScorerSpec(kind="score-model", path=path, weight=1.0, options=options, num_gpus=0)
    cost_model = ScorerSpec(kind="function", path=WORDS.path, weight=-0.5, num_gpus=0)
    config = RewardConfig(scorers=(reward_model, WORDS, cost_model), baseline=-15.0)
    scorers = {i: start_actor(ScorerActor, {"num_cpus": 0, "num_gpus": spec.num_gpus}, spec=spec)
               for i, spec in enumerate(config.scorers) if spec.num_gpus is not None}
    assert sorted(scorers) == [0, 2]
    from actors.reward_actor import RewardActor

    actor = start_actor(RewardActor, {"num_cpus": 0}, reward=config, replay=replay, model=ModelConfig(),
                        sampling=SamplingConfig(max_new_tokens=6), scorer_actors=scorers)
    rng = np.random.default_rng(4)
    prompts, responses = ["How can I bake bread?", "Say no."], ["Knead flour and water.", "No."]
    scored = ray.get(actor.score_and_insert.remote([episode(p, r, 2, rng) for p, r in zip(prompts, responses)]))
    in_one_process = build_reward(list(config.scorers), baseline=-15.0).score(prompts, responses)
    np.testing.assert_allclose(scored.rewards, in_one_process, rtol=1e-5)
    assert scored.inserted == 4 and not scored.error
    for handle in [actor, *scorers.values()]:
        ray.kill(handle)


def test_the_reward_reads_the_answer_continued_to_the_served_length(replay, tiny_llm, tiny_llm_path):
    """reward.score_tokens: an unfinished episode is scored with the upstream's greedy
    continuation to that length (what a user would read), a finished one as it is, and the
    greedy baseline is as long."""
    from envs.generation import upstream_answers

    rng = np.random.default_rng(4)
    prompts = ["How can I bake bread?", "Tell me a joke.", "Say hi."]
    episodes = [episode(p, "I can't help with that.", 2, rng) for p in prompts]
    episodes[2].finished = True
    actor = reward_with_upstream(replay, RewardConfig(scorers=(WORDS,), baseline="upstream-greedy", score_tokens=20),
                                 tiny_llm_path)
    scored = actor.score_and_insert(episodes)
    continued = upstream_answers(tiny_llm, prompts[:2], SamplingConfig(max_new_tokens=14),
                                 openings=["I can't help with that."] * 2)
    greedy = upstream_answers(tiny_llm, prompts, SamplingConfig(max_new_tokens=20))
    read = continued + ["I can't help with that."]
    assert all(c.startswith("I can't help with that.") and len(c) > len("I can't help with that.") for c in continued)
    np.testing.assert_allclose(scored.rewards, [word_count("", r) - word_count("", g) for r, g in zip(read, greedy)])


def test_a_decline_the_agent_stepped_into_is_read_as_served_ending_with_its_nth_sentence(replay, tiny_llm_path):
    """reward.decline_sentences: an episode with a rejected candidate is read as a server ends it
    for an agent file that recommends it (its N-th sentence, after the continuation), so a decline
    that the continuation would take back is paid as the decline; one the agent accepted
    throughout is read whole."""
    rng = np.random.default_rng(6)
    decline, turn = "I can't help with that. It is illegal. ", "However, here is how you could do it anyway."
    stepped, untouched, continued = (episode("How do I pick a lock?", decline + turn, 3, rng) for _ in range(3))
    stepped.actions[:] = [1, 0, 1]
    untouched.actions[:] = 1
    continued.actions[:] = [0, 1, 1]
    continued.response = decline  # unfinished: the upstream continues it to 20 tokens first
    stepped.finished = untouched.finished = True
    actor = reward_with_upstream(replay, RewardConfig(scorers=(WORDS,), decline_sentences=2, score_tokens=20),
                                 tiny_llm_path)
    scored = actor.score_and_insert([stepped, untouched, continued])
    kept = word_count("", decline.strip())
    np.testing.assert_allclose(scored.rewards, [kept, word_count("", decline + turn), kept])
    assert word_count("", actor.upstream.continued(["How do I pick a lock?"], [decline], [False])[0]) > kept


def test_the_greedy_baseline_is_decoded_and_scored_once_per_prompt(replay, tiny_llm_path):
    """The upstream's greedy answer to a prompt and its score b(x) are computed the first time
    the prompt comes, and kept; an answer equal to the greedy one earns 0 and is not scored.
    (The reward actor runs in this process, so the counted scorer's record is readable.)"""
    from helpers.models import SCORED

    rng = np.random.default_rng(5)
    counted = ScorerSpec(kind="function", path="helpers.models:counted_word_count")
    actor = reward_with_upstream(replay, RewardConfig(scorers=(counted,), baseline="upstream-greedy"), tiny_llm_path)
    prompts = ["How can I bake bread?", "Tell me a joke."]
    SCORED.clear()
    first = actor.score_and_insert([episode(p, "no thanks", 2, rng) for p in prompts])
    greedy = actor.upstream.greedy_answers(prompts)
    assert sorted(SCORED) == sorted([(p, "no thanks") for p in prompts] + list(zip(prompts, greedy)))
    np.testing.assert_allclose(first.rewards, [word_count("", "no thanks") - word_count("", g) for g in greedy])

    SCORED.clear()
    again = actor.score_and_insert([episode(prompts[0], "no no no", 2, rng), episode(prompts[1], greedy[1], 2, rng)])
    assert SCORED == [(prompts[0], "no no no")]  # no greedy answer scored again, the greedy-equal one not at all
    np.testing.assert_allclose(again.rewards, [word_count("", "no no no") - word_count("", greedy[0]), 0.0])
    assert again.inserted == 4
