"""Ray and the components of a run, started from its configuration.

This is the only place that reads the run's configuration tree to build components
(Acme's builder): each component gets the config objects of the sections it needs and
plain arguments, every actor is a plain class made remote the same way (``start_actor``,
or a ``WorkerGroup`` of them), and the resources each asks Ray for (CPUs, GPUs, custom
resources) come from the configuration:

    replay    ReplayServer      (replay/server.py)     replay.num_cpus (0: it mostly waits on asyncio), head node
    learner   LearnerService    (learner/service.py)   learner.num_cpus, a GPU when there is one, head node
              (or, with ``replay.in_learner``, one LearnerWithReplay actor that is both:
               driver/learner_with_replay.py)
    rewards   WorkerGroup of RewardActor   (actors/reward_actor.py)   reward.num_actors x reward.num_cpus/num_gpus
    scorers   ScorerActor per scorer with num_gpus set (actors/scorer_actor.py)   reward.num_cpus, its num_gpus
    rollouts  WorkerGroup of RolloutWorker (actors/rollout_worker.py) rollout.num_workers x rollout.num_cpus/...
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import ray

from actors.reward_actor import RewardActor
from actors.rollout_worker import RolloutWorker, actor_options
from actors.scorer_actor import ScorerActor
from actors.worker_group import WorkerGroup, start_actor
from core.config import AUTO
from driver.config import RunConfig
from driver.learner_with_replay import LearnerWithReplay
from driver.run_folder import REPLAY_FILE
from driver.scaling import target_workers
from learner.service import LearnerService, learner_resources
from replay.server import ReplayServer

LEARNER_CONCURRENCY = 4  # run() holds one thread; weight polls, metrics and stop() use the others
# With the replay inside, inserts that wait on the rate limiter hold threads too.
LEARNER_WITH_REPLAY_CONCURRENCY = 32
# The replay and the learner: Ray rebuilds them when they die (their constructors restore the
# newest snapshot / checkpoint) and retries the calls they were answering. Retrying is safe:
# a sample or a poll has no effect, and an insert lost with the dead actor is made again.
REBUILT_FROM_SNAPSHOTS = {"max_restarts": -1, "max_task_retries": -1}
# The replay and the learner run on the head node: the run folder (snapshots, checkpoints)
# is there, and a worker node leaving the cluster never takes them with it.
ON_HEAD = {"resources": {"node:__internal_head__": 0.001}}


@dataclass
class Components:
    replay: object  # Ray actor handle of the ReplayServer (the learner's own with replay.in_learner)
    learner: object  # Ray actor handle of the LearnerService
    rewards: WorkerGroup
    rollouts: WorkerGroup
    scorers: dict  # index in reward.scorers -> the ScorerActor of a scorer that runs in one of its own


def start_components(cfg: RunConfig, run_dir: Path, state_dim: int) -> Components:
    """Start every component of a run. The replay and the learner start from the run folder's
    snapshot and newest checkpoint when there are some (a resumed run), and so does Ray when it
    rebuilds one that died; the calls they were answering are then retried."""
    learner_kwargs = dict(state_dim=state_dim, state_features=cfg.rollout.state_features, sac=cfg.sac,
                          config=cfg.learner, seed=cfg.seed, upstream_model=cfg.model.name,
                          run_dir=str(run_dir))
    learner_options = {**learner_resources(cfg.learner), **REBUILT_FROM_SNAPSHOTS, **ON_HEAD}
    if cfg.replay.in_learner:  # one actor is both; its handle serves as the replay's
        learner_options["num_cpus"] += cfg.replay.num_cpus
        learner = start_actor(LearnerWithReplay, {**learner_options, "max_concurrency": LEARNER_WITH_REPLAY_CONCURRENCY},
                              replay_config=cfg.replay, replay_snapshot=str(run_dir / REPLAY_FILE), **learner_kwargs)
        replay = learner
    else:
        replay = start_actor(ReplayServer, {"num_cpus": cfg.replay.num_cpus, **REBUILT_FROM_SNAPSHOTS, **ON_HEAD},
                             config=cfg.replay, state_dim=state_dim, snapshot=str(run_dir / REPLAY_FILE))
        learner = start_actor(LearnerService, {**learner_options, "max_concurrency": LEARNER_CONCURRENCY},
                              **learner_kwargs)
    # Scorers with GPUs of their own (models that do not fit one GPU together); Ray rebuilds one
    # that dies and retries its calls (scoring has no side effect).
    threads = max(1, int(cfg.reward.num_cpus))
    scorers = {i: start_actor(ScorerActor, {"num_cpus": cfg.reward.num_cpus, "num_gpus": spec.num_gpus,
                                            "max_restarts": -1, "max_task_retries": -1},
                              spec=spec, torch_threads=threads)
               for i, spec in enumerate(cfg.reward.scorers) if spec.num_gpus is not None}
    # A reward actor hosts the upstream LLM too when the reward needs it (greedy baseline, fluency).
    llm_options = actor_options(cfg.model) if cfg.reward.needs_upstream else {}
    rewards = WorkerGroup(
        RewardActor, size=cfg.reward.num_actors, name="reward actor",
        options={"num_cpus": cfg.reward.num_cpus, "num_gpus": cfg.reward.num_gpus, "max_restarts": -1,
                 **llm_options},
        make_kwargs=lambda i: dict(reward=cfg.reward, replay=replay, model=cfg.model, sampling=cfg.sampling,
                                   torch_threads=threads, scorer_actors=scorers))
    rollouts = WorkerGroup(
        RolloutWorker, size=target_workers(cfg.rollout, run_dir, current=1), name="rollout worker",
        options=rollout_options(cfg),
        make_kwargs=lambda i: dict(worker_index=i, model=cfg.model, sampling=cfg.sampling, kl=cfg.kl,
                                   rollout=cfg.rollout, agent_hidden_size=cfg.sac.hidden_size, learner=learner,
                                   seed=cfg.seed))
    return Components(replay, learner, rewards, rollouts, scorers)


def rollout_options(cfg: RunConfig) -> dict:
    r = cfg.rollout
    options = {"num_cpus": r.num_cpus, "num_gpus": r.num_gpus, "max_restarts": r.max_restarts, "max_concurrency": 1,
               **actor_options(cfg.model)}
    if r.resource:
        options["resources"] = {r.resource: 1}
    return options


def _bind_to_loopback() -> None:
    """Make a local run's Ray listen on 127.0.0.1 only. Ray binds its servers (GCS, raylet,
    object manager, workers, agents, metrics export) to the node's IP, and takes 127.0.0.1 as
    that IP when ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``: Ray's own switch for "no other node
    will join" (its default on macOS and Windows). The processes Ray starts read the variable;
    this one read it when it imported ray, so its copy is set too."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def local_cpus(cfg: RunConfig) -> int:
    """Logical CPUs of a local Ray: the machine's, or what the actors ask for if more (a
    laptop run oversubscribes its cores rather than never starting an actor)."""
    workers = 1 if cfg.rollout.num_workers == AUTO else cfg.rollout.num_workers
    scorer_actors = sum(s.num_gpus is not None for s in cfg.reward.scorers)
    needed = workers * cfg.rollout.num_cpus + cfg.learner.num_cpus \
        + (cfg.reward.num_actors + scorer_actors) * cfg.reward.num_cpus + cfg.replay.num_cpus
    return max(os.cpu_count() or 1, math.ceil(needed))


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
    _bind_to_loopback()
    # address "local": a cluster of this run's own. Without an address, ray.init joins the cluster
    # this machine started last (`ray start`, another run's), which the settings do not ask for.
    context = ray.init(address="local", num_cpus=local_cpus(cfg), dashboard_host="127.0.0.1",
                       include_dashboard=cfg.dashboard, log_to_driver=True)
    if cfg.dashboard and context.dashboard_url:
        print(f"Ray dashboard: http://{context.dashboard_url}", flush=True)
    return True
