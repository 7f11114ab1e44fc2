"""SACLearner: the SAC training state with versioned weights and checkpoints (no Ray).

Usage::

    learner = SACLearner(state_dim=576, sac=SACConfig(), device="auto", seed=0,
                         upstream_model="smollm2")
    metrics = learner.update(batch)          # batch: core.contracts.TransitionBatch
    version, weights = learner.publish()     # dict[str, np.ndarray], the actor's state dict
    learner.save_checkpoint("runs/x/checkpoints/update_000001000")
    learner.restore_checkpoint("runs/x/checkpoints/update_000001000")

Rollout workers load published weights with
``actor.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})``.

Checkpoint folder (every file written atomically; the JSON manifest is written last and
names the tensors file's ``checkpoint_id``, so a torn save is detected, never loaded):

- ``learner.safetensors``  actor/*, critic/*, target_critic/*, log_alpha, and the Adam
  state tensors as ``optim/<actor|critic|alpha>/<param index>/<exp_avg|exp_avg_sq|...>``
- ``learner.json``         sizes, counters, SAC config, optimiser param groups and the
  scalar parts of Adam's state (``step``)
- ``agent.safetensors``    the actor alone, via ``core.agent_file.save_agent``
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from core.agent_file import load_warm_start, save_agent
from core.atomic import atomic_path, write_json_atomic
from core.config import Device, SACConfig
from core.contracts import TransitionBatch
from core.sections import check
from core.state_features import PAPER_STATE
from learner.sac import SACState, UpdateMetrics, batch_to_tensors, init_sac_state, sac_update

CHECKPOINT_FORMAT = "mara-learner-1"
TENSORS_FILE = "learner.safetensors"
MANIFEST_FILE = "learner.json"
AGENT_FILE = "agent.safetensors"
_MODULES = ("actor", "critic", "target_critic")
_OPTIMIZERS = {"actor": "actor_optimizer", "critic": "critic_optimizer", "alpha": "alpha_optimizer"}


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> cuda if available else cpu; an explicit cuda without a GPU raises."""
    device = str(device)
    check("device", device, Device())
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


