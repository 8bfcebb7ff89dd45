"""Run notebooks top to bottom in real Jupyter kernels (nbclient + ipykernel), as a learner runs them.

`nbdev_test` runs notebooks in an IPython shell inside its own process. A learner uses a kernel, where some things
differ: fastprogress takes its HTML path (live bars, a table, a redrawn loss plot), matplotlib draws inline, and
IPython brings its own debugger. This runs each notebook in a fresh kernel, several at once (one per core by default),
skips the cells nbdev_test skips (`#| eval: false`), and gives PyTorch the same share of threads as under nbdev_test
(`IN_TEST=1`). A notebook fails if a cell raises, if it draws progress bars (`ProgressCB`) but shows no HTML, or if
its committed outputs are not its code's run (`output_mismatches`: the text each cell prints, numbers aside, must be
what this run prints; no output may show a temporary machine path). Nothing is written back.

    python tools/run_in_kernel.py                      # every notebook in nbs/
    python tools/run_in_kernel.py nbs/09_learner.ipynb --workers 1
    python tools/run_in_kernel.py nbs/09_learner.ipynb --write   # run it and save its outputs (tools/run_nb.py)
"""
import argparse, os, re, sys, time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

SKIP = re.compile(r'^\s*#\s*\|\s*eval\s*:\s*false', re.M)
# A cell whose printed text legitimately differs between runs in more than its numbers (a random sample's class
# names, say) says so with this comment; its outputs are then not compared.
VARIES = re.compile(r'^\s*#\s*output varies', re.M)
NUMBER = re.compile(r'[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|0x[0-9a-fA-F]+')
TAG = re.compile(r'<[^>]*>')
ANSI = re.compile(r'\x1b\[[0-9;]*[A-Za-z]')   # terminal colours (a debugger's listing), which vary with the installed highlighter
MACHINE_PATH = re.compile(r'(?<![\w.])/(?:tmp|work|root|home|private|var/folders)/[^\s\'"]*')

def printed_text(cell) -> str:
    "What a code cell printed (stdout, and the text of its result), without terminal colours, every number (and address) replaced by `#`."
    parts = []
    for o in cell.get('outputs', []):
        if o.get('output_type') == 'stream' and o.get('name') == 'stdout': parts.append(o.get('text', ''))
        elif o.get('output_type') == 'execute_result':   # a table's HTML, which unlike its text does not depend on the width
            data = o.get('data', {})
            html = data.get('text/html')
            parts.append(TAG.sub(' ', html if isinstance(html, str) else ''.join(html)) if html else data.get('text/plain', ''))
        elif o.get('output_type') == 'error': parts.append(f"{o.get('ename')}: {o.get('evalue')}")
    text = ''.join(p if isinstance(p, str) else ''.join(p) for p in parts)
    return ' '.join(NUMBER.sub('#', ANSI.sub('', text)).split())

def machine_paths(cell) -> list:
    "Temporary or home-folder paths of this machine that a cell's outputs show (they mean nothing to a reader)."
    found = []
    for o in cell.get('outputs', []):
        texts = [o.get('text', '')] + list(o.get('data', {}).get(k, '') for k in ('text/plain', 'text/html', 'text/markdown'))
        found += MACHINE_PATH.findall(''.join(t if isinstance(t, str) else ''.join(t) for t in texts))
    return found

def output_mismatches(committed, ran) -> list:
    "Where the committed code cells' printed text differs from a fresh run's (`ran`: the same cells, in order), numbers aside."
    out = []
    for i, (old, new) in enumerate(zip(committed, ran)):
        if VARIES.search(old.source): continue
        a, b = printed_text(old), printed_text(new)
        if a != b: out.append(f'code cell {i} ({old.source.strip().splitlines()[0][:60]!r}):\n  committed: {a[:300]!r}\n  this run:  {b[:300]!r}')
        if machine_paths(old): out.append(f'code cell {i} shows machine paths: {sorted(set(machine_paths(old)))[:3]}')
    return out

