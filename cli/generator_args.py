"""Command-line options shared by ``mara generate`` and ``mara eval``: the upstream model,
the agent and how answers are decoded, turned into an ``AlignedGenerator`` in one place."""

from __future__ import annotations

import argparse


def add_generator_arguments(p: argparse.ArgumentParser, max_new_tokens: int = 256) -> None:
    p.add_argument("--agent", help="agent file (.safetensors, or a reference .pth), or 'untrained' (random "
                                    "weights); default: the agent shipped for SmolLM2-135M-Instruct when the "
                                    "model's hidden size fits it, else untrained")
    p.add_argument("--model", help="upstream LLM: 'smollm2' (embedded), hub id, folder or .gguf "
                                    "(default: the agent's recorded model, else smollm2)")
    p.add_argument("--decisions", "--agent-decisions", dest="decisions", default="agent",
                   choices=["agent", "greedy", "sampled"],
                   help="the agent accepts when pi(accept) >= 0.5 (greedy; see --accept-threshold), or with "
                        "probability pi(accept), "
                        "seeded (sampled: how it behaved in training); default: what the agent file recommends "
                        "(its metadata's 'decisions'), else greedy")
    p.add_argument("--mode", choices=["hybrid", "lazy", "eager"], default="lazy")
    add_intervention_arguments(p)
    add_continuation_argument(p)
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    add_sampling_arguments(p)
    p.add_argument("--batch-size", type=int, default=8)
    add_dtype_argument(p)
    p.add_argument("--device", default="auto")
    p.add_argument("--backend", default="transformers",
                   help="what runs the upstream LLM: transformers (default) or vllm (docs/VLLM.md): MARA "
                        "answers through the vLLM decoder, upstream baselines through vLLM's batched generation")
    p.add_argument("--vllm", action="append", default=[], metavar="KEY=VALUE",
                   help="a vLLM engine setting (a field of core.config.VllmEngineConfig), e.g. "
                        "--vllm enforce_eager=true --vllm gpu_memory_utilization=0.3; repeatable; needs --backend vllm")


def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    """How answers are drawn (``envs.mdp.Draw``) and, for experts, the candidate set the agent judges."""
    draw = p.add_argument_group(
        "drawing the answers", "within the candidate set the agent judges; they never change that set. "
        "Temperature 0 (or top-k 1): deterministic answers, the agent's greedy decisions and the upstream's greedy "
        "continuation. Otherwise they shape the upstream's sampling where it draws (a sampled continuation past the "
        "horizon, the sampled baselines); default: the candidate set's own")
    draw.add_argument("--temperature", type=float)
    draw.add_argument("--top-k", type=int)
    draw.add_argument("--top-p", type=float)
    expert = p.add_argument_group(
        "the candidate set (experts)", "the agent judges the candidate set it was trained on, recorded in its file "
        "(else the paper's temperature 0.8, top-k 40, top-p 0.95); a different one is warned about, and top-k 1 "
        "leaves the agent nothing to decide")
    expert.add_argument("--candidate-temperature", type=float)
    expert.add_argument("--candidate-top-k", type=int)
    expert.add_argument("--candidate-top-p", type=float)


def draw_from_args(args: argparse.Namespace):
    """``--temperature`` / ``--top-k`` / ``--top-p`` as an ``envs.mdp.Draw``."""
    from envs.mdp import Draw

    return Draw(args.temperature, args.top_k, args.top_p)


def candidates_from_args(args: argparse.Namespace) -> dict:
    """The ``--candidate-*`` options given, as changes to the agent's candidate set."""
    given = {"temperature": args.candidate_temperature, "top_k": args.candidate_top_k,
             "top_p": args.candidate_top_p}
    return {name: value for name, value in given.items() if value is not None}


def argument_type(parse):
    """An argparse type that reads a value with ``parse`` (a ValueError is the option's error)."""
    def read(text: str):
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return read


