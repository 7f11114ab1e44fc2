"""``mara config``: the resolved configuration of a run, with what each field means.

    mara config                                   # the embedded default run
    mara config configs/safety_smollm2.yaml --set budget.seconds=60
    mara config runs/<run>                        # what a run folder's run goes on with

Each field prints as ``section.field: value  # its description``, the value as the run
would use it (the file's values over the run's defaults, then the overrides), checked as
``launch.py`` checks it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path


def add_config_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("config", help="print a run's resolved configuration with each field's description",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", nargs="?", help="a YAML config file or a run folder (default: the embedded run)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="an override")
    p.set_defaults(func=_cmd_config)
    return p


def _cmd_config(args: argparse.Namespace) -> int:
    from driver.config import load_config

    source = Path(args.source) if args.source else None
    if source is not None and source.is_dir():
        source = source / "config.yaml"  # a run folder: the settings it goes on with
    print("\n".join(config_lines(load_config(source, args.set))))
    return 0


def config_lines(section, prefix: str = "") -> list[str]:
    """``section.field: value  # description`` for every field, nested sections expanded."""
    from core.sections import describe

    lines = []
    for name, doc in describe(type(section)).items():
        value = getattr(section, name)
        if dataclasses.is_dataclass(value):
            lines += [f"{prefix}{name}:  # {doc or type(value).__doc__.splitlines()[0]}"]
            lines += config_lines(value, prefix + "  ")
            continue
        shown = json.dumps(value, default=_plain) if not isinstance(value, str) else value or '""'
        lines.append(f"{prefix}{name}: {shown}" + (f"  # {doc}" if doc else ""))
    return lines


def _plain(value):
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else str(value)
