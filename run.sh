#!/usr/bin/env bash
# The project's front door. Sets up a virtual environment in .venv on first use (or when
# pyproject.toml changes), then:
#   ./run.sh test [pytest args]       runs the whole test suite
#   ./run.sh <recipe> [options]       runs `python -m datasets_build <recipe> [options]`
# Environment: PYTHON (interpreter for the venv, default python3), VENV (default <repo>/.venv),
# TORCH_SPEC (default torch==2.13.0; skipped when the venv already has a torch, e.g. a CUDA one).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${VENV:-$ROOT/.venv}"
stamp="$VENV/.installed-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "Setting up $VENV (first run or pyproject.toml changed) ..." >&2
  [ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  # torch first and pinned, so that no later requirement pulls a multi-GB CUDA build by accident.
  if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    "$VENV/bin/python" -m pip install -q "${TORCH_SPEC:-torch==2.13.0}" >&2
  fi
  "$VENV/bin/python" -m pip install -q -e "$ROOT[all,test]" >&2
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
if [ "${1:-}" = "test" ]; then
  shift
  cd "$ROOT"
  exec "$VENV/bin/python" -m pytest "$@"
fi
exec "$VENV/bin/python" -m datasets_build "$@"
