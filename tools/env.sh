# Sourced by tools/setup.sh, tools/run.sh and tools/test.sh: decides which Python miniai lives in and puts that
# environment's bin/ first on PATH.
#   - A Python environment that is already active (a venv or conda env, or a pyenv/other Python first on PATH that
#     pip may install into) is used as it is.
#   - Otherwise (Debian's own python3, which PEP 668 marks EXTERNALLY-MANAGED) miniai gets its own `.venv` in the
#     repository, so nothing is installed into the system Python.
MINIAI_VENV="$PWD/.venv"

# True when `$1` is a Python that pip may install into: inside a virtual environment, or not marked by PEP 668.
installable() {
  "$1" - <<'PY' 2>/dev/null
import sys, sysconfig, os
in_venv = sys.prefix != sys.base_prefix
managed = os.path.exists(os.path.join(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED'))
sys.exit(0 if in_venv or not managed else 1)
PY
}

# The system Python to build `.venv` from.
base_python() { command -v python3 || command -v python || true; }

# Sets MINIAI_PY to the interpreter miniai is installed into (it may not exist yet: setup creates it).
choose_python() {
  local py=""
  if [ -n "${VIRTUAL_ENV:-}" ] || [ -n "${CONDA_PREFIX:-}" ]; then py=$(command -v python || command -v python3); fi
  if [ -z "$py" ]; then
    py=$(base_python)
    if [ -z "$py" ] || ! installable "$py"; then py="$MINIAI_VENV/bin/python"; fi
  fi
  MINIAI_PY="$py"
}

# Puts the chosen environment's scripts (miniai_train, nbdev_test, pytest, ...) first on PATH.
activate_python() {
  choose_python
  if [ ! -x "$MINIAI_PY" ]; then
    echo "miniai is not set up here yet: run 'bash tools/setup.sh' first." >&2; return 1
  fi
  local bin; bin=$("$MINIAI_PY" -c 'import sys, sysconfig; print(sysconfig.get_path("scripts"))')
  export PATH="$bin:$PATH"
}
