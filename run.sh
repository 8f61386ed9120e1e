#!/usr/bin/env bash
# The project's front door. Sets up a virtual environment in .venv on first use (or when
# pyproject.toml changes), then:
#   ./run.sh test [pytest args]       runs the whole test suite
#   ./run.sh <command> [options]      runs `python -m datasets_build <command> [options]`
# Environment: PYTHON (interpreter for the venv, default python3), VENV (default <repo>/.venv),
# TORCH_SPEC (default torch==2.13.0; skipped when the venv already has a torch, e.g. a CUDA one).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${VENV:-$ROOT/.venv}"
stamp="$VENV/.installed-$(cat "$ROOT/pyproject.toml" "$ROOT/run.sh" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "Setting up $VENV (first run, or pyproject.toml changed; the first time compiles llama.cpp: ~10 min) ..." >&2
  [ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
  pip=("$VENV/bin/python" -m pip install -q)
  "${pip[@]}" --upgrade pip >&2
  # torch first and pinned, so that no later requirement pulls a multi-GB CUDA build by accident.
  if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    "${pip[@]}" "${TORCH_SPEC:-torch==2.13.0}" >&2
  fi
  constraints="$VENV/constraints.txt"
  "$VENV/bin/python" -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > "$constraints"
  # llama.cpp for `--llm local`, built for any x86-64 CPU: a native build can use instructions
  # that a virtual machine's CPU announces but does not run. No wheel cache: a cached native
  # build would come back.
  if ! "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
    CMAKE_ARGS="-DGGML_NATIVE=OFF" "${pip[@]}" --no-cache-dir -c "$constraints" "llama-cpp-python[server]>=0.3" >&2
  fi
  "${pip[@]}" -c "$constraints" -e "$ROOT[all,local-llm,test]" >&2
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
if [ "${1:-}" = "test" ]; then
  shift
  cd "$ROOT"
  exec "$VENV/bin/python" -m pytest "$@"
fi
exec "$VENV/bin/python" -m datasets_build "$@"