def add_intervention_arguments(p: argparse.ArgumentParser) -> None:
    """How far the agent steps in: the tokens it decides, how sure a rejection must be, which
    requests it may touch and where its declines end; each defaults to what the agent file
    recommends ("agent")."""
    from core import agent_file

    settings = (
        ("--horizon", agent_file.parse_horizon, agent_file.AGENT_HORIZON, "N|all|agent",
         ("the agent decides the first N tokens of an answer and the upstream alone the rest (--continuation): an "
          "agent has never seen a state past the episodes it was trained on; 'all': every token; default 'agent': "
          "what the agent file recommends (its metadata's 'horizon'), else all")),
        ("--accept-threshold", agent_file.parse_accept_threshold, agent_file.AGENT_THRESHOLD, "T|agent",
         ("how sure the agent must be to step into an answer: greedy decisions accept while pi(accept) >= T, and "
          "after its first rejection at pi(accept) >= 0.5 (its mode); lower T leaves more answers as the upstream "
          "writes them; default 'agent': what the agent file recommends (its metadata's 'accept_threshold'), else "
          "0.5")),
        ("--request-gate", agent_file.parse_request_gate, agent_file.AGENT_GATE, "off|embedded|FILE|agent",
         ("which requests the agent may touch: a gate reads the request alone and leaves those it does not find "
          "harmful to the upstream (its greedy answer under greedy decisions); 'off': every request; 'embedded': "
          "the shipped harmful-request gate; or a response-class head file; default 'agent': what the agent file "
          "recommends (its metadata's 'request_gate'), else off")),
        ("--decline-sentences", agent_file.parse_decline_sentences, agent_file.AGENT_CUT, "N|off|agent",
         ("an answer the agent has stepped into (rejected a candidate of) ends with its N-th sentence, before the "
          "upstream's continuation can take a decline back; 'off': answers run to their length; default 'agent': "
          "what the agent file recommends (its metadata's 'decline_sentences'), else off")),
    )
    for flag, parse, default, metavar, help_text in settings:
        p.add_argument(flag, type=argument_type(parse), default=default, metavar=metavar, help=help_text)


def add_continuation_argument(p: argparse.ArgumentParser) -> None:
    from core.agent_file import CONTINUATIONS

    p.add_argument("--continuation", choices=CONTINUATIONS, default=None,
                   help="past the horizon, the upstream's most likely token (greedy) or its own sampling "
                        "(sampled); default: as the agent's decisions are taken")


def add_dtype_argument(p: argparse.ArgumentParser) -> None:
    from core.config import AUTO, DTYPES

    p.add_argument("--dtype", default="float32", choices=[*DTYPES, AUTO],
                   help="the upstream's weights and activations; auto: bfloat16 where the hardware computes it "
                        "natively (a GPU, a CPU with AVX-512 BF16 or AMX), else float32. Default float32, in "
                        "which the shipped agent's figures were measured")


def generator_from_args(args: argparse.Namespace, seed: int = 0):
    from envs.generation import AlignedGenerator
    from rewards.request_gate import load_request_gate

    generator = AlignedGenerator.from_paths(
        agent=args.agent, model=args.model, dtype=args.dtype, device=args.device,
        backend=args.backend, vllm=_engine_config(args.vllm), max_new_tokens=args.max_new_tokens,
        candidates=candidates_from_args(args), draw=draw_from_args(args), mode=args.mode,
        decisions=args.decisions, horizon=args.horizon, accept_threshold=args.accept_threshold,
        decline_sentences=args.decline_sentences,
        continuation=args.continuation, batch_size=args.batch_size, seed=seed,
    )
    generator.request_gate = load_request_gate(args.request_gate, generator.agent_path)
    return generator


def _engine_config(settings: list[str]):
    """``--vllm KEY=VALUE`` settings as a ``VllmEngineConfig`` (values read as YAML, like
    ``launch.py --set``), or None when there are none."""
    if not settings:
        return None
    from core.config import VllmEngineConfig
    from driver.config import from_dict, yaml_value

    values = {}
    for item in settings:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--vllm {item!r} must look like KEY=VALUE")
        values[key.strip()] = yaml_value(raw)
    return from_dict(VllmEngineConfig, values)
