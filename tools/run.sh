#!/usr/bin/env bash
# Runs a command (miniai_train, miniai_eval, jupyter, python, ...) in the environment tools/setup.sh installed into.
#     bash tools/run.sh miniai_train --epochs 2
set -euo pipefail
here="$PWD"; cd "$(dirname "$0")/.."
source tools/env.sh
activate_python
cd "$here"
[ $# -gt 0 ] || { echo "usage: bash tools/run.sh COMMAND [ARGS...]" >&2; exit 2; }
exec "$@"
