"""The accept/reject MDP as a ``gymnasium.Env``, so generic RL libraries (RLlib) can drive it.

Observation: Box(d) float32, the hidden state of the candidate under decision.
Action: Discrete(2), 0 reject / 1 accept. Reward: the per-decision KL penalty (Eq. 8),
plus the sentence reward r(x, y) on the terminal step when a ``reward_fn`` is given.
An episode is one prompt's answer; it ends at EOS or at ``max_new_tokens``.

Registered as ``mara/AcceptReject-v0`` with gymnasium, and as ``mara_accept_reject``
with Ray Tune's registry by ``register_rllib_env()``; both take the keyword arguments of
``AcceptRejectEnv`` (RLlib passes them as its ``env_config``).
"""

from __future__ import annotations

from typing import Callable

import gymnasium as gym
import numpy as np

from core.config import KLConfig, SamplingConfig
from envs.decoder import AcceptRejectDecoder

GYM_ID = "mara/AcceptReject-v0"
RLLIB_ID = "mara_accept_reject"

_LLM_CACHE: dict[tuple[str, str], object] = {}


def _shared_llm(model: str, dtype: str):
    """One upstream model per process, however many env copies RLlib builds."""
    from envs.upstream import load_upstream

    key = (model, dtype)
    if key not in _LLM_CACHE:
        _LLM_CACHE[key] = load_upstream(model, dtype=dtype)
    return _LLM_CACHE[key]


class AcceptRejectEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, config: dict | None = None, **kwargs) -> None:
        """``config`` is RLlib's env_config dict; keyword arguments are those of
        ``_configure`` and take precedence."""
        self._configure(**{**dict(config or {}), **kwargs})

    def _configure(
        self,
        *,
        model: str = "smollm2",
        prompts: list[str] | None = None,
        llm=None,
        dtype: str = "float32",
        mode: str = "lazy",
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        max_new_tokens: int = 64,
        kl_coef: float = 0.1,
        kl_estimator: str = "full",
        reward_fn: Callable[[str, str], float] | None = None,
        accept_prob_fn: Callable[[np.ndarray], float] | None = None,
        seed: int = 0,
    ) -> None:
        if not prompts:
            raise ValueError("AcceptRejectEnv needs a non-empty list of prompts")
        self.llm = llm if llm is not None else _shared_llm(model, dtype)
        self.prompts = list(prompts)
        self.reward_fn = reward_fn
        self.accept_prob_fn = accept_prob_fn
        self.decoder = AcceptRejectDecoder(
            self.llm, SamplingConfig(temperature, top_k, top_p, max_new_tokens),
            KLConfig(kl_coef, kl_estimator), mode=mode,
        )
        d = self.llm.hidden_size
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(d,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self._next_prompt = seed % len(self.prompts)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:  # a seeded reset replays the same prompt order
            self._next_prompt = seed % len(self.prompts)
        # A prompt whose answer has no position with two candidates offers no decision;
        # move on to the next prompt (at most one full pass over the prompt set).
        for _ in range(len(self.prompts)):
            prompt = self.prompts[self._next_prompt]
            self._next_prompt = (self._next_prompt + 1) % len(self.prompts)
            self.decoder.start([prompt])
            if self.decoder.has_pending():
                return self._observation(), {"prompt": prompt}
        raise RuntimeError("no prompt in the set leads to any accept/reject decision")

    def step(self, action):
        state = self._observation()
        accept_prob = None if self.accept_prob_fn is None else [self.accept_prob_fn(state)]
        reward = float(self.decoder.apply([int(action)], accept_prob)[0])
        if self.decoder.has_pending():
            return self._observation(), reward, False, False, {}
        result = self.decoder.results()[0]
        if self.reward_fn is not None:
            reward += float(self.reward_fn(result.prompt, result.response))
        info = {"response": result.response, "finish_reason": result.finish_reason}
        return np.zeros(self.observation_space.shape, np.float32), reward, True, False, info

    def _observation(self) -> np.ndarray:
        return self.decoder.pending_states()[0].numpy().astype(np.float32)


def register_gym_env() -> None:
    if GYM_ID not in gym.registry:
        gym.register(id=GYM_ID, entry_point="envs.gym_env:AcceptRejectEnv")


def register_rllib_env() -> None:
    from ray.tune.registry import register_env

    register_env(RLLIB_ID, AcceptRejectEnv)


register_gym_env()
