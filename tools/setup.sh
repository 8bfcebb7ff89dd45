#!/usr/bin/env bash
# Installs everything miniai needs, on a stock Debian/Ubuntu machine with Python 3.11 (as root, or a user with sudo)
# or into a Python environment that is already active. Safe to re-run: when nothing changed it installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/env.sh
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
choose_python

# System packages: Fashion-MNIST (no Hugging Face hub needed) and, for a project .venv, Python's venv module
# (Debian ships it apart from python3, without which `python3 -m venv` fails for want of ensurepip).
apt_packages=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || apt_packages+=(dataset-fashion-mnist)
if [ "$MINIAI_PY" = "$MINIAI_VENV/bin/python" ] && [ ! -x "$MINIAI_PY" ]; then
  base=$(base_python)
  [ -n "$base" ] || apt_packages+=(python3)
  { [ -n "$base" ] && "$base" -c 'import ensurepip, venv' 2>/dev/null; } || apt_packages+=(python3-venv)
fi
if [ ${#apt_packages[@]} -gt 0 ]; then
  echo "setup: installing ${apt_packages[*]} with apt"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi

if [ "$MINIAI_PY" = "$MINIAI_VENV/bin/python" ] && [ ! -x "$MINIAI_PY" ]; then
  echo "setup: creating $MINIAI_VENV (the system Python is externally managed, PEP 668)"
  "$(base_python)" -m venv "$MINIAI_VENV"
fi
echo "setup: installing into $("$MINIAI_PY" -c 'import sys; print(sys.prefix)')"

# Nothing to do when this environment was set up from these very requirements (a stamp inside the environment).
stamp="$("$MINIAI_PY" -c 'import sys; print(sys.prefix)')/.miniai-setup"
want="$PWD $(cat settings.ini setup.py | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$MINIAI_PY" -c 'import importlib.util as u, sys; sys.exit(not (u.find_spec("miniai") and u.find_spec("torch")))' ; then
  echo "setup: already done (nothing changed since the last set-up)"; exit 0
fi

# torch pinned in the same install, so no requirement can make pip fetch a multi-GB CUDA build.
# --no-compile: bytecode is written on first import instead (saves a good part of the install time).
# (pip's notes about this machine's empty local index folders are dropped; its errors are not)
pip_install() {
  "$MINIAI_PY" -m pip install -q --disable-pip-version-check --no-compile "$@" \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
}
pip_install "torch==2.13.0" -e ".[dev]"
"$MINIAI_PY" -m pip check >/dev/null
echo "$want" > "$stamp"
echo "setup: done; run commands with 'bash tools/run.sh COMMAND' (e.g. bash tools/run.sh miniai_train)"