class SACLearner:
    """Discrete SAC on the accept/reject agent, with weight versions and checkpoints."""

    def __init__(self, *, state_dim: int, sac: SACConfig = SACConfig(),
                 device: str | torch.device = "auto", seed: int = 0,
                 upstream_model: str = "", state_features: str = PAPER_STATE) -> None:
        """``state_features``: what the states hold (``core.state_features``), recorded in
        the agent files and checkpoints it writes."""
        self.cfg = sac
        self.device = resolve_device(device)
        self.seed = seed
        self.upstream_model = upstream_model
        self.state_features = state_features
        self.state: SACState = init_sac_state(state_dim, sac, self.device, seed)
        self._version = 0  # 0 = the initial weights; publish() increments it

    # -- training ------------------------------------------------------------------------

    @property
    def state_dim(self) -> int:
        return self.state.state_dim

    @property
    def version(self) -> int:
        """Weight version: the number of publications so far (0 = initial weights)."""
        return self._version

    @property
    def updates(self) -> int:
        return self.state.updates

    def update(self, batch: TransitionBatch) -> UpdateMetrics:
        """One SAC gradient update on a replay batch (moved to the learner's device)."""
        tensors = batch_to_tensors(batch, self.device, state_dim=self.state_dim)
        self.state, metrics = sac_update(self.state, tensors, self.cfg, current_version=self._version)
        return metrics

    def load_actor(self, path: str | Path) -> None:
        """Start the actor from an agent file's weights (a warm start; ``learner.init_agent``),
        and the temperature alpha from the one the file records it was trained at (its
        ``alpha`` metadata; files without it keep ``sac.init_alpha``). The critics and the
        optimisers keep their initial state.

        Why the temperature: a trained actor's entropy sits near the target at its own alpha.
        Started at the default alpha = 0.01 instead, the first actor updates follow the fresh
        critics almost greedily and its entropy collapses before alpha climbs back; started at
        its own temperature it stays near the target (docs/RESULTS.md, tuning log)."""
        actor, alpha = load_warm_start(path, state_dim=self.state_dim, hidden_size=self.state.actor.hidden_size,
                                       state_features=self.state_features)
        if alpha is not None:
            with torch.no_grad():
                self.state.log_alpha.fill_(math.log(alpha))
        self.state.actor.load_state_dict(actor.state_dict())

    # -- weights -------------------------------------------------------------------------

    def actor_weights(self) -> dict[str, np.ndarray]:
        """A CPU copy of the actor's state dict as numpy arrays (unaffected by later updates)."""
        return {k: v.detach().to("cpu", copy=True).numpy()
                for k, v in self.state.actor.state_dict().items()}

    def publish(self) -> tuple[int, dict[str, np.ndarray]]:
        """Start a new weight version and return it with the actor's weights."""
        self._version += 1
        return self._version, self.actor_weights()

    def export_agent(self, path: str | Path, **metadata: str) -> Path:
        """Write the actor alone in the agent format of ``core.agent_file``, with extra
        string ``metadata`` (e.g. the training reward)."""
        return save_agent(self.state.actor, path, upstream_model=self.upstream_model,
                          version=str(self._version), updates=str(self.updates),
                          alpha=repr(self.state.alpha), state_features=self.state_features, **metadata)

    # -- checkpoints ---------------------------------------------------------------------

    def save_checkpoint(self, directory: str | Path) -> Path:
        """Write the full training state into ``directory`` (created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        checkpoint_id = uuid.uuid4().hex
        tensors: dict[str, torch.Tensor] = {}
        for name in _MODULES:
            for key, value in getattr(self.state, name).state_dict().items():
                tensors[f"{name}/{key}"] = value
        tensors["log_alpha"] = self.state.log_alpha.detach()
        optimizers = {}
        for short, attr in _OPTIMIZERS.items():
            opt_tensors, opt_json = _flatten_optimizer(getattr(self.state, attr).state_dict())
            tensors.update({f"optim/{short}/{k}": v for k, v in opt_tensors.items()})
            optimizers[short] = opt_json
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        with atomic_path(directory / TENSORS_FILE) as tmp:
            save_file(tensors, str(tmp), metadata={"format": CHECKPOINT_FORMAT,
                                                   "checkpoint_id": checkpoint_id})
        self.export_agent(directory / AGENT_FILE)
        manifest = {
            "format": CHECKPOINT_FORMAT,
            "checkpoint_id": checkpoint_id,
            "state_dim": self.state_dim,
            "state_features": self.state_features,
            "hidden_size": self.cfg.hidden_size,
            "updates": self.updates,
            "version": self._version,
            "seed": self.seed,
            "upstream_model": self.upstream_model,
            "sac": asdict(self.cfg),
            "optimizers": optimizers,
        }
        write_json_atomic(directory / MANIFEST_FILE, manifest)  # last: commits the checkpoint
        return directory

    def restore_checkpoint(self, directory: str | Path) -> None:
        """Load a checkpoint into this learner, exactly: weights, Adam states, counters.

        The checkpoint must match this learner's state_dim and hidden_size (a ValueError
        names both numbers otherwise). Learning rates come from this learner's config.
        """
        directory = Path(directory)
        manifest = read_manifest(directory)
        features = manifest.get("state_features", PAPER_STATE)
        if features != self.state_features:
            raise ValueError(f"checkpoint {directory} holds an agent of {features} states, but this learner's "
                             f"are {self.state_features} (rollout.state_features)")
        _check_size("state_dim", manifest["state_dim"], self.state_dim, directory)
        _check_size("hidden_size", manifest["hidden_size"], self.cfg.hidden_size, directory)
        tensors = _read_tensors(directory, manifest["checkpoint_id"])

        for name in _MODULES:
            module = getattr(self.state, name)
            prefix = f"{name}/"
            loaded = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            _load_module(module, loaded, f"{directory}: {name}")
        log_alpha = tensors.get("log_alpha")
        if log_alpha is None or log_alpha.shape != self.state.log_alpha.shape:
            raise ValueError(f"{directory}: missing or misshaped log_alpha")
        with torch.no_grad():
            self.state.log_alpha.copy_(log_alpha)
        lrs = {"actor": self.cfg.actor_lr, "critic": self.cfg.critic_lr, "alpha": self.cfg.alpha_lr}
        for short, attr in _OPTIMIZERS.items():
            prefix = f"optim/{short}/"
            opt_tensors = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            state_dict = _unflatten_optimizer(opt_tensors, manifest["optimizers"][short])
            optimizer = getattr(self.state, attr)
            try:
                optimizer.load_state_dict(state_dict)
            except (ValueError, KeyError) as err:
                raise ValueError(f"{directory}: optimizer state '{short}' does not fit: {err}") from err
            for group in optimizer.param_groups:
                group["lr"] = lrs[short]
        self.state.updates = int(manifest["updates"])
        self._version = int(manifest["version"])


# ---------------------------------------------------------------------------------------
# Checkpoint helpers
# ---------------------------------------------------------------------------------------


def read_manifest(directory: str | Path) -> dict:
    """The JSON manifest of a checkpoint folder (FileNotFoundError if there is none)."""
    directory = Path(directory)
    path = directory / MANIFEST_FILE
    if not path.is_file():
        what = "folder does not exist" if not directory.is_dir() else f"no {MANIFEST_FILE} in it"
        raise FileNotFoundError(f"no learner checkpoint at {directory}: {what}")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if manifest.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
    return manifest


def _read_tensors(directory: Path, checkpoint_id: str) -> dict[str, torch.Tensor]:
    path = directory / TENSORS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"learner checkpoint {directory} is missing {TENSORS_FILE}")
    with safe_open(str(path), framework="pt") as f:
        found = (f.metadata() or {}).get("checkpoint_id")
        if found != checkpoint_id:
            raise ValueError(
                f"{directory}: {TENSORS_FILE} (id {found}) does not belong to {MANIFEST_FILE} "
                f"(id {checkpoint_id}); the checkpoint was torn by an interrupted save"
            )
        return {k: f.get_tensor(k) for k in f.keys()}


def _check_size(what: str, in_checkpoint: int, expected: int, directory: Path) -> None:
    if int(in_checkpoint) != int(expected):
        raise ValueError(
            f"checkpoint {directory} has {what} {in_checkpoint}, but this learner expects "
            f"{what} {expected}"
        )


def _load_module(module: torch.nn.Module, loaded: dict[str, torch.Tensor], what: str) -> None:
    own = module.state_dict()
    if set(own) != set(loaded):
        raise ValueError(f"{what}: tensor names differ (missing {sorted(set(own) - set(loaded))}, "
                         f"unexpected {sorted(set(loaded) - set(own))})")
    for key, value in own.items():
        if tuple(loaded[key].shape) != tuple(value.shape):
            raise ValueError(f"{what}: {key} has shape {tuple(loaded[key].shape)} in the "
                             f"checkpoint, {tuple(value.shape)} in this learner")
    module.load_state_dict(loaded, strict=True)


def _flatten_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimiser state dict into tensors (for safetensors) and JSON (the rest)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for index, param_state in state_dict["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                tensors[f"{index}/{key}"] = value
            elif isinstance(value, torch.Tensor):  # 0-d, e.g. Adam's ``step``
                scalars.setdefault(str(index), {})[key] = {
                    "tensor": value.item(), "dtype": str(value.dtype).removeprefix("torch.")}
            elif isinstance(value, (int, float, bool)) or value is None:
                scalars.setdefault(str(index), {})[key] = {"value": value}
            else:
                raise TypeError(f"optimizer state {key} of type {type(value).__name__} "
                                f"cannot be checkpointed without pickle")
    groups = state_dict["param_groups"]
    json.dumps(groups)  # raises on anything that JSON cannot hold exactly
    return tensors, {"param_groups": groups, "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], info: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        index, key = name.split("/", 1)
        state.setdefault(int(index), {})[key] = value
    for index, entries in info["scalars"].items():
        for key, entry in entries.items():
            if "tensor" in entry:
                value = torch.tensor(entry["tensor"], dtype=getattr(torch, entry["dtype"]))
            else:
                value = entry["value"]
            state.setdefault(int(index), {})[key] = value
    groups = [{k: tuple(v) if k == "betas" else v for k, v in group.items()}
              for group in info["param_groups"]]
    return {"state": state, "param_groups": groups}
