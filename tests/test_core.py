"miniai.core: what every part uses, importable where the lessons import it, without the heavy libraries."
import os, subprocess, sys

import pytest


def run_python(code, **env):
    "Run `code` in a fresh interpreter (with `env` added) and return its stdout."
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300,
                         env={**{k: v for k, v in os.environ.items() if k not in ('IN_TEST', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS')}, **env})
    assert res.returncode == 0, res.stderr
    return res.stdout


NO_HUGGING_FACE = ['miniai.core', 'miniai.conv', 'miniai.learner', 'miniai.activations', 'miniai.init']

def test_no_hugging_face_datasets_import():
    "These modules load no Hugging Face `datasets`. One fresh interpreter imports them in order, each after the ones it builds on, and looks after each: the first that loads it is named."
    code = f'import importlib, sys\nfor m in {NO_HUGGING_FACE!r}:\n    importlib.import_module(m); print(m, "datasets" in sys.modules)'
    seen = dict(line.split() for line in run_python(code).splitlines())
    assert list(seen) == NO_HUGGING_FACE
    loaded = [m for m, v in seen.items() if v == 'True']
    assert not loaded, f'importing {loaded[0]} loads Hugging Face datasets'


# Each name a lesson imports from its module, and the one home it has now.
LESSON_NAMES = {
    'miniai.conv': ['def_device', 'get_device', 'to_device', 'conv', 'collate_device'],
    'miniai.learner': ['to_cpu', 'identity', 'Learner', 'MetricsCB'],
    'miniai.activations': ['set_seed', 'Hooks', 'ActivationStats'],
    'miniai.datasets': ['show_image', 'subplots', 'get_grid', 'show_images', 'load_fashion_mnist', 'decoded_dls'],
    'miniai.init': ['BatchTransformCB', 'conv', 'clean_ipython_hist', 'clean_tb', 'clean_mem'],
}
CORE_NAMES = ['def_device', 'get_device', 'to_device', 'to_cpu', 'identity', 'set_seed',
              'show_image', 'subplots', 'get_grid', 'show_images', 'clean_ipython_hist', 'clean_tb', 'clean_mem']

@pytest.mark.parametrize('module,names', LESSON_NAMES.items())
def test_star_import_gives_the_lessons_names(module, names):
    ns = {}
    exec(f'from {module} import *', ns)
    missing = [n for n in names if n not in ns]
    assert not missing, f'`from {module} import *` lacks {missing}'


def test_one_home_each():
    "A name moved to core is the same object wherever the lessons import it: one definition, not copies."
    import importlib, miniai.core as core
    for name in CORE_NAMES:
        assert name in core.__all__, name
        for module, names in LESSON_NAMES.items():
            if name in names: assert getattr(importlib.import_module(module), name) is getattr(core, name), (module, name)
    import miniai.conv, miniai.init
    assert miniai.init.conv is miniai.conv.conv


def test_atomic_write_is_durable_and_removes_a_killed_writers_leftover(tmp_path, monkeypatch):
    "fsync of the data before the rename and of the folder after it; a leftover of a process that ended is removed."
    import signal, time
    from miniai.core import atomic_write
    fn = tmp_path/'f.txt'
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, 'fsync', lambda fd: synced.append(os.readlink(f'/proc/self/fd/{fd}')) or real_fsync(fd))
    atomic_write(fn, lambda p: p.write_text('data'))
    assert synced == [str(tmp_path/f'.f.txt.tmp{os.getpid()}'), str(tmp_path)]   # the data first, then the rename
    # a writer killed with SIGKILL while writing leaves its temporary file
    child = subprocess.Popen([sys.executable, '-c', f"""
from pathlib import Path
import time
from miniai.core import atomic_write
def slow(p): p.write_text('half of'); time.sleep(60)
atomic_write(Path({str(fn)!r}), slow)"""])
    leftover = tmp_path/f'.f.txt.tmp{child.pid}'
    for _ in range(600):
        if leftover.exists(): break
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL); child.wait()
    assert leftover.exists() and fn.read_text() == 'data'
    atomic_write(fn, lambda p: p.write_text('new'))
    assert fn.read_text() == 'new' and not leftover.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['f.txt']


def test_identity():
    from miniai.core import identity
    assert identity() is None and identity(3) == 3 and identity(1, 'a') == (1, 'a')


def test_learner_steps_are_the_one_line_methods_06_describes():
    "06_foundations tells a learner that 09's Learner has its training steps as one-line methods calling `callback`."
    import inspect
    from miniai.learner import Learner
    for step in ('predict', 'get_loss', 'backward', 'step', 'zero_grad'):
        assert inspect.getsource(getattr(Learner, step)).split(':', 1)[1].strip() == f"self.callback('{step}')", step
    assert '__getattr__' not in vars(Learner)


def test_threads_under_nbdev_test():
    "nbdev_test sets IN_TEST in each worker; importing miniai then gives PyTorch its share of the cores."
    cores = len(os.sched_getaffinity(0))
    code = 'import miniai.learner, torch; print(torch.get_num_threads())'
    assert int(run_python(code, IN_TEST='1')) == max(1, cores // min(cores, 8))
    assert int(run_python(code)) == torch_default_threads()
    assert int(run_python(code, IN_TEST='1', OMP_NUM_THREADS='2')) == 2   # the user's setting wins


def torch_default_threads():
    return int(run_python('import torch; print(torch.get_num_threads())'))
