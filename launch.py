"""Train an accept/reject agent with asynchronous distributed SAC on Ray.

    python launch.py                                  # embedded default, local Ray, a few minutes
    python launch.py --config configs/x.yaml --set rollout.num_workers=4 --set budget.episodes=1000
    python launch.py --address auto                   # join the cluster started by `ray up cluster.yaml`
    python launch.py --resume runs/20261123-120000    # continue a stopped run
    python launch.py --config configs/paper_llama3_8b.yaml --dry-run --cluster cluster.yaml   # the plan only

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
from driver.preflight import check_inputs
from driver.run import RunFailed, stop_on_sigterm, train
from driver.run_folder import CONFIG_FILE, new_run_dir, resumable


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file with the run configuration (see driver/config.py)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set sac.batch_size=512 (repeatable)")
    parser.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else a local cluster)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its folder")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what the run would start, where and with how much memory; load nothing "
                             "(driver/plan.py); exit 1 if it does not fit the cluster")
    parser.add_argument("--cluster", metavar="CLUSTER_YAML",
                        help="with --dry-run: plan against this cluster launcher file's node types")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    overrides = list(args.overrides) + ([f"address={args.address}"] if args.address else [])
    if args.dry_run:
        return _dry_run(args, overrides)
    try:
        with stop_on_sigterm():  # a SIGTERM while the inputs are read stops as Ctrl-C does
            # Every input error is reported here, before Ray starts and before a run folder exists.
            if args.resume:
                run_dir = Path(args.resume)
                if not (run_dir / CONFIG_FILE).is_file():
                    raise FileNotFoundError(f"nothing to resume: {run_dir} holds no {CONFIG_FILE} of a run")
                cfg = load_config(args.config or run_dir / CONFIG_FILE, overrides)
                resumable(run_dir)
            else:
                cfg = load_config(args.config, overrides)
            inputs = check_inputs(cfg)
            if not args.resume:
                run_dir = new_run_dir(cfg)
    except (FileNotFoundError, FileExistsError, ValueError, yaml.YAMLError) as err:
        # A mistake in the command line, a config file or an input: say what, not where in our code.
        print(f"launch.py: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("launch.py: interrupted before the run started", file=sys.stderr)
        return 130
    try:
        summary = train(cfg, run_dir, inputs, resume=bool(args.resume))
    except RunFailed as err:  # it saved what it had; the reason is for the user
        print(f"launch.py: error: the run failed: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # during start-up: the training loop had not begun
        print(f"launch.py: interrupted while the run was starting; {run_dir} holds its configuration only",
              file=sys.stderr)
        return 130
    print(json.dumps({k: summary[k] for k in ("status", "episodes", "transitions", "learner_updates",
                                              "mean_reward_all", "episodes_per_hour", "agent")}, indent=2))
    return 0


def _dry_run(args: argparse.Namespace, overrides: list[str]) -> int:
    from driver.plan import dry_run

    try:
        cfg = load_config(args.config, overrides)
        text, problems = dry_run(cfg, args.cluster)
    except (FileNotFoundError, ValueError, yaml.YAMLError) as err:
        print(f"launch.py: error: {err}", file=sys.stderr)
        return 2
    print(text)
    for problem in problems:
        print(f"does not fit: {problem}")
    print("the run fits" if not problems else f"{len(problems)} problem(s): the run would not start as planned")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
