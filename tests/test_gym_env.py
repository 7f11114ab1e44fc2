"""The MDP as a gymnasium environment, and one RLlib training iteration on it."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
from gymnasium.utils.env_checker import check_env

from envs.gym_env import GYM_ID, RLLIB_ID, AcceptRejectEnv, register_rllib_env

PROMPTS = ["How can I bake bread?", "Tell me a joke."]


def test_env_follows_the_gymnasium_api(tiny_llm):
    env = AcceptRejectEnv(llm=tiny_llm, prompts=PROMPTS, max_new_tokens=6,
                          reward_fn=lambda prompt, response: 10.0)
    check_env(env, skip_render_check=True)
    obs, info = env.reset()
    assert obs.shape == (tiny_llm.hidden_size,) and obs.dtype == np.float32
    assert env.action_space.n == 2
    rewards, done, steps = [], False, 0
    while not done:
        obs, reward, done, truncated, info = env.step(env.action_space.sample())
        rewards.append(reward)
        steps += 1
    assert "response" in info and not truncated
    assert rewards[-1] >= 10.0 - 1.0  # the sentence reward lands on the terminal step
    assert all(r <= 0 for r in rewards[:-1])  # KL penalties


def test_env_is_registered_with_gymnasium(tiny_llm_path):
    env = gym.make(GYM_ID, model=str(tiny_llm_path), prompts=PROMPTS, max_new_tokens=4)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64,)


def test_one_rllib_training_iteration(ray_local, tiny_llm_path):
    from ray.rllib.algorithms.ppo import PPOConfig

    register_rllib_env()
    config = (
        PPOConfig()
        .environment(RLLIB_ID, env_config={"model": str(tiny_llm_path), "prompts": PROMPTS,
                                           "max_new_tokens": 6})
        .env_runners(num_env_runners=0, rollout_fragment_length=32)
        .training(train_batch_size_per_learner=32, minibatch_size=16, num_epochs=1)
        .rl_module(model_config={"fcnet_hiddens": [16]})
        .debugging(seed=0)
    )
    algo = config.build_algo()
    try:
        result = algo.train()
    finally:
        algo.stop()
    assert result["training_iteration"] == 1
    assert result["num_env_steps_sampled_lifetime"] >= 32
    # Whole accept/reject episodes ran through the env, and PPO took a gradient step on them.
    assert result["env_runners"]["num_episodes"] >= 1
    assert math.isfinite(result["env_runners"]["episode_return_mean"])
    learned = result["learners"]["default_policy"]
    assert learned["num_module_steps_trained"] >= 32 and math.isfinite(learned["total_loss"])
