"""``mara serve``: the aligned model behind an OpenAI-compatible HTTP API on Ray Serve.

    mara serve                                   # shipped agent, SmolLM2, http://127.0.0.1:8000
    mara serve --agent runs/<run>/agent.safetensors --replicas 2 --port 8001
    mara serve --address auto --num-gpus 0.5     # on a running cluster, half a GPU per replica
"""

from __future__ import annotations

import argparse
import time

from cli.generator_args import (
    add_continuation_argument,
    add_dtype_argument,
    add_intervention_arguments,
    add_sampling_arguments,
    candidates_from_args,
    draw_from_args,
)


def add_serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve the aligned model (OpenAI API, web page) with Ray Serve")
    p.add_argument("--agent", help="agent file, or 'untrained'; default: the agent shipped for the model")
    p.add_argument("--model", help="upstream LLM: 'smollm2', hub id, folder or .gguf (default: the agent's)")
    p.add_argument("--host", default="127.0.0.1", help="address the HTTP proxy binds (default loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--replicas", type=int, default=1, help="copies of the LLM, each with its own batch")
    p.add_argument("--autoscale", metavar="MIN:MAX", help="let Ray Serve scale replicas between MIN and MAX")
    p.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per replica")
    p.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per replica (a share, e.g. 0.5, is fine)")
    p.add_argument("--max-rows", type=int, default=16, help="answers a replica decodes at once")
    p.add_argument("--batch-wait-s", type=float, default=0.005,
                   help="when idle, how long a first request waits for others to start with it")
    p.add_argument("--admission", choices=["continuous", "static"], default="continuous",
                   help="continuous: requests join the running batch between positions; static: only an empty one")
    p.add_argument("--decisions", choices=["agent", "greedy", "sampled"], default="agent",
                   help="the agent's decisions: accept when pi(accept) >= 0.5 (greedy; see --accept-threshold), "
                        "or sampled; default: "
                        "what the agent file recommends, else greedy")
    add_intervention_arguments(p)
    add_continuation_argument(p)
    p.add_argument("--mode", choices=["hybrid", "lazy", "eager"], default="lazy")
    add_sampling_arguments(p)  # a request's own settings take precedence over these
    p.add_argument("--max-tokens", type=int, default=256, help="answer length when a request gives none")
    add_dtype_argument(p)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_serve)


def settings_from_args(args: argparse.Namespace):
    """The ``ServeSettings`` of the command line, every value checked (before Ray starts)."""
    from core.agent_file import (
        UNTRAINED,
        agent_candidates,
        read_agent_metadata,
        resolve_accept_threshold,
        resolve_decisions,
        resolve_decline_sentences,
        resolve_horizon,
    )
    from rewards.request_gate import request_gate_file
    from serving.app import ServeSettings

    if args.agent not in (None, UNTRAINED):
        read_agent_metadata(args.agent)  # a missing or unreadable agent file fails here, not in a replica
        resolve_decisions(args.decisions, args.agent)  # and so does an unknown recommended rule
        resolve_horizon(args.horizon, args.agent)
        resolve_accept_threshold(args.accept_threshold, args.agent)
        resolve_decline_sentences(args.decline_sentences, args.agent)
        agent_candidates(args.agent)  # and an unreadable candidate set
    request_gate_file(args.request_gate, args.agent)  # a gate file that is not there fails here
    autoscale = None
    if args.autoscale:
        low, sep, high = args.autoscale.partition(":")
        if not sep or not low.isdigit() or not high.isdigit():
            raise ValueError(f"--autoscale must look like MIN:MAX, got {args.autoscale!r}")
        autoscale = (int(low), int(high))
    return ServeSettings(
        agent=args.agent, model=args.model, host=args.host, port=args.port, replicas=args.replicas,
        autoscale=autoscale, num_cpus=args.num_cpus, num_gpus=args.num_gpus, max_rows=args.max_rows,
        batch_wait_s=args.batch_wait_s, admission=args.admission, decisions=args.decisions,
        horizon=args.horizon, accept_threshold=args.accept_threshold, request_gate=args.request_gate,
        decline_sentences=args.decline_sentences,
        continuation=args.continuation,
        mode=args.mode,
        max_tokens=args.max_tokens, draw=draw_from_args(args), candidates=candidates_from_args(args) or None,
        dtype=args.dtype, device=args.device)


def _cmd_serve(args) -> int:
    from serving.app import start_server, stop_server

    settings = settings_from_args(args)
    url = start_server(settings, address=args.address)
    print(f"MARA is serving at {url}  (web page {url}/, OpenAI API {url}/v1, metrics {url}/metrics); Ctrl-C stops")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping")
    finally:
        stop_server()
    return 0
