"""What the per-prompt greedy baseline saves: transitions scored per second, before and after.

The reward actor's throughput with the upstream's greedy baseline decoded and scored for every
batch (before) and once per prompt (after), in one run.

    python benchmarks/bench_greedy_baseline.py [--prompts 16] [--passes 3] [--batch 8]
                                               [--score-tokens 128] [--episode-tokens 10]

The reward is the one ``configs/reader_smollm2.yaml`` trains with: the reader reward
(``answer-reader``) of each episode continued greedily to ``--score-tokens`` tokens, relative
to the upstream's greedy answer of the same length (``reward.baseline: upstream-greedy``).
Episodes are the shipped agent's training rollouts (sampled decisions, ``--episode-tokens``
tokens) on the project's default prompts, ``--passes`` passes over ``--prompts`` of them, as a
training run goes over its prompt pool. Both ways score the same episodes:

- before: each batch decodes the greedy answers of its prompts and scores them with the answers;
- after: ``actors.reward_actor.RewardActor`` (in this process), which keeps each prompt's greedy
  answer and its score, and does not score an answer equal to the greedy one.

The rewards of both ways are checked to agree. Times come from one process on one machine,
so the ratio holds where the absolute seconds do not.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import ray
import torch
from record import write_result

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as python benchmarks/bench_greedy_baseline.py from anywhere

from actors.reward_actor import RewardActor  # noqa: E402
from actors.worker_group import start_actor  # noqa: E402
from core.agent_file import SHIPPED_AGENT  # noqa: E402
from core.config import ModelConfig, ReplayConfig, RewardConfig, SamplingConfig, ScorerSpec  # noqa: E402
from envs.generation import AlignedGenerator, upstream_answers  # noqa: E402
from replay.server import ReplayServer  # noqa: E402
from rewards import default_prompts_path  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--score-tokens", type=int, default=128)
    parser.add_argument("--episode-tokens", type=int, default=10)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "bench_greedy_baseline.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # as a reward actor runs

    prompts = [r["instruction"] for r in json.loads(default_prompts_path().read_text())][: args.prompts]
    sampling = SamplingConfig(temperature=0.8, top_k=40, top_p=0.95, max_new_tokens=args.episode_tokens)
    generator = AlignedGenerator.from_paths(agent=str(SHIPPED_AGENT), model="smollm2", decisions="sampled",
                                            horizon="all", max_new_tokens=args.episode_tokens,
                                            batch_size=args.batch)
    batches = []  # the training stream: passes over the pool, one rollout call per batch
    for n in range(args.passes):
        for start in range(0, len(prompts), args.batch):
            results = generator.run_episodes(prompts[start:start + args.batch], policy_version=n)
            batches.append([r.episode for r in results])
    transitions = sum(len(e) for batch in batches for e in batch)

    reward = RewardConfig(scorers=(ScorerSpec(kind="answer-reader", path="embedded"),),
                          baseline="upstream-greedy", score_tokens=args.score_tokens)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    replay = start_actor(ReplayServer, {"num_cpus": 0}, state_dim=generator.actor.state_dim,
                         config=ReplayConfig(capacity=100_000, min_size_to_sample=1, samples_per_insert=1e6,
                                             error_buffer=1e9))
    actor = RewardActor(reward=reward, replay=replay, model=ModelConfig(name="smollm2", dtype="float32"),
                        sampling=sampling)
    upstream, scorer = actor.upstream, actor.reward
    upstream.llm  # loaded before the clock starts
    scorer.raw(prompts[:2], ["warm-up", "warm-up"])

    start = time.perf_counter()
    before = []
    for batch in batches:
        asked, said = [e.prompt for e in batch], [e.response for e in batch]
        read = upstream.continued(asked, said, [e.finished for e in batch])
        greedy = upstream_answers(upstream.llm, asked, replace(sampling, max_new_tokens=args.score_tokens),
                                  batch_size=len(asked))
        before.extend(scorer.score(asked, read, greedy_scores=scorer.raw(asked, greedy)))
    before_s = time.perf_counter() - start

    start = time.perf_counter()
    after = [r for batch in batches for r in actor.score_and_insert(batch).rewards]
    after_s = time.perf_counter() - start
    ray.shutdown()
    np.testing.assert_allclose(after, before, atol=1e-3)  # the same rewards

    rows = [{"baseline": "decoded and scored per batch (before)", "seconds": round(before_s, 1),
             "transitions/s": round(transitions / before_s, 2)},
            {"baseline": "once per prompt (after)", "seconds": round(after_s, 1),
             "transitions/s": round(transitions / after_s, 2)}]
    for row in rows:
        row["speed-up"] = round(before_s / row["seconds"], 2) if row["seconds"] else None
        print(json.dumps(row), flush=True)
    print(f"\n{len(batches)} batches, {transitions} transitions, {args.passes} passes over {len(prompts)} prompts")
    print("| baseline | seconds | transitions/s | speed-up |\n| --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['baseline']} | {r['seconds']} | {r['transitions/s']} | {r['speed-up']} |")
    write_result("bench_greedy_baseline", rows, ratios=["speed-up"], path=args.json,
                 notes=f"{args.passes} passes over {len(prompts)} default prompts in batches of {args.batch}; "
                       f"{transitions} transitions of the shipped agent's {args.episode_tokens}-token episodes; "
                       f"reader reward at {args.score_tokens} tokens, float32, one torch thread")
    print("wrote", args.json)


if __name__ == "__main__":
    main()
