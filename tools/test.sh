#!/usr/bin/env bash
# Runs every check miniai has; exits non-zero if any fails. Assumes tools/setup.sh has run.
#  1. the package is what the notebooks export, and the notebooks are clean (nbdev_export / nbdev_clean change nothing)
#  2. every notebook runs top to bottom (nbdev_test: each non-export cell is a test), and the ones with progress
#     bars and plots run again in a real Jupyter kernel
#  3. the pytest suite in tests/
set -uo pipefail
cd "$(dirname "$0")/.."
export MPLBACKEND=Agg HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
failed=()
state() { git status --porcelain --untracked-files=all -- miniai nbs; git diff -- miniai nbs; }

before=$(state)
nbdev_export && nbdev_clean || failed+=("nbdev_export/nbdev_clean errored")
after=$(state)
if [ "$before" != "$after" ]; then
  echo "FAIL: nbdev_export / nbdev_clean changed the tree (package out of sync with the notebooks, or notebooks not clean):"
  diff <(echo "$before") <(echo "$after") | head -40
  failed+=("sync")
fi

# Convert the data once before the notebooks run in parallel, rather than in every notebook at once.
python -c "from miniai.datasets import load_fashion_mnist, decoded_dls; decoded_dls(load_fashion_mnist(), 64)" \
  || failed+=("data warm-up")

# Plain nbdev_test, as nbdev users run it: miniai itself gives PyTorch one share of the cores under nbdev_test
# (miniai.core reacts to nbdev's IN_TEST), so no thread settings are needed here.
start=$(date +%s)
nbdev_test --do_print --timing || failed+=("nbdev_test")
echo "nbdev_test took $(( $(date +%s) - start ))s"

# The notebooks that draw progress bars and plots, once more in a real Jupyter kernel, where fastprogress takes its
# HTML path (nbdev_test's in-process shell takes the console one).
python tools/run_in_kernel.py nbs/09_learner.ipynb nbs/10_activations.ipynb || failed+=("notebooks in a kernel")

python -m pytest -q tests || failed+=("pytest")

if [ ${#failed[@]} -gt 0 ]; then echo "FAILED: ${failed[*]}"; exit 1; fi
echo "ALL CHECKS PASSED"
