"""``mara safety-reward``: build the rule-based safety reward and its judge
(rewards/recipe/safety.py) from the upstream model's own answers, and measure their
signal-to-noise ratio on the held-out prompt sets.

    mara safety-reward --shared-data ../shared/data --out-dir rewards/data --work-dir runs/safety
    mara safety-reward --shared-data ../shared/data --write-heldout runs/heldout   # the evaluation sets only

The answers are generated once and kept in ``--work-dir`` (answers_*.jsonl); a re-run reads
them. ``label_sample.jsonl`` there holds answers to check the rule labels by hand.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_safety_reward_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("safety-reward", help="build the rule-based safety reward from the upstream's answers",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shared-data", required=True, help="the data folder (prompts/ inside)")
    p.add_argument("--out-dir", default="rewards/data", help="where safety_reward/safety_judge.safetensors go")
    p.add_argument("--work-dir", default="runs/safety", help="generated answers, label sample and figures")
    p.add_argument("--write-heldout", metavar="DIR", help="only write the held-out prompt sets to DIR")
    p.add_argument("--model", default="smollm2", help="the upstream model whose answers are labelled")
    p.add_argument("--prompts-per-kind", type=int, default=200, help="harmful and benign prompts per part")
    p.add_argument("--heldout-sampled", type=int, default=2,
                   help="sampled answers per held-out prompt (the noise of the signal-to-noise ratio)")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--training-config", default=str(Path(__file__).resolve().parents[1] / "configs" / "safety_smollm2.yaml"),
                   help="the training config whose fluency term (reward.fluency_weight, fluency_floor) the "
                        "figures of the whole training reward use")
    p.set_defaults(func=_run)
    return p


def _run(args: argparse.Namespace) -> int:
    from rewards.recipe import safety

    shared = Path(args.shared_data)
    if not (shared / "prompts").is_dir():
        raise FileNotFoundError(f"no prompts/ folder in {shared}")
    if args.write_heldout:
        written = write_heldout(safety.prompt_splits(shared, args.seed)["heldout"], Path(args.write_heldout))
        print(json.dumps({k: str(v) for k, v in written.items()}, indent=1))
        return 0
    from driver.config import load_config

    reward = load_config(args.training_config).reward  # its errors come before any model loads
    fluency_term = (reward.fluency_weight, reward.fluency_floor) if reward.fluency_weight > 0 else None
    answer_fn, loglik_fn = _upstream_fns(args)
    result = safety.run(shared, Path(args.out_dir), answer_fn, work_dir=Path(args.work_dir), loglik_fn=loglik_fn,
                        fluency_term=fluency_term, prompts_per_kind=args.prompts_per_kind,
                        heldout_sampled=args.heldout_sampled, seed=args.seed)
    print(json.dumps(result, indent=1))
    return 0


def write_heldout(sets: dict[str, list[str]], out_dir: Path) -> dict[str, Path]:
    """Each held-out set as ``<name>.json`` (a JSON array of {"instruction": ...})."""
    from core.atomic import atomic_path

    paths = {}
    for name, prompts in sets.items():
        paths[name] = out_dir / f"{name}.json"
        with atomic_path(paths[name]) as tmp:
            tmp.write_text(json.dumps([{"instruction": p} for p in prompts], indent=1), encoding="utf-8")
    return paths


def _upstream_fns(args: argparse.Namespace):
    """What the recipe needs of the upstream model (loaded once, on first use): its answers
    (sampled at temperature t, the whole vocabulary when t is the recipe's 'hot' one, or
    greedy, continuing openings) and its mean log-likelihood of answers (the fluency term)."""
    import functools

    from core.config import SamplingConfig
    from envs.generation import mean_log_likelihood, upstream_answers
    from envs.upstream import load_upstream

    @functools.cache
    def upstream():
        return load_upstream(args.model, device="cpu")

    def loglik(prompts: list[str], answers: list[str]):
        return mean_log_likelihood(upstream(), prompts, answers, batch_size=args.batch_size)

    def answer(prompts: list[str], openings: list[str] | None, temperature: float | None, seed: int) -> list[str]:
        llm = upstream()
        if temperature is None:
            sampling = SamplingConfig(max_new_tokens=args.max_new_tokens)
        else:
            sampling = SamplingConfig(temperature=temperature, top_k=len(llm.tokenizer) if temperature > 1 else 40,
                                      top_p=1.0 if temperature > 1 else 0.95, max_new_tokens=args.max_new_tokens)
        return upstream_answers(llm, prompts, sampling, sample=temperature is not None, seed=seed,
                                batch_size=args.batch_size, openings=openings)

    return answer, loglik
