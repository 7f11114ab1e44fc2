"""cluster.yaml: the structure launch.py and docs/CLUSTER.md rely on, and Ray's own schema."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"
ROLLOUT_RESOURCE = "rollout_slot"


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def gpu_types(config: dict) -> dict:
    return {name: t for name, t in config["available_node_types"].items()
            if t.get("resources", {}).get("GPU", 0) > 0}


def test_required_top_level_keys(config):
    required = {"cluster_name", "max_workers", "provider", "auth", "available_node_types",
                "head_node_type", "file_mounts", "setup_commands",
                "head_start_ray_commands", "worker_start_ray_commands"}
    assert required <= set(config), f"missing: {required - set(config)}"
    assert config["cluster_name"] == "mara"
    provider = config["provider"]
    assert provider["type"] == "aws" and provider["region"] and provider["availability_zone"]
    assert config["auth"]["ssh_user"]


def test_head_node_type_has_a_gpu_for_the_learner_and_no_rollout_slot(config):
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) >= 1  # the learner, pinned to the head, trains on it
    assert ROLLOUT_RESOURCE not in head["resources"], "rollout workers must not land on the head"
    assert head.get("min_workers", 0) == 0


def test_gpu_worker_type_autoscales_and_offers_rollout_slots(config):
    gpus = {name: t for name, t in gpu_types(config).items() if name != config["head_node_type"]}
    assert gpus, "no worker node type with GPU resources"
    for name, t in gpus.items():
        assert t["resources"]["GPU"] >= 1
        assert t["resources"].get(ROLLOUT_RESOURCE, 0) >= 1, f"{name} lacks {ROLLOUT_RESOURCE}"
        assert 0 <= t["min_workers"] <= t["max_workers"] <= config["max_workers"]
        assert t["node_config"]["InstanceType"]
    # Only GPU nodes offer rollout slots.
    for name, t in config["available_node_types"].items():
        if ROLLOUT_RESOURCE in t.get("resources", {}):
            assert name in gpus
    total_min = sum(t.get("min_workers", 0) for t in config["available_node_types"].values())
    assert total_min <= config["max_workers"]


def test_setup_installs_the_project_from_the_synced_tree(config):
    assert config["file_mounts"] == {"~/mara": "."}
    assert any("ray[default]==" in c for c in config["setup_commands"])  # pin Ray everywhere
    head, workers = config["head_setup_commands"], config["worker_setup_commands"]
    # CUDA torch everywhere: the head's GPU trains the learner, the workers' run the LLM
    assert "cd ~/mara && TORCH_SPEC=torch bash scripts/install.sh" in head
    assert "cd ~/mara && TORCH_SPEC=torch bash scripts/install.sh" in workers
    # The project's install script exists where the commands expect it.
    assert (CLUSTER_YAML.parent / "scripts" / "install.sh").is_file()


def test_ray_start_commands(config):
    head = " ".join(config["head_start_ray_commands"])
    workers = " ".join(config["worker_start_ray_commands"])
    assert config["head_start_ray_commands"][0] == "ray stop"
    assert config["worker_start_ray_commands"][0] == "ray stop"
    for flag in ("--head", "--port=6379", "--dashboard-host=0.0.0.0",
                 "--metrics-export-port=8080",
                 "--autoscaling-config=~/ray_bootstrap_config.yaml"):
        assert flag in head
    assert "--address=$RAY_HEAD_IP:6379" in workers
    assert "--metrics-export-port=8080" in workers


def test_valid_for_rays_cluster_launcher(config):
    """Ray's own check (defaults merged, then the JSON schema + head/min_workers rules)."""
    try:
        from ray.autoscaler._private.util import prepare_config, validate_config
    except ImportError as e:
        pytest.skip(f"Ray's cluster-config validator is not importable here: {e}")
    pytest.importorskip("jsonschema", reason="Ray's validate_config needs jsonschema")
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    assert gpu_types(prepared).keys() == gpu_types(config).keys()  # defaults add no types

    broken = copy.deepcopy(config)
    broken["head_node_type"] = "no_such_type"
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(prepare_config(broken))
