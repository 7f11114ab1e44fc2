#!/usr/bin/env bash
# One command that checks MARA's GPU paths on a machine with one NVIDIA GPU, in at most 8 minutes:
#   bash scripts/gpu_check.sh                      # installs the CUDA build first (README, GPU set-up)
#   GPU_CHECK_SKIP_INSTALL=1 bash scripts/gpu_check.sh   # the CUDA build is installed already
# It lists the GPU-marked tests, checks that there is a GPU (on a CPU machine it stops there,
# saying so, before installing anything), installs, runs those tests, then prints one table (benchmarks/bench_gpu.py): aligned
# generation against plain decoding, the learner's updates/s with the replay on the GPU, a
# 2-minute launch.py run with 2 rollout workers, and the vLLM backend's states against transformers'.
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET_S=${GPU_CHECK_BUDGET_S:-480}
started=$SECONDS
left() { echo $(( BUDGET_S - (SECONDS - started) )); }
fail() { echo "gpu_check: $*" >&2; exit 1; }
step() { echo; echo "== gpu_check [$(( SECONDS - started )) s]: $*"; }

GPU_TESTS=tests/test_gpu.py  # every GPU-marked test lives there (tests/test_gpu.py checks it)

step "1/5 the GPU-marked tests"
timeout "$(left)" python -m pytest -q --collect-only -m gpu "$GPU_TESTS" | tail -n 1

step "2/5 is there an NVIDIA GPU?"
command -v nvidia-smi >/dev/null 2>&1 \
    || fail "no NVIDIA GPU here (nvidia-smi not found): the steps from here on need one, starting with the CUDA build's install, which a CPU machine must not get. On a CPU machine the suite is: python -m pytest -q"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    || fail "nvidia-smi found no working GPU"

step "3/5 install the CUDA build (TORCH_SPEC=torch bash scripts/install.sh)"
if [ -n "${GPU_CHECK_SKIP_INSTALL:-}" ]; then
    echo "skipped (GPU_CHECK_SKIP_INSTALL is set)"
else
    TORCH_SPEC=torch timeout "$(left)" bash scripts/install.sh || fail "the install failed or ran out of time"
fi
python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || fail "torch sees no CUDA device: its CPU build is installed (run without GPU_CHECK_SKIP_INSTALL)"

step "4/5 run the GPU-marked tests"
timeout "$(left)" python -m pytest -q -m gpu "$GPU_TESTS" || fail "GPU tests failed (above)"

step "5/5 the table (benchmarks/bench_gpu.py)"
run_s=120
if [ "$(left)" -lt 300 ]; then run_s=60; fi  # keep the whole check within its budget
timeout "$(left)" python benchmarks/bench_gpu.py --run-seconds "$run_s" || fail "bench_gpu.py failed or ran out of time"
echo "gpu_check: done in $(( SECONDS - started )) s"
