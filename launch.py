"""Train an accept/reject agent with asynchronous distributed SAC on Ray.

    python launch.py                                  # embedded default, local Ray, a few minutes
    python launch.py --config configs/x.yaml --set rollout.num_workers=4 --set budget.episodes=1000
    python launch.py --address auto                   # join the cluster started by `ray up cluster.yaml`
    python launch.py --resume runs/20261123-120000    # continue a stopped run

This file only wires: it reads the configuration and hands it to the driver (driver/run.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import yaml

from driver.config import load_config
from driver.run import WorkerStartError, train
from driver.run_folder import CONFIG_FILE, new_run_dir


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file with the run configuration (see mara/config.py)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set sac.batch_size=512 (repeatable)")
    parser.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else a local cluster)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its folder")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    overrides = list(args.overrides) + ([f"address={args.address}"] if args.address else [])
    try:
        if args.resume:
            run_dir = Path(args.resume)
            if not (run_dir / CONFIG_FILE).is_file():
                raise FileNotFoundError(f"nothing to resume: {run_dir} holds no {CONFIG_FILE} of a run")
            cfg = load_config(args.config or run_dir / CONFIG_FILE, overrides)
        else:
            cfg = load_config(args.config, overrides)
            run_dir = new_run_dir(cfg)
    except (FileNotFoundError, FileExistsError, ValueError, yaml.YAMLError) as err:
        # A mistake in the command line or a config file: say what, not where in our code.
        print(f"launch.py: error: {err}", file=sys.stderr)
        return 2
    try:
        summary = train(cfg, run_dir, resume=bool(args.resume))
    except WorkerStartError as err:  # e.g. a model path that the workers cannot load
        print(f"launch.py: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps({k: summary[k] for k in ("episodes", "transitions", "learner_updates", "mean_reward_all",
                                              "episodes_per_hour", "agent")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
