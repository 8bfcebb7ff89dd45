"""Time from a fresh clone to a trained model, and to a passing test run, on the machine as it comes.

Clones this repository into a temporary folder and runs the README's commands there the way a new user would: Debian's
own python3 only (a clean PATH) and an empty HOME, so no environment, pip cache or data cache set up by hand helps.
Prints each step's time and its share of the whole.

    python bench/fresh_clone.py                       # set-up, then miniai_train with its defaults
    python bench/fresh_clone.py --test                # ... then the test command too
    python bench/fresh_clone.py --train_args "--epochs 1"
"""
import os, shlex, subprocess, tempfile, time
from pathlib import Path
from fastcore.script import call_parse, store_true

ROOT = Path(__file__).parent.parent
STOCK_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

def timed(cmd, cwd, home):
    "Run shell command `cmd` in `cwd` with only a stock PATH and `HOME=home`; return its wall time in seconds."
    start = time.time()
    r = subprocess.run(['env', '-i', f'HOME={home}', f'PATH={STOCK_PATH}', 'bash', '-c', cmd], cwd=cwd,
                       capture_output=True, text=True)
    secs = time.time() - start
    if r.returncode: raise SystemExit(f'{cmd!r} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}')
    return secs

@call_parse
def main(test:store_true=False,        # also time `bash tools/test.sh`
         train_args:str='',            # extra arguments for miniai_train
         keep:store_true=False):       # keep the clone (its path is printed)
    work = Path(tempfile.mkdtemp(prefix='miniai-fresh-'))
    clone, home = work/'miniai', work/'home'
    home.mkdir()
    for f in ('.config/pip/pip.conf', '.pip/pip.conf'):   # the machine's registries and local wheels come with it
        if (Path.home()/f).exists(): (home/f).parent.mkdir(parents=True, exist_ok=True); (home/f).write_bytes((Path.home()/f).read_bytes())
    steps = {}
    start = time.time()
    subprocess.run(['git', 'clone', '-q', str(ROOT), str(clone)], check=True)
    steps['git clone'] = time.time() - start
    steps['bash tools/setup.sh'] = timed('bash tools/setup.sh', clone, home)
    steps['bash tools/setup.sh (again)'] = timed('bash tools/setup.sh', clone, home)
    train = f'bash tools/run.sh miniai_train --out {work}/run {train_args}'.strip()
    steps[train] = timed(train, clone, home)
    if test: steps['bash tools/test.sh'] = timed('bash tools/test.sh', clone, home)
    to_model = sum(v for k, v in steps.items() if k != 'bash tools/test.sh')
    print(f'from a fresh clone ({os.cpu_count()} cores), Debian python3, clean PATH and HOME:')
    for k, v in steps.items(): print(f'  {v:6.1f}s  {100*v/to_model:5.1f}% of the time to a trained model  {k}')
    print(f'  {to_model:6.1f}s  to a trained model')
    if test: print(f'  {steps["git clone"] + steps["bash tools/setup.sh"] + steps["bash tools/test.sh"]:6.1f}s  to a passing test run (clone, set-up, tests)')
    if keep: print(f'kept: {clone}')
    else: subprocess.run(['rm', '-rf', str(work)])
