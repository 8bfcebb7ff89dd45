"miniai.core: what every part uses, importable where the lessons import it, without the heavy libraries."
import os, subprocess, sys
from pathlib import Path

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


def test_atomic_write_is_durable_and_keeps_other_writers_temporaries(tmp_path, monkeypatch):
    "fsync of the data before the rename and of the folder after it; a live writer's temporary survives another write; a killed writer's is removed once a day old."
    import signal, socket, time
    from miniai.core import atomic_write
    fn = tmp_path/'f.txt'
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, 'fsync', lambda fd: synced.append(os.readlink(f'/proc/self/fd/{fd}')) or real_fsync(fd))
    atomic_write(fn, lambda p: p.write_text('data'))
    assert len(synced) == 2 and synced[1] == str(tmp_path)                      # the data first, then the rename
    assert Path(synced[0]).name.startswith(f'.f.txt.tmp-{socket.gethostname()}-{os.getpid()}-')
    monkeypatch.setattr(os, 'fsync', real_fsync)
    # a second writer, in another process, paused while writing: its temporary file must survive our write
    go = tmp_path/'go'
    child = subprocess.Popen([sys.executable, '-c', f"""
from pathlib import Path
import time
from miniai.core import atomic_write
def slow(p):
    p.write_text('theirs')
    while not Path({str(go)!r}).exists(): time.sleep(0.02)
atomic_write(Path({str(fn)!r}), slow)"""])
    def temporaries(): return [p for p in tmp_path.iterdir() if p.name.startswith('.f.txt.tmp')]
    def wait_for_temporary(child):
        deadline = time.time() + 300                           # a loaded machine can take a minute to import torch
        while not temporaries() and child.poll() is None and time.time() < deadline: time.sleep(0.05)
    wait_for_temporary(child)
    theirs = temporaries()
    assert len(theirs) == 1 and f'-{child.pid}-' in theirs[0].name
    atomic_write(fn, lambda p: p.write_text('ours'))
    assert theirs[0].exists() and fn.read_text() == 'ours'
    go.touch(); assert child.wait(timeout=60) == 0
    assert fn.read_text() == 'theirs' and not temporaries()                      # the live writer finished its write
    # a writer killed with SIGKILL while writing leaves its temporary file: kept while young, removed once a day old
    child = subprocess.Popen([sys.executable, '-c', f"""
from pathlib import Path
import time
from miniai.core import atomic_write
def slow(p): p.write_text('half of'); time.sleep(60)
atomic_write(Path({str(fn)!r}), slow)"""])
    wait_for_temporary(child)
    child.send_signal(signal.SIGKILL); child.wait()
    leftover, = temporaries()
    atomic_write(fn, lambda p: p.write_text('new'))
    assert leftover.exists() and fn.read_text() == 'new'
    os.utime(leftover, (time.time() - 25*3600,)*2)
    atomic_write(fn, lambda p: p.write_text('newer'))
    assert fn.read_text() == 'newer' and sorted(p.name for p in tmp_path.iterdir()) == ['f.txt', 'go']


def test_atomic_write_tolerates_einval_from_a_folder_fsync_only(tmp_path, monkeypatch):
    "Some network file systems refuse to fsync a folder (EINVAL) after the rename has succeeded: tolerated. Any other error there, or EINVAL on the data, is raised."
    import errno, stat
    from miniai.core import atomic_write
    fn, real_fsync = tmp_path/'f.txt', os.fsync
    def refusing(on_folder, err):
        def fsync(fd):
            if stat.S_ISDIR(os.fstat(fd).st_mode) == on_folder: raise OSError(err, os.strerror(err))
            return real_fsync(fd)
        return fsync
    monkeypatch.setattr(os, 'fsync', refusing(True, errno.EINVAL))
    atomic_write(fn, lambda p: p.write_text('renamed'))
    assert fn.read_text() == 'renamed'
    monkeypatch.setattr(os, 'fsync', refusing(True, errno.EIO))
    with pytest.raises(OSError) as e: atomic_write(fn, lambda p: p.write_text('io error'))
    assert e.value.errno == errno.EIO
    monkeypatch.setattr(os, 'fsync', refusing(False, errno.EINVAL))
    with pytest.raises(OSError) as e: atomic_write(fn, lambda p: p.write_text('never renamed'))
    assert e.value.errno == errno.EINVAL and fn.read_text() == 'io error'          # the data's flush failed: no rename
    assert sorted(p.name for p in tmp_path.iterdir()) == ['f.txt']                # and no temporary left


def test_remove_stale_tmp_is_best_effort_in_a_read_only_folder(tmp_path, monkeypatch):
    "A stale temporary that cannot be deleted (a read-only run folder) stays, without an error."
    import time
    import miniai.core
    old = tmp_path/'.f.txt.tmp-h-1-00'
    old.write_text('x'); os.utime(old, (time.time() - 2*24*3600,)*2)
    def read_only(p): raise PermissionError(13, 'Permission denied', str(p))
    monkeypatch.setattr(miniai.core, 'remove_path', read_only)
    miniai.core.remove_stale_tmp(tmp_path/'f.txt')
    assert old.exists()
    monkeypatch.undo()
    miniai.core.remove_stale_tmp(tmp_path/'f.txt')
    assert not old.exists()


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


def test_threads_under_a_test_run_only_when_asked():
    "Importing miniai never changes PyTorch's threads; `_use_test_threads()` gives a test run's process its share of the cores, unless OMP_NUM_THREADS is set."
    cores = len(os.sched_getaffinity(0))
    code = ('import torch; print(torch.get_num_threads()); import miniai.learner; print(torch.get_num_threads()); '
            'from miniai.core import _use_test_threads; _use_test_threads(); print(torch.get_num_threads())')
    plain, imported, called = map(int, run_python(code, IN_TEST='1').split())
    assert imported == plain and called == max(1, cores // min(cores, 8))   # (outside a test run: see 01_core)
    assert run_python(code, IN_TEST='1', OMP_NUM_THREADS='2').split() == ['2', '2', '2']   # the user's setting wins
    import miniai.core
    assert '_use_test_threads' not in miniai.core.__all__                     # a test hook, not API

