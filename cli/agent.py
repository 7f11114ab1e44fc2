"""``mara agent``: what an agent file holds, and the decision rule it recommends.

    mara agent runs/<run>/agent.safetensors                               # its metadata
    mara agent runs/<run>/agent.safetensors --recommend-decisions sampled

An agent trained by SAC is a stochastic policy; whether its answers are better with its
decisions sampled (as in training) or thresholded at pi(accept) = 0.5 is measured with
``mara eval --decisions ...``. The recommendation is stored in the file's metadata and is
what ``mara generate``, ``mara eval`` and ``mara serve`` use by default (``--decisions agent``).
"""

from __future__ import annotations

import argparse
import json


def add_agent_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("agent", help="an agent file's metadata; set the decision rule it recommends",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="agent file (.safetensors)")
    p.add_argument("--recommend-decisions", choices=["greedy", "sampled"],
                   help="store this decision rule in the file as the one to use by default")
    p.set_defaults(func=_cmd_agent)
    return p


def _cmd_agent(args: argparse.Namespace) -> int:
    from core.agent_file import load_agent, read_agent_metadata, update_agent_metadata

    load_agent(args.path)  # a file that is not an agent fails here, before anything is written
    if args.recommend_decisions:
        metadata = update_agent_metadata(args.path, decisions=args.recommend_decisions)
    else:
        metadata = read_agent_metadata(args.path)
    print(json.dumps(metadata, indent=1, sort_keys=True))
    return 0
