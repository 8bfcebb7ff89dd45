"""Run notebooks top to bottom and save their outputs in place, so the committed lessons show
their plots, tables and accuracies. Stops at the first failing cell.

    python tools/run_nb.py nbs/05_datasets.ipynb [...]"""
import sys, time, os
from pathlib import Path
from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell

def run(path):
    path = Path(path)
    nb = read_nb(path)
    os.chdir(path.parent)                  # notebooks run from nbs/, as nbdev_test runs them
    start = time.time()
    shell = CaptureShell()
    shell.run_all(nb, exc_stop=True)       # raises on the first failing cell
    write_nb(nb, path.name)
    print(f'{path}: ran in {time.time()-start:.1f}s')

if __name__ == '__main__':
    here = Path.cwd()
    for p in sys.argv[1:]:
        os.chdir(here)
        run(p)
