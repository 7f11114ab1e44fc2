"""Everything a run reads, checked before Ray starts and before a run folder is made.

A mistake in the configuration, a prompt source that is missing or holds no prompt, a
model path that does not exist or a reward scorer that cannot be found is reported at
once, by ``launch.py``, as one clear line: not as a traceback from inside a Ray actor a
few seconds later, and without leaving a half-made run folder behind.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.agent_file import load_warm_start
from core.prompts import training_prompts
from core.state_features import state_size
from driver.config import RunConfig
from envs.upstream import model_hidden_size
from rewards import check_scorer_spec


@dataclass
class RunInputs:
    """What preflight read, so that the run does not read it again."""

    prompts: list[str]  # the training prompts, evaluation sets excluded
    state_dim: int  # the length of every state: the upstream LLM's hidden size (x2 with the prompt's state)


def check_inputs(cfg: RunConfig) -> RunInputs:
    """Read the prompts and the model's configuration and check the reward's scorers.
    Raises ValueError or FileNotFoundError with a message for the user."""
    prompts = training_prompts(cfg.prompts)
    try:
        # the upstream's hidden size (from its config only: no weights are loaded), doubled
        # when the agent also reads the prompt's state
        state_dim = state_size(cfg.rollout.state_features, model_hidden_size(cfg.model.name))
    except OSError as err:  # transformers' "not a folder, not on the hub" (or no network)
        raise FileNotFoundError(f"model {cfg.model.name!r} cannot be read: {err}") from err
    for spec in cfg.reward.scorers:
        check_scorer_spec(spec)
    if cfg.learner.init_agent:  # a warm start's agent must fit the model and the SAC networks
        load_warm_start(cfg.learner.init_agent, state_dim=state_dim, hidden_size=cfg.sac.hidden_size,
                        state_features=cfg.rollout.state_features)
    return RunInputs(prompts=prompts, state_dim=state_dim)
