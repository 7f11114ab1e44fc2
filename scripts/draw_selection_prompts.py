"""Draw the prompts on which an agent's decoding settings are chosen (decision rule, horizon,
continuation): a few prompts of each training prompt set of a run's configuration, so that the
held-out evaluation sets play no part in the choice (docs/RESULTS.md, tuning log).

    python scripts/draw_selection_prompts.py configs/safety_smollm2.yaml runs/select --per-set 40

writes runs/select/train_<name>.json for each entry of the config's prompt ``mix``, named by
``--names`` (default: set1, set2, ...), with the excluded (held-out) prompts left out.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.prompts import read_prompt_set  # noqa: E402
from driver.config import load_config  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("out_dir")
    p.add_argument("--per-set", type=int, default=40)
    p.add_argument("--names", default="", help="comma-separated, one per mix entry (e.g. saferlhf,redteam,benign)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()

    prompts = load_config(args.config).prompts
    if not prompts.mix:
        sys.exit(f"{args.config}: prompts.mix is empty; this script draws from each set of a mix")
    names = args.names.split(",") if args.names else [f"set{i + 1}" for i in range(len(prompts.mix))]
    if len(names) != len(prompts.mix):
        sys.exit(f"{len(names)} names for {len(prompts.mix)} prompt sets")

    excluded = {text for s in prompts.exclude for text in read_prompt_set(s)}
    rng = random.Random(args.seed)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, source in zip(names, prompts.mix):
        pool = [text for text in read_prompt_set(source) if text not in excluded]
        chosen = rng.sample(pool, min(args.per_set, len(pool)))
        path = out / f"train_{name}.json"
        path.write_text(json.dumps([{"instruction": text} for text in chosen], indent=1))
        print(f"{path}: {len(chosen)} of {len(pool)} prompts")


if __name__ == "__main__":
    main()
