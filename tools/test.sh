#!/usr/bin/env bash
# Runs every check miniai has, in the environment tools/setup.sh installed into; exits non-zero if any fails.
#  1. the package is what the notebooks export, and the notebooks are clean (nbdev_export / nbdev_clean change nothing)
#  2. every notebook runs top to bottom in a real Jupyter kernel, as a learner runs it (tools/run_in_kernel.py: the
#     cells nbdev_test runs, one kernel per core); plain `nbdev_test` runs the same cells in-process
#  3. the pytest suite in tests/, beside the notebooks
set -uo pipefail
cd "$(dirname "$0")/.."
source tools/env.sh
activate_python || exit 1
export MPLBACKEND=Agg HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
failed=()
took() { echo "-- $1 took $(( $(date +%s) - $2 ))s"; }
state() { git status --porcelain --untracked-files=all -- miniai nbs; git diff -- miniai nbs; }

start=$(date +%s); before=$(state)
nbdev_export && nbdev_clean || failed+=("nbdev_export/nbdev_clean errored")
after=$(state)
if [ "$before" != "$after" ]; then
  echo "FAIL: nbdev_export / nbdev_clean changed the tree (package out of sync with the notebooks, or notebooks not clean):"
  diff <(echo "$before") <(echo "$after") | head -40
  failed+=("sync")
fi
took "sync check" $start

# Convert the data once, before the notebooks run in parallel, rather than in every notebook at once.
start=$(date +%s)
python -c "from miniai.datasets import load_fashion_mnist, decoded_dls; decoded_dls(load_fashion_mnist(), 64)" \
  || failed+=("data warm-up")
took "data warm-up" $start

# The notebooks (one kernel per core) and pytest run side by side: each alone leaves a core idle part of the time (the
# last notebooks, pytest's subprocesses starting), so together they take less than one after the other.
start=$(date +%s)
notebooks_log=$(mktemp)
python tools/run_in_kernel.py > "$notebooks_log" 2>&1 & notebooks=$!
python -m pytest -q -p no:cacheprovider tests || failed+=("pytest")
took "pytest" $start
wait $notebooks || failed+=("notebooks in kernels")
cat "$notebooks_log"; rm -f "$notebooks_log"
took "notebooks and pytest" $start

if [ ${#failed[@]} -gt 0 ]; then echo "FAILED: ${failed[*]}"; exit 1; fi
echo "ALL CHECKS PASSED"