def _coalesced(outputs):
    "The outputs with consecutive pieces of one stream joined, as Jupyter shows them (the kernel sends them in pieces)."
    out = []
    for o in outputs:
        if out and o.get('output_type') == 'stream' and out[-1].get('output_type') == 'stream' and out[-1].name == o.name:
            out[-1].text += o.text
        else: out.append(o)
    return out

def run(path, timeout=600, write=False):
    "Execute the notebook at `path` in a fresh python3 kernel; return `(seconds, number of HTML outputs)`. With `write`, save the outputs into the notebook instead of comparing them."
    os.environ['IN_TEST'] = '1'                  # miniai then gives PyTorch one core's share, as under nbdev_test
    os.environ.pop('MPLBACKEND', None)           # plots take the inline path a learner sees
    path = Path(path)
    whole = nbformat.read(path, as_version=4)
    nb = nbformat.from_dict(whole)
    nb.cells = [c for c in nb.cells if not (c.cell_type == 'code' and SKIP.search(c.source))]
    committed = [nbformat.from_dict(c) for c in nb.cells if c.cell_type == 'code']   # copies, before the run
    start = time.time()
    NotebookClient(nb, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}},
                   extra_arguments=['--log-level=ERROR']).execute()   # without the kernel's start-up notes
    n_html = sum('text/html' in o.get('data', {}) for c in nb.cells if c.cell_type == 'code' for o in c.outputs)
    if n_html == 0 and any('ProgressCB(' in c.source for c in nb.cells if c.cell_type == 'code'):
        raise AssertionError('it shows progress bars, but no HTML output: fastprogress did not take its notebook path')
    if write:   # the cells that ran get this run's outputs; skipped cells keep theirs
        for c in nb.cells:
            if c.cell_type == 'code': c.outputs = _coalesced(c.outputs)
        ran = iter(nb.cells)
        whole.cells = [c if (c.cell_type == 'code' and SKIP.search(c.source)) else next(ran) for c in whole.cells]
        nbformat.write(whole, path)
        return time.time() - start, n_html
    bad = output_mismatches(committed, [c for c in nb.cells if c.cell_type == 'code'])
    if bad: raise AssertionError('its committed outputs are not what its code prints now (re-run it with tools/run_nb.py):\n'
                                 + '\n'.join(bad[:8]) + (f'\n... and {len(bad)-8} more' if len(bad) > 8 else ''))
    return time.time() - start, n_html

def _run_one(path, write=False):
    try: return path, *run(path, write=write), None
    except (CellExecutionError, AssertionError, TimeoutError) as e: return path, None, None, f'{type(e).__name__}: {e}'

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('notebooks', nargs='*', help='default: every notebook in nbs/')
    p.add_argument('--workers', type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument('--write', action='store_true', help="save each notebook's outputs (then run nbdev_clean)")
    args = p.parse_args()
    nbs = [Path(n) for n in args.notebooks] or sorted(Path(__file__).parent.parent.glob('nbs/*.ipynb'))
    nbs.sort(key=lambda n: -n.stat().st_size)   # roughly the slowest first, so the last to finish are short ones
    failed, start = [], time.time()
    with ProcessPoolExecutor(args.workers) as pool:
        for fut in as_completed([pool.submit(_run_one, n, args.write) for n in nbs]):
            path, secs, n_html, err = fut.result()
            if err: failed.append(path.name); print(f'{path}: FAILED in a kernel\n{err}', flush=True)
            else: print(f'{path}: ok in a kernel in {secs:.0f}s ({n_html} HTML outputs)', flush=True)
    print(f'{len(nbs)} notebooks in kernels, {args.workers} at a time: {time.time()-start:.0f}s; '
          f'{"failed: " + ", ".join(failed) if failed else "all passed"}')
    sys.exit(1 if failed else 0)

if __name__ == '__main__': main()
