"""``mara agent``: what an agent file holds, and the serving settings it recommends (decision rule, horizon,
accept threshold, request gate, where a decline ends).

    mara agent runs/<run>/agent.safetensors                               # its metadata
    mara agent runs/<run>/agent.safetensors --recommend-decisions sampled --recommend-horizon 12

An agent trained by SAC is a stochastic policy; whether its answers are better with its
decisions sampled (as in training) or thresholded at pi(accept) = 0.5 is measured with
``mara eval --decisions ...``. The recommendation is stored in the file's metadata and is
what ``mara generate``, ``mara eval`` and ``mara serve`` use by default (``--decisions agent``).
So is the horizon: an agent trained on episodes of N tokens (its metadata's
``episode_tokens``) has never seen a state past them; with ``--recommend-horizon N`` it
decides the first N tokens of an answer and the upstream continues alone, greedily or by its
own sampling as the decisions are taken (``--horizon`` and ``--continuation`` of those commands).
"""

from __future__ import annotations

import argparse
import json

from cli.generator_args import argument_type
from core.agent_file import (
    AGENT_CUT,
    AGENT_GATE,
    AGENT_HORIZON,
    AGENT_THRESHOLD,
    parse_accept_threshold,
    parse_decline_sentences,
    parse_horizon,
    parse_request_gate,
)


def add_agent_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("agent", help="an agent file's metadata; set the decision rule it recommends",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="agent file (.safetensors)")
    p.add_argument("--recommend-decisions", choices=["greedy", "sampled"],
                   help="store this decision rule in the file as the one to use by default")
    p.add_argument("--recommend-horizon", type=argument_type(parse_horizon), metavar="N|all",
                   help="store how many tokens of an answer the agent decides by default (the upstream's own "
                        "sampling decides the rest); 'all': every token")
    p.add_argument("--recommend-accept-threshold", type=argument_type(parse_accept_threshold), metavar="T",
                   help="store the threshold of greedy decisions: accept when pi(accept) >= T (0.5: the "
                        "agent's mode)")
    p.add_argument("--recommend-request-gate", type=argument_type(parse_request_gate), metavar="off|embedded|FILE",
                   help="store which requests the agent may touch (rewards/request_gate.py): 'off' (every "
                        "request), 'embedded' (the shipped harmful-request gate) or a response-class head file")
    p.add_argument("--recommend-decline-sentences", type=argument_type(parse_decline_sentences), metavar="N|off",
                   help="store where an answer the agent has stepped into ends: with its N-th sentence")
    p.set_defaults(func=_cmd_agent)
    return p


def _cmd_agent(args: argparse.Namespace) -> int:
    from core.agent_file import load_agent, read_agent_metadata, update_agent_metadata

    load_agent(args.path)  # a file that is not an agent fails here, before anything is written
    if args.recommend_horizon == AGENT_HORIZON:
        raise ValueError("--recommend-horizon takes a number of tokens or 'all'")
    if args.recommend_accept_threshold == AGENT_THRESHOLD:
        raise ValueError("--recommend-accept-threshold takes a number in (0, 1]")
    if args.recommend_request_gate == AGENT_GATE:
        raise ValueError("--recommend-request-gate takes 'off', 'embedded' or a head file")
    if args.recommend_decline_sentences == AGENT_CUT:
        raise ValueError("--recommend-decline-sentences takes a number of sentences or 'off'")
    recommended = {"decisions": args.recommend_decisions, "horizon": args.recommend_horizon,
                   "accept_threshold": args.recommend_accept_threshold, "request_gate": args.recommend_request_gate,
                   "decline_sentences": args.recommend_decline_sentences}
    recommended = {key: str(value) for key, value in recommended.items() if value is not None}
    if recommended:
        metadata = update_agent_metadata(args.path, **recommended)
    else:
        metadata = read_agent_metadata(args.path)
    print(json.dumps(metadata, indent=1, sort_keys=True))
    return 0
