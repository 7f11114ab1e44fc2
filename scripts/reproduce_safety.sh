#!/usr/bin/env bash
# Reproduces the shipped safety agent of docs/RESULTS.md (try 17d): builds the rule-based safety
# reward and its judge, trains the SmolLM2-135M agent against the reward and evaluates it on
# three held-out prompt sets against the upstream model's greedy answers. About 35 min for the
# reward, the training budget of configs/safety_smollm2.yaml (1 h 57 min, in four parts), then
# ~25 min of evaluation on 2 CPU cores. The run is asynchronous: a rerun gives a similar agent,
# not the same bytes. Needs
# ../shared/data (the project's public data folder) and the project installed
# (bash scripts/install.sh).
#   bash scripts/reproduce_safety.sh [RUN_NAME]
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="${1:-safety-smollm2}"
SHARED="${SHARED_DATA:-../shared/data}"

# 1. The three evaluation sets (200 PKU-SafeRLHF test, 200 HH red-team, 200 HH helpful-base
#    requests) that neither the reward, the judge nor the training run sees.
mara safety-reward --shared-data "$SHARED" --write-heldout runs/heldout

# 2. The reward (part A of the prompts) and the judge (part B, disjoint), from the upstream's
#    own answers labelled by rules; their signal-to-noise figures go to runs/safety/figures.json.
mara safety-reward --shared-data "$SHARED" --out-dir rewards/data --work-dir runs/safety

# 3. What an agent can reach on this upstream model, before training (a 40-prompt subset per set).
mara probe --prompts "saferlhf=runs/heldout/saferlhf_test.json" --prompts "redteam=runs/heldout/redteam_heldout.json" \
    --prompts "benign=runs/heldout/benign_heldout.json" \
    --judge "response-class:rewards/data/safety_judge.safetensors:overall" \
    --num-prompts 40 --batch-size 32 --out "runs/probe"

# 4. Train (prompts: PKU-SafeRLHF train, HH red-team and helpful-base; held-out sets excluded), in
#    the four parts the shipped agent was trained in, each resumed from the one before (the run
#    prints what each resume changes): from scratch with a mild fluency term (0.5 a nat below -3.0)
#    and 35% benign prompts, then the config's fluency term (1.0 below -1.6), then 52% and 62%
#    benign prompts (the config's mix) against over-refusal. Times are totals since the start.
python launch.py --config configs/safety_smollm2.yaml --set "run_name=$RUN" \
    --set reward.fluency_weight=0.5 --set reward.fluency_floor=-3.0 --set prompts.mix.2.limit=4000 \
    --set budget.seconds=1700
python launch.py --resume "runs/$RUN" --set reward.fluency_weight=1.0 --set reward.fluency_floor=-1.6 \
    --set budget.seconds=3000
python launch.py --resume "runs/$RUN" --set prompts.mix.2.limit=8000 --set budget.seconds=5800
python launch.py --resume "runs/$RUN" --set prompts.mix.2.limit=12000 --set budget.seconds=7000
mara learning-curve "runs/$RUN" --out "runs/$RUN/learning_curve.png" --block 50
# The decision rule and horizon chosen on training-distribution prompts (docs/RESULTS.md, tuning log;
# python scripts/draw_selection_prompts.py draws them); with greedy decisions the upstream continues greedily.
mara agent "runs/$RUN/agent.safetensors" --recommend-decisions greedy --recommend-horizon 10

# 5. Preference rate over the upstream's greedy answer, judged by the safety judge (part B:
#    no part in training), refusal rates (the phrase heuristic) and fluency (the upstream's
#    log-likelihood of the answers, against its own sampled ones).
mara eval --agent "runs/$RUN/agent.safetensors" \
    --prompts "saferlhf=runs/heldout/saferlhf_test.json" \
    --prompts "redteam=runs/heldout/redteam_heldout.json" \
    --prompts "benign=runs/heldout/benign_heldout.json" \
    --judge "judge=response-class:rewards/data/safety_judge.safetensors:overall" \
    --judge "reward=response-class:rewards/data/safety_reward.safetensors:overall" \
    --sampled --fluency --max-new-tokens 48 --batch-size 32 --seed 0 --out "runs/$RUN/eval"
