"""Run notebooks top to bottom and save their outputs in place, so the committed lessons show
their plots, tables and accuracies. Usage: python tools/run_nb.py nbs/05_datasets.ipynb [...]

A notebook may also be written as a jupytext percent file (nbs/src/NAME.py, `# %%` cells);
pass the .py and it is converted to nbs/NAME.ipynb first. Stops at the first failing cell."""
import sys, time, os
from pathlib import Path
from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell

def run(path):
    path = Path(path)
    if path.suffix == '.py':
        import jupytext
        nb = jupytext.read(path)
        out = path.parent.parent/(path.stem + '.ipynb') if path.parent.name == 'src' else path.with_suffix('.ipynb')
        jupytext.write(nb, out)
        path = out
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
