"""Run notebooks top to bottom in a real Jupyter kernel, as a learner runs them, and save their outputs in place, so
the committed lessons show their plots, tables and accuracies, and `tools/run_in_kernel.py` (which CI runs) finds the
committed outputs to be the code's run. Then cleans them with `nbdev_clean`. Stops at the first failing notebook.

    python tools/run_nb.py nbs/05_datasets.ipynb [...]"""
import subprocess, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
import run_in_kernel

if __name__ == '__main__':
    for p in sys.argv[1:]:
        secs, n_html, err = run_in_kernel._run_one(Path(p), write=True)[1:]
        if err: sys.exit(f'{p}: FAILED\n{err}')
        subprocess.run(['nbdev_clean', '--fname', p], check=True)
        print(f'{p}: ran in a kernel in {secs:.1f}s, outputs saved')
