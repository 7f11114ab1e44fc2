"""Ray and the components of a run, started from its configuration.

This is the only place that reads the run's configuration tree to build components
(Acme's builder): each component gets its own config object and plain arguments, every
actor is a plain class made remote the same way (``start_actor``, or a ``WorkerGroup`` of
them), and resource numbers come from the configuration, not from literals here.

    replay    ReplayServer      (replay/server.py)     no CPU of its own: it waits on asyncio
    learner   LearnerService    (learner/service.py)   learner.num_cpus, a GPU when there is one
    rewards   WorkerGroup of RewardActor   (actors/reward_actor.py)   reward.num_actors
    rollouts  WorkerGroup of RolloutWorker (actors/rollout_worker.py) rollout.num_workers
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import ray

from actors.reward_actor import RewardActor
from actors.rollout_worker import RolloutWorker, actor_options
from actors.worker_group import WorkerGroup, start_actor
from driver.config import RunConfig
from envs.upstream import model_hidden_size
from learner.service import LearnerService, learner_resources
from replay.server import ReplayServer

LEARNER_CONCURRENCY = 4  # run() holds one thread; weight polls, metrics and stop() use the others


@dataclass
class Components:
    replay: object  # Ray actor handle of the ReplayServer
    learner: object  # Ray actor handle of the LearnerService
    rewards: WorkerGroup
    rollouts: WorkerGroup
    state_dim: int  # hidden size of the upstream LLM: the length of every state


def start_components(cfg: RunConfig, run_dir: Path, resume: bool) -> Components:
    state_dim = model_hidden_size(cfg.model.name)  # read from the model's config: no weights loaded
    replay = start_actor(ReplayServer, {"num_cpus": 0}, config=cfg.replay, state_dim=state_dim)
    learner = start_actor(
        LearnerService, {**learner_resources(cfg.learner), "max_concurrency": LEARNER_CONCURRENCY},
        state_dim=state_dim, sac=cfg.sac, config=cfg.learner, seed=cfg.seed, upstream_model=cfg.model.name,
        run_dir=str(run_dir), resume=resume)
    # A reward actor hosts the upstream LLM too when the reward is relative to its greedy answer.
    llm_options = actor_options(cfg.model) if cfg.reward.needs_greedy_baseline else {}
    rewards = WorkerGroup(
        RewardActor, size=cfg.reward.num_actors, name="reward actor",
        options={"num_cpus": cfg.reward.num_cpus, "num_gpus": cfg.reward.num_gpus, "max_restarts": -1,
                 **llm_options},
        make_kwargs=lambda i: dict(reward=cfg.reward, replay=replay, model=cfg.model, sampling=cfg.sampling))
    rollouts = WorkerGroup(
        RolloutWorker, size=cfg.rollout.num_workers, name="rollout worker", options=rollout_options(cfg),
        make_kwargs=lambda i: dict(worker_index=i, model=cfg.model, sampling=cfg.sampling, kl=cfg.kl,
                                   rollout=cfg.rollout, learner=learner, seed=cfg.seed))
    return Components(replay, learner, rewards, rollouts, state_dim)


def rollout_options(cfg: RunConfig) -> dict:
    r = cfg.rollout
    options = {"num_cpus": r.num_cpus, "num_gpus": r.num_gpus, "max_restarts": r.max_restarts, "max_concurrency": 1,
               **actor_options(cfg.model)}
    if r.resource:
        options["resources"] = {r.resource: 1}
    return options


def connect_ray(cfg: RunConfig) -> bool:
    """Join a cluster (``address`` or $RAY_ADDRESS) or start a local one. True if this
    process connected (and must disconnect), False if Ray was already initialised."""
    if ray.is_initialized():
        return False
    address = cfg.address or os.environ.get("RAY_ADDRESS", "")
    if address:
        ray.init(address=address)
        print(f"joined Ray cluster at {address}", flush=True)
        return True
    needed = cfg.rollout.num_workers * cfg.rollout.num_cpus + cfg.learner.num_cpus \
        + cfg.reward.num_actors * cfg.reward.num_cpus
    context = ray.init(num_cpus=max(os.cpu_count() or 1, math.ceil(needed)),
                       include_dashboard=cfg.dashboard, log_to_driver=True)
    if cfg.dashboard and context.dashboard_url:
        print(f"Ray dashboard: http://{context.dashboard_url}", flush=True)
    return True
