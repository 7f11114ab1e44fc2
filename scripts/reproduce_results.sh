#!/usr/bin/env bash
# Reproduces docs/RESULTS.md: trains the SmolLM2-135M agent and evaluates it against the
# upstream model's greedy answers. About 2 hours of training on 2 CPU cores, then ~15 min
# of evaluation. Needs ../shared/data (the project's public data folder) and the project
# installed (bash scripts/install.sh).
#   bash scripts/reproduce_results.sh [RUN_NAME]
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="${1:-align-smollm2}"
SHARED="${SHARED_DATA:-../shared/data}"

# 1. The evaluation prompts neither the reward nor the judge head saw, kept out of training.
python -m rewards.recipe.build --shared-data "$SHARED" --write-heldout runs/heldout

# 2. Train (the config's prompts: PKU-SafeRLHF train + HH helpful-base, held-out sets excluded).
python launch.py --config configs/align_smollm2.yaml --set "run_name=$RUN"

# 3. The learning curve and the run's throughput.
mara learning-curve "runs/$RUN" --out "runs/$RUN/learning_curve.png" --block 50

# 4. Preference rate over the upstream's greedy answer, judged by the embedded judge head
#    (trained on data disjoint from the training reward's), and refusal rates. The training
#    reward is scored too, marked as such in results.md: it is not independent evidence.
mara eval --agent "runs/$RUN/agent.safetensors" \
    --prompts "harmful=$SHARED/prompts/saferlhf_test.json" \
    --prompts benign=runs/heldout/benign_heldout.json \
    --judge judge=embedding-bt:rewards/data/judge_head.safetensors:overall \
    --judge reward=embedding-bt:rewards/data/reward_head.safetensors:overall \
    --max-new-tokens 48 --batch-size 32 --seed 0 --out "runs/$RUN/eval"
