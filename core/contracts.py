"""The records that carry data between MARA's components.

Data flows up through the layers once: prompt -> episode (``EpisodeTransitions``, made by
a rollout worker, with its ``RolloutStats``) -> scored episode (a reward actor adds the
sentence reward and reports a ``ScoredBatch`` to the driver) -> replay -> batch
(``TransitionBatch``, drawn by the learner) -> weights -> worker. The records hold plain
numpy arrays and Python numbers (cheap to put in Ray's object store, no torch needed to
read them). Introspection (a component's ``stats()`` or ``metrics()``) is not data and
is not defined here.

Action convention used everywhere: 0 = reject the candidate, 1 = accept it.

An episode's decisions form a chain: the next state of decision t is the state of
decision t + 1 (Eq. 5: accept -> first candidate of the next position, reject -> the
next candidate at the same position; positions with a single candidate and the forced
last candidate take no decision and are skipped). Only the last decision of an episode
is terminal. So an episode stores each hidden state once, and ``next_states`` is a view.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

REJECT = 0
ACCEPT = 1


@dataclass
class EpisodeTransitions:
    """All decisions of one finished episode, in order.

    The reward of decision t is the per-decision KL penalty of Eq. 8; the sentence
    reward r(x, y) of Eq. 13 is added to the last decision by whoever scores the
    finished answer (see ``with_sentence_reward``).
    """

    states: np.ndarray  # (T, d) float: LLM last-layer hidden state of each decision's candidate
    actions: np.ndarray  # (T,) int8: 0 reject / 1 accept
    kl_penalties: np.ndarray  # (T,) float32: -lambda * KL estimate of the decision (Eq. 8)
    policy_version: int = 0  # weight version of the actor MLP that chose the actions
    prompt: str = ""  # the prompt text (for scoring and logging)
    response: str = ""  # the decoded response text
    sentence_reward: float = 0.0  # r(x, y) added to the terminal decision, 0 until scored
    postback: float = 0.0  # > 0: r(x, y) also reaches earlier accepted decisions (see ``rewards``)
    finished: bool = False  # the answer ended (EOS): nothing for a continuation to add

    def __post_init__(self) -> None:
        n = len(self.actions)
        if self.states.ndim != 2 or self.states.shape[0] != n or len(self.kl_penalties) != n:
            raise ValueError(
                f"inconsistent episode arrays: states {self.states.shape}, "
                f"actions {self.actions.shape}, kl_penalties {self.kl_penalties.shape}"
            )

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def state_dim(self) -> int:
        return int(self.states.shape[1])

    @property
    def rewards(self) -> np.ndarray:
        """(T,) float32: KL penalty per decision plus the sentence reward on the last one.

        With ``postback`` = g > 0 (the reference's optional ``postback_reward``, MARA.md
        "Rewards"), every earlier *accepted* decision also gets g^n r(x, y), n being the
        accepted decisions after it: the token it chose is part of the answer that was scored,
        so it learns of the outcome without waiting for the critic to carry it back step by step.
        """
        rewards = self.kl_penalties.astype(np.float32, copy=True)
        if not len(rewards):
            return rewards
        rewards[-1] += self.sentence_reward
        if self.postback > 0:
            accepted = self.actions[:-1] == ACCEPT
            after = np.cumsum(self.actions[::-1] == ACCEPT)[::-1]  # accepted decisions from t on
            n_after = after[1:]  # ... strictly after t (t < T - 1)
            rewards[:-1] += np.where(accepted, self.postback ** n_after * self.sentence_reward, 0.0).astype(np.float32)
        return rewards

    @property
    def dones(self) -> np.ndarray:
        """(T,) bool: only the episode's last decision is terminal."""
        dones = np.zeros(len(self), dtype=bool)
        if len(dones):
            dones[-1] = True
        return dones

    @property
    def next_states(self) -> np.ndarray:
        """(T, d): state t + 1 for every decision; zeros after the terminal one."""
        nxt = np.zeros_like(self.states)
        nxt[:-1] = self.states[1:]
        return nxt

    def with_sentence_reward(self, reward: float, postback: float = 0.0) -> "EpisodeTransitions":
        """The hook for reward models: attach r(x, y) to the terminal decision (and, with
        ``postback`` > 0, to the earlier accepted ones: ``rewards``)."""
        if not np.isfinite(reward):
            raise ValueError(f"sentence reward must be finite, got {reward}")
        if not 0 <= postback <= 1:
            raise ValueError(f"postback must be in [0, 1], got {postback}")
        self.sentence_reward = float(reward)
        self.postback = float(postback)
        return self


@dataclass
class TransitionBatch:
    """A batch of independent transitions, as the learner consumes them."""

    states: np.ndarray  # (B, d) float32
    actions: np.ndarray  # (B,) int64: 0 reject / 1 accept
    rewards: np.ndarray  # (B,) float32
    next_states: np.ndarray  # (B, d) float32
    dones: np.ndarray  # (B,) float32: 1.0 where the episode ended
    policy_versions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (B,)

    def __len__(self) -> int:
        return len(self.actions)

    @classmethod
    def random(cls, rng: np.random.Generator, n: int, d: int, done_prob: float = 0.3,
               version: int = 0) -> "TransitionBatch":
        """A batch of random transitions (for tests and benchmarks)."""
        return cls(
            states=rng.standard_normal((n, d), dtype=np.float32),
            actions=rng.integers(0, 2, n).astype(np.int64),
            rewards=rng.standard_normal(n).astype(np.float32),
            next_states=rng.standard_normal((n, d), dtype=np.float32),
            dones=(rng.random(n) < done_prob).astype(np.float32),
            policy_versions=np.full(n, version, np.int64),
        )



@dataclass
class RolloutStats:
    """What a rollout worker's ``rollout`` call reports to the driver (its episodes travel
    separately, by reference, to a reward actor)."""

    worker: int  # index of the worker in its group
    policy_version: int  # weight version that chose the actions
    episodes: int
    transitions: int  # decisions made (= transitions the episodes hold)
    accepts: int  # decisions that accepted
    tokens: int  # response tokens generated
    seconds: float  # wall time of the decoding
    episode_start: float  # time.time() when decoding started
    episode_end: float  # time.time() when it ended
    episode_tokens: list[int] = field(default_factory=list)  # response length of each episode
    weight_fetches: int = 0  # weight versions the worker has fetched so far (its WeightClient)
    node: str = ""  # the Ray node the worker runs on
    upstream_dtype: str = ""  # what the worker's upstream computes states in (model.dtype "auto" resolved)


@dataclass
class ScoredBatch:
    """What a reward actor reports to the driver for one batch of episodes it was handed."""

    episodes: int  # episodes in the batch
    rewards: list[float] = field(default_factory=list)  # r(x, y) of each scored episode, in order
    inserted: int = 0  # transitions the replay stored
    unscored: int = 0  # episodes that could not be scored (and were not inserted)
    error: str = ""  # why, when some were not scored
