"""``mara scale RUN_DIR --workers N|auto``: change a running run's number of rollout workers.

The driver of the run reads ``RUN_DIR/scale.json`` every few seconds and starts or stops
workers to match (driver/scaling.py); the request outlives the run, so ``--resume`` keeps it.
"""

from __future__ import annotations

from pathlib import Path


def add_scale_parser(sub) -> None:
    p = sub.add_parser("scale", help="change the number of rollout workers of a run while it goes on")
    p.add_argument("run_dir", help="the run's folder (runs/<name>)")
    p.add_argument("--workers", required=True,
                   help="a number of workers, or 'auto' (one per unit of rollout.resource in the cluster)")
    p.set_defaults(func=_cmd_scale)


def _cmd_scale(args) -> int:
    from driver.run_folder import CONFIG_FILE
    from driver.scaling import request_scale

    run_dir = Path(args.run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder (it holds no {CONFIG_FILE})")
    workers = args.workers if args.workers == "auto" else _int(args.workers)
    path = request_scale(run_dir, workers)
    print(f"asked {run_dir} for {workers} rollout worker(s) ({path}); its driver follows within seconds")
    return 0


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--workers must be a number or 'auto', got {text!r}") from None
