"""Run notebooks top to bottom in a real Jupyter kernel (nbclient + ipykernel), as a learner runs them.

`nbdev_test` runs notebooks in an IPython shell inside its own process, where fastprogress takes its console path; in
a kernel it takes its HTML path instead (live bars, a table, a redrawn loss plot). This checks that path: each
notebook must run without an error and must show at least one HTML output. Nothing is written back.

    python tools/run_in_kernel.py nbs/09_learner.ipynb nbs/10_activations.ipynb
"""
import sys, time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

def run(path, timeout=1200):
    "Execute the notebook at `path` in a fresh python3 kernel; return the number of HTML outputs it showed."
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}}).execute()
    return sum('text/html' in o.get('data', {}) for c in nb.cells if c.cell_type == 'code' for o in c.outputs)

if __name__ == '__main__':
    failed = []
    for p in map(Path, sys.argv[1:]):
        start = time.time()
        try:
            n_html = run(p)
            if n_html == 0: raise AssertionError('no HTML output: fastprogress did not take its notebook path')
            print(f'{p}: ok in a kernel, {n_html} HTML outputs, {time.time()-start:.0f}s', flush=True)
        except (CellExecutionError, AssertionError) as e:
            failed.append(p.name)
            print(f'{p}: FAILED in a kernel\n{e}', flush=True)
    sys.exit(1 if failed else 0)
