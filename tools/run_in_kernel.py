"""Run notebooks top to bottom in real Jupyter kernels (nbclient + ipykernel), as a learner runs them.

`nbdev_test` runs notebooks in an IPython shell inside its own process. A learner uses a kernel, where some things
differ: fastprogress takes its HTML path (live bars, a table, a redrawn loss plot), matplotlib draws inline, and
IPython brings its own debugger. This runs each notebook in a fresh kernel, several at once (one per core by default),
skips the cells nbdev_test skips (`#| eval: false`), and gives PyTorch the same share of threads as under nbdev_test
(`IN_TEST=1`). A notebook fails if a cell raises, or if it draws progress bars (`ProgressCB`) but shows no HTML.
Nothing is written back.

    python tools/run_in_kernel.py                      # every notebook in nbs/
    python tools/run_in_kernel.py nbs/09_learner.ipynb --workers 1
"""
import argparse, os, re, sys, time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

SKIP = re.compile(r'^\s*#\s*\|\s*eval\s*:\s*false', re.M)

def run(path, timeout=600):
    "Execute the notebook at `path` in a fresh python3 kernel; return `(seconds, number of HTML outputs)`."
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if not (c.cell_type == 'code' and SKIP.search(c.source))]
    start = time.time()
    NotebookClient(nb, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}},
                   extra_arguments=['--log-level=ERROR']).execute()   # without the kernel's start-up notes
    n_html = sum('text/html' in o.get('data', {}) for c in nb.cells if c.cell_type == 'code' for o in c.outputs)
    if n_html == 0 and any('ProgressCB(' in c.source for c in nb.cells if c.cell_type == 'code'):
        raise AssertionError('it shows progress bars, but no HTML output: fastprogress did not take its notebook path')
    return time.time() - start, n_html

def _run_one(path):
    try: return path, *run(path), None
    except (CellExecutionError, AssertionError, TimeoutError) as e: return path, None, None, f'{type(e).__name__}: {e}'

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('notebooks', nargs='*', help='default: every notebook in nbs/')
    p.add_argument('--workers', type=int, default=len(os.sched_getaffinity(0)))
    args = p.parse_args()
    nbs = [Path(n) for n in args.notebooks] or sorted(Path(__file__).parent.parent.glob('nbs/*.ipynb'))
    nbs.sort(key=lambda n: -n.stat().st_size)   # roughly the slowest first, so the last to finish are short ones
    os.environ['IN_TEST'] = '1'                  # miniai then gives PyTorch one core's share, as under nbdev_test
    os.environ.pop('MPLBACKEND', None)           # plots take the inline path a learner sees
    failed, start = [], time.time()
    with ProcessPoolExecutor(args.workers) as pool:
        for fut in as_completed([pool.submit(_run_one, n) for n in nbs]):
            path, secs, n_html, err = fut.result()
            if err: failed.append(path.name); print(f'{path}: FAILED in a kernel\n{err}', flush=True)
            else: print(f'{path}: ok in a kernel in {secs:.0f}s ({n_html} HTML outputs)', flush=True)
    print(f'{len(nbs)} notebooks in kernels, {args.workers} at a time: {time.time()-start:.0f}s; '
          f'{"failed: " + ", ".join(failed) if failed else "all passed"}')
    sys.exit(1 if failed else 0)

if __name__ == '__main__': main()
