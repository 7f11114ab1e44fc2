"""Reward actors: score finished answers in batches, off the rollout path, insert the scored
episodes into the replay, and report each batch to the driver.

The driver hands a reward actor the reference to a rollout call's episodes (they come
from the object store, never through the driver) and gets back a ``ScoredBatch``: the
sentence rewards, the transitions the replay stored, and how many episodes could not be
scored and why. A reward model that fails is therefore visible to the driver, batch by
batch.

With ``reward.baseline: upstream-greedy`` the reward is relative to the upstream model's
own greedy answer to the same prompt, and with ``reward.fluency_weight > 0`` an answer the
upstream finds unlikely (mean log-probability per token below ``reward.fluency_floor``:
word salad) pays for it. With ``reward.score_tokens`` the reward reads the answer a user
would read: the upstream continues each unfinished episode greedily to that length (as a
served answer goes on past the agent's horizon), and the greedy baseline is as long; a
decline that the continuation undoes is then paid as the help it turns into, unless
``reward.decline_sentences`` ends it first, as a server does for an agent file that recommends
it (an answer the agent stepped into ends with its N-th sentence). All three need
the upstream model, so the actor hosts it too (``HostedUpstream``): they are part of the
reward, and live where the reward is.

The greedy baseline of a prompt is deterministic, so it is computed once per prompt: the
greedy answer and its score b(x) are kept, and a prompt seen again (the next pass over the
prompts) costs neither a decode nor a score. An answer equal to the greedy one earns exactly
r(x, y) - b(x) = 0 and is not scored at all: an agent that leaves an answer alone costs no
reward-model time.

The actor waits for the replay to accept an insert; when the replay's rate limiter holds
inserts back, scored batches arrive later and the driver hands out fewer rollout calls.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import ray

from actors.scorer_actor import RemoteScorer
from core.config import ModelConfig, RewardConfig, SamplingConfig
from core.contracts import REJECT, EpisodeTransitions, ScoredBatch

log = logging.getLogger(__name__)


class HostedUpstream:
    """The upstream LLM in a reward actor (loaded on first use): its greedy answers, computed
    once per prompt, its greedy continuations of episodes, and how likely it finds an answer.
    ``answer_tokens``: the length of the answers scored (at least the episodes')."""

    def __init__(self, model: ModelConfig, sampling: SamplingConfig, answer_tokens: int = 0) -> None:
        self._model = model
        self._episode_sampling = sampling
        self._sampling = replace(sampling, max_new_tokens=max(sampling.max_new_tokens, answer_tokens))
        self._llm = None
        self._answers: dict[str, str] = {}

    @property
    def llm(self):
        if self._llm is None:
            from envs.generation import llm_from_config

            self._llm = llm_from_config(self._model)
        return self._llm

    def greedy_answers(self, prompts: list[str]) -> list[str]:
        from envs.generation import upstream_answers

        missing = [p for p in dict.fromkeys(prompts) if p not in self._answers]
        if missing:
            self._answers.update(zip(missing, upstream_answers(self.llm, missing, self._sampling,
                                                               batch_size=len(missing))))
        return [self._answers[p] for p in prompts]

    def continued(self, prompts: list[str], responses: list[str], finished: list[bool]) -> list[str]:
        """Each unfinished response with the upstream's greedy continuation to the scored length."""
        from envs.generation import upstream_answers

        extra = self._sampling.max_new_tokens - self._episode_sampling.max_new_tokens
        todo = [i for i, done in enumerate(finished) if not done]
        if extra <= 0 or not todo:
            return list(responses)
        texts = upstream_answers(self.llm, [prompts[i] for i in todo], replace(self._sampling, max_new_tokens=extra),
                                 batch_size=len(todo), openings=[responses[i] for i in todo])
        out = list(responses)
        for i, text in zip(todo, texts):
            out[i] = text
        return out

    def mean_log_likelihood(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        from envs.generation import mean_log_likelihood

        return mean_log_likelihood(self.llm, prompts, responses, batch_size=len(prompts))

    def close(self) -> None:
        """Stop the LLM's engine processes (vLLM backend)."""
        if self._llm is not None and hasattr(self._llm, "close"):
            self._llm.close()


class RewardActor:
    def __init__(self, *, reward: RewardConfig, replay, model: ModelConfig, sampling: SamplingConfig,
                 torch_threads: int = 1, scorer_actors: dict | None = None) -> None:
        """``scorer_actors``: the ``ScorerActor`` of each scorer that runs in one of its own, by
        its index in ``reward.scorers`` (those whose ``num_gpus`` is set)."""
        import torch

        from rewards.base import build_reward

        torch.set_num_threads(torch_threads)
        self.config = reward
        remote = {i: RemoteScorer(actor, reward.scorers[i].path or reward.scorers[i].kind)
                  for i, actor in (scorer_actors or {}).items()}
        self.reward = build_reward(list(reward.scorers), baseline=reward.baseline, scale=reward.scale, built=remote)
        self.replay = replay
        self.upstream = HostedUpstream(model, sampling, reward.score_tokens) if reward.needs_upstream else None
        self._greedy_scores: dict[str, float] = {}  # b(x): raw score of the upstream's greedy answer, per prompt

    def score_and_insert(self, episodes: list[EpisodeTransitions]) -> ScoredBatch:
        """Attach r(x, y) to each episode's terminal decision and insert them into replay."""
        if not episodes:
            return ScoredBatch(episodes=0)
        prompts = [e.prompt for e in episodes]
        responses = [e.response for e in episodes]
        try:
            rewards = self._rewards(prompts, responses, [e.finished for e in episodes],
                                    [bool((e.actions == REJECT).any()) for e in episodes])
        except Exception as err:  # a broken reward model must not take the run down silently
            log.error("scoring %d episodes failed, they are not inserted: %s", len(episodes), err)
            return ScoredBatch(episodes=len(episodes), unscored=len(episodes), error=f"{type(err).__name__}: {err}")
        for episode, reward in zip(episodes, rewards):
            episode.with_sentence_reward(float(reward), postback=self.config.postback)
        with_decisions = [e for e in episodes if len(e)]
        inserted = ray.get(self.replay.add.remote(with_decisions)) if with_decisions else 0
        return ScoredBatch(episodes=len(episodes), rewards=[float(r) for r in rewards], inserted=int(inserted))

    def _rewards(self, prompts: list[str], responses: list[str], finished: list[bool],
                 stepped_in: list[bool]) -> np.ndarray:
        """r(x, y) (Eq. 13, with its baseline and scale) of the answers as read (continued to
        ``score_tokens``, a decline the agent stepped into ended at ``decline_sentences``),
        minus the fluency term of what the agent wrote when it is on."""
        cfg = self.config
        read = self.upstream.continued(prompts, responses, finished) if cfg.score_tokens else responses
        if cfg.decline_sentences:
            from envs.generation import ended_decline

            read = [ended_decline(text, cfg.decline_sentences) if stepped else text
                    for text, stepped in zip(read, stepped_in)]
        if cfg.needs_greedy_baseline:
            rewards = self._relative_to_greedy(prompts, read)
        else:
            rewards = self.reward.score(prompts, read)
        if cfg.fluency_weight:
            from rewards.base import fluency_penalty

            log_likelihood = self.upstream.mean_log_likelihood(prompts, responses)
            rewards = rewards - fluency_penalty(log_likelihood, cfg.fluency_weight, cfg.fluency_floor)
        return rewards

    def _relative_to_greedy(self, prompts: list[str], read: list[str]) -> np.ndarray:
        """scale * (raw(x, y) - b(x)) with b(x) the raw score of the upstream's greedy answer,
        scored once per prompt; 0 for an answer equal to the greedy one."""
        greedy = self.upstream.greedy_answers(prompts)
        greedy_of = dict(zip(prompts, greedy))
        unseen = [p for p in greedy_of if p not in self._greedy_scores]
        if unseen:
            self._greedy_scores.update(zip(unseen, self.reward.raw(unseen, [greedy_of[p] for p in unseen])))
        rewards = np.zeros(len(prompts), dtype=np.float64)
        differ = [i for i, (answer, own) in enumerate(zip(read, greedy)) if answer != own]
        if differ:
            rewards[differ] = self.reward.score([prompts[i] for i in differ], [read[i] for i in differ],
                                                greedy_scores=[self._greedy_scores[prompts[i]] for i in differ])
        return rewards

    def close(self) -> None:
        """Stop the engine processes of the LLM it hosts (vLLM backend)."""
        if self.upstream is not None:
            self.upstream.close()
