"""The commands: `miniai_train` keeps its results in a folder, validates on images held out from training and
`miniai_eval` reports the test split; bad input and faults (a full disk too) give one clear line while bugs keep their
traceback; a run killed at any moment (SIGKILL) or stopped (SIGTERM) resumes to the weights and CSV files of an
uninterrupted run; Ctrl-C and SIGTERM stop cleanly; --auto_resume. (Several processes and nodes: test_cluster.py.)"""
import json, os, shutil, signal, subprocess, sys, sysconfig, time

import numpy as np
import pytest
import torch

from miniai.checkpoint import read_checkpoint
from miniai.commands import main, evaluate, read_rows, load_data, RUN_FILES
import miniai.commands as commands
from conftest import make_idx_folder

ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1', 'MPLBACKEND': 'Agg',
       'HF_DATASETS_DISABLE_PROGRESS_BARS': '1'}   # what a command prints is all there is on stderr
ENV.pop('MINIAI_TEST_KILL_AT', None)
QUICK = ['--epochs', '2', '--n_train', '1024', '--n_valid', '512', '--widths', '8,8,16,16', '--bs', '64']
SCRIPTS = sysconfig.get_path('scripts')   # the real scripts (a pyenv shim is a shell script)


def run_cli(*args, env=ENV, timeout=300):
    exe = os.path.join(SCRIPTS, args[0])
    assert os.path.exists(exe), f"the console script {args[0]} is not installed: run `pip install -e .`"
    return subprocess.run([exe, *args[1:]], capture_output=True, text=True, env=env, timeout=timeout)


def printed_accuracy(stdout, start):
    "The accuracy on the line of `stdout` that starts with `start`, as printed (4 decimals)."
    line = next(l for l in stdout.splitlines() if l.startswith(start))
    return line.split(': ')[1].split()[0]


def weights(fn): return read_checkpoint(fn)['model']

def same_weights(a, b):
    a, b = weights(a), weights(b)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

def best_epoch(folder):
    "The epoch whose validation accuracy metrics.csv says is the best (the first of equals, as CheckpointCB keeps)."
    valid = [r for r in read_rows(folder/'metrics.csv') if r['train'] == 'eval']
    return int(max(valid, key=lambda r: float(r['accuracy']))['epoch'])   # max keeps the first of equals

def leftovers(folder): return sorted(p.name for p in folder.iterdir() if p.name.startswith('.'))


# ---------- a quick run on the real data: the files, the figures, and which split each comes from ----------

@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "One quick `miniai_train` run: its folder and its output."
    out = tmp_path_factory.mktemp('runs')/'run'
    res = run_cli('miniai_train', *QUICK, '--out', str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    return out, res.stdout


def test_run_folder_holds_the_results(run):
    out, stdout = run
    assert f'results go to {out}' in stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(RUN_FILES)
    args = json.loads((out/'args.json').read_text())
    assert (args['epochs'], args['n_train'], args['n_holdout'], args['widths'], args['out']) == (2, 1024, 10_000, '8,8,16,16', str(out))
    mean, std = args['stats']   # of the training images, on the [0, 1] scale
    assert 0.25 < mean < 0.33 and 0.3 < std < 0.4
    rows = read_rows(out/'metrics.csv')
    assert [(r['epoch'], r['train']) for r in rows] == [('0', 'train'), ('0', 'eval'), ('1', 'train'), ('1', 'eval')]
    acc = printed_accuracy(stdout, 'validation accuracy after 2 epochs')
    assert f"{float(rows[-1]['accuracy']):.4f}" == acc and 'on 512 held-out training images' in stdout
    assert float(acc) > 0.5   # ten classes: guessing gives 0.1
    assert len(read_rows(out/'batches.csv')) == 2*1024//64
    assert (out/'loss.png').read_bytes()[:4] == b'\x89PNG'


def test_eval_reports_the_test_split_and_reproduces_the_validation_figure(run, capsys):
    out, stdout = run
    test = run_cli('miniai_eval', str(out))
    assert test.returncode == 0, test.stderr[-2000:]
    assert 'on 10000 test images, which training never saw' in test.stdout
    assert 0.5 < float(printed_accuracy(test.stdout, 'test accuracy of')) < 1
    evaluate(str(out), split='valid')
    assert printed_accuracy(capsys.readouterr().out, 'validation accuracy of') == printed_accuracy(stdout, 'validation accuracy after 2 epochs')


def test_eval_normalises_with_the_saved_statistics(run, tmp_path):
    "The statistics in args.json are the ones used: other statistics give other predictions."
    out, _ = run
    acc = commands._evaluate(out, split='valid')[0]
    other = tmp_path/'other'
    shutil.copytree(out, other)
    args = json.loads((other/'args.json').read_text())
    (other/'args.json').write_text(json.dumps({**args, 'stats': [0.0, 1.0]}))
    assert commands._evaluate(other, split='valid')[0] != acc


def test_validation_images_are_held_out_from_training(tmp_path):
    make_idx_folder(tmp_path/'idx', n_train=30, n_test=7)   # image i has i in its top-left pixel
    def ids(ds): return [int(np.array(im)[0, 0]) for im in ds['image']]
    dsd = load_data({'data': str(tmp_path/'idx'), 'n_holdout': 10, 'n_train': None, 'n_valid': None})
    assert (ids(dsd['train']), ids(dsd['valid']), ids(dsd['test'])) == (list(range(20)), list(range(20, 30)), list(range(7)))
    dsd = load_data({'data': str(tmp_path/'idx'), 'n_holdout': 10, 'n_train': 5, 'n_valid': 3})
    assert (ids(dsd['train']), ids(dsd['valid'])) == (list(range(5)), [20, 21, 22])
    with pytest.raises(ValueError, match='--n_holdout 30: hold out at least 1 and fewer than all 30'):
        load_data({'data': str(tmp_path/'idx'), 'n_holdout': 30, 'n_train': None, 'n_valid': None})


def test_resume_of_a_finished_run_does_nothing(run, capsys):
    out, _ = run
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    main(resume=str(out))
    assert 'has finished all its 2 epochs: nothing to resume.' in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


# ---------- bad input and faults: one line, a non-zero exit status, nothing lost ----------

def test_bad_input_gives_one_line_and_exit_status(tmp_path):
    res = run_cli('miniai_train', '--epochs', '0')
    assert res.returncode != 0 and res.stderr == 'miniai_train: --epochs 0: it must be at least 1.\n'


@pytest.mark.parametrize('kwargs, says', [
    (dict(epochs=0), '--epochs 0: it must be at least 1'),
    (dict(n_holdout=0), '--n_holdout 0: it must be at least 1'),
    (dict(device='tpu'), '--device tpu: unknown device'),
    (dict(widths='8,x'), '--widths 8,x: give the channels'),
    (dict(widths='8,16'), '--widths 8,16: give four widths'),
    (dict(norm='group'), '--norm group: use one of batch, layer, running, none'),
    (dict(data='/nowhere'), 'does not hold the four Fashion-MNIST IDX files'),
])
def test_train_bad_options(kwargs, says, tmp_path, capsys):
    with pytest.raises(SystemExit) as e: main(out=str(tmp_path/'out'), **kwargs)
    assert isinstance(e.value.code, str) and e.value.code.startswith('miniai_train: ') and says in e.value.code
    assert '\n' not in e.value.code


def test_existing_folder_is_not_overwritten(run):
    out, _ = run
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(SystemExit, match=f'{out} exists and is not empty: continue its run with --resume'): main(out=str(out))
    with pytest.raises(SystemExit, match='leave out --epochs'): main(resume=str(out), epochs=3)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_not_a_run_folder(tmp_path):
    for f in (lambda: evaluate(str(tmp_path)), lambda: main(resume=str(tmp_path))):
        with pytest.raises(SystemExit, match='is not a miniai_train run: it has no args.json'): f()


def test_eval_refuses_a_checkpoint_of_another_model(run, tmp_path):
    out, _ = run
    other = tmp_path/'other'
    shutil.copytree(out, other)
    args = json.loads((other/'args.json').read_text())
    (other/'args.json').write_text(json.dumps({**args, 'widths': '8,8,16,32'}))   # not the model last.pt holds
    with pytest.raises(SystemExit, match=r'holds another architecture than this model \(mis-shaped: 3.0.weight'): evaluate(str(other))
    with pytest.raises(SystemExit, match='--which worst: use last or best'): evaluate(str(out), which='worst')
    with pytest.raises(SystemExit, match='--split train: use test or valid'): evaluate(str(out), split='train')


# Tiny runs on random images (a tiny IDX folder): what they learn does not matter, only what they keep.
TINY = dict(epochs=3, bs=32, widths='4,4,4,4', n_holdout=32)   # 128 training images: 4 batches an epoch

@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp('idx')
    make_idx_folder(folder, n_train=160, n_test=20)
    return str(folder)


def test_a_nan_loss_gives_one_line(tiny_data, tmp_path):
    with pytest.raises(SystemExit) as e: main(out=str(tmp_path/'nan'), data=tiny_data, **{**TINY, 'lr': 1e30})
    msg = e.value.code
    assert msg.startswith('miniai_train: The training loss ') and 'not finite' in msg and '\n' not in msg
    assert msg.endswith('The learning rate is probably too high: try a lower --lr than 1e+30.')


def test_a_damaged_checkpoint_gives_one_line(tiny_data, tmp_path):
    out = tmp_path/'run'
    main(out=str(out), data=tiny_data, **{**TINY, 'epochs': 1})
    ckpt = torch.load(out/'last.pt', weights_only=True)
    # A run that needs another epoch, whose checkpoint holds a generator state that is not one
    args = json.loads((out/'args.json').read_text())
    (out/'args.json').write_text(json.dumps({**args, 'epochs': 2}))
    ckpt['rng']['torch'] = torch.zeros(3, dtype=torch.uint8)
    torch.save(ckpt, out/'last.pt')
    with pytest.raises(SystemExit) as e: main(resume=str(out))
    assert e.value.code.startswith('miniai_train: ') and 'last.pt' in e.value.code and '\n' not in e.value.code
    (out/'last.pt').write_bytes((out/'best.pt').read_bytes()[:1000])   # cut off
    with pytest.raises(SystemExit, match=r'miniai_train: .*last.pt is damaged'): main(resume=str(out))
    with pytest.raises(SystemExit, match=r'miniai_eval: .*last.pt is damaged'): evaluate(str(out))


def test_an_internal_error_keeps_its_traceback(tiny_data, tmp_path, monkeypatch):
    "A bug is not a bad input: it is not turned into one line."
    def broken(*args, **kwargs): return 1/0
    monkeypatch.setattr(commands, 'train', broken)
    with pytest.raises(ZeroDivisionError): main(out=str(tmp_path/'bug'), data=tiny_data, **TINY)


def test_overwrite_replaces_only_the_run_files(tiny_data, tmp_path):
    out = tmp_path/'run'
    main(out=str(out), data=tiny_data, **TINY)
    first = weights(out/'last.pt')
    (out/'mine.txt').write_text('not a run file')
    main(out=str(out), overwrite=True, seed=2, data=tiny_data, **TINY)
    assert not torch.equal(weights(out/'last.pt')['0.0.weight'], first['0.0.weight'])
    assert (out/'mine.txt').read_text() == 'not a run file'


# ---------- break it on purpose: SIGKILL or SIGTERM at many moments, then resume ----------

# One process imports miniai once and forks a child for every run (a fresh `python` costs seconds; a fork, milliseconds).
# Each child runs `main` as the console script does, with MINIAI_TEST_KILL_AT set as the job asks; a kill point kills
# the child with SIGKILL. The server prints each job's exit status (negative: killed by that signal).
FORK_SERVER = r'''
import json, os, sys
import torch
torch.set_num_threads(1)
from miniai.commands import main
chains, workers, warm_up = json.loads(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
if warm_up:   # one whole run here first: each child then starts with what a first run loads and builds (the data
    main(**warm_up)   # cache, matplotlib's fonts, PyTorch's first-call costs), and pays only for its own work

def batch_fault(spec):
    "`batch_done@N` (`batch_done@N:TERM`): SIGKILL (SIGTERM) this process after its N-th training batch. A patch made here, in the test: the library has no per-batch test hook."
    import signal, miniai.commands as commands
    point, _, sig = spec.partition(':')
    n, orig, count = int(point.split('@')[1]), commands.RunLogCB.after_batch, [0]
    def after_batch(self, learn):
        orig(self, learn)
        if not learn.training: return
        count[0] += 1
        if count[0] == n: os.kill(os.getpid(), signal.SIGTERM if sig == 'TERM' else signal.SIGKILL)
    commands.RunLogCB.after_batch = after_batch

def start(kwargs, kill_at):
    pid = os.fork()
    if pid: return pid
    code = 1
    try:
        os.environ.pop('MINIAI_TEST_KILL_AT', None)
        if kill_at and kill_at.startswith('batch_done'): batch_fault(kill_at)
        elif kill_at: os.environ['MINIAI_TEST_KILL_AT'] = kill_at
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1); os.dup2(devnull, 2)
        main(**kwargs)
        code = 0
    except SystemExit as e: code = e.code if isinstance(e.code, int) else 1
    finally: os._exit(code)

def status(st): return -os.WTERMSIG(st) if os.WIFSIGNALED(st) else os.WEXITSTATUS(st)

# each chain: jobs [kwargs, kill_at] run one after another
results, running, todo = [[] for _ in chains], {}, list(range(len(chains)))
while todo or running:
    while todo and len(running) < workers:
        i = todo.pop(0)
        running[start(*chains[i][0])] = i
    pid, st = os.wait()
    i = running.pop(pid)
    results[i].append(status(st))
    if len(results[i]) < len(chains[i]): running[start(*chains[i][len(results[i])])] = i
print(json.dumps(results))
'''

def run_chains(chains, workers=2, env=ENV, warm_up=None):
    """Run each chain of `(kwargs, kill_at)` jobs in order, `workers` chains at a time; the exit statuses, per chain.
    `warm_up`: the arguments of a `main` run made once, in the server, before the children start."""
    res = subprocess.run([sys.executable, '-c', FORK_SERVER, json.dumps(chains), str(workers), json.dumps(warm_up)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.splitlines()[-1])


# Where to kill a run of 3 epochs of 4 training batches: `NAME@N` is the N-th time the run reaches kill point NAME.
# Spread over the run: mid-epoch (after a batch), inside a CSV write (the new file complete, not yet renamed into
# place), between metrics.csv and batches.csv, inside a checkpoint write, between best.pt and last.pt (epoch 0 is
# always the best so far), and just after last.pt (the last one: after the final checkpoint, before the plots).
# (And `args_tmp_written`, inside the write of args.json: see the test.) With `:TERM` the process gets SIGTERM there
# instead of SIGKILL: it stops at the next batch's end with its place saved (exit status 143), mid-epoch or, signalled
# inside a checkpoint or CSV write, once that epoch's files are written.
KILL_POINTS = ([f'batch_done@{n}' for n in (1, 2, 4, 5, 7, 10, 12)] +
               [f'csv_tmp_written@{n}' for n in (1, 2, 3, 5, 7, 9)] +   # per epoch: metrics and batches, then metrics
               [f'metrics_csv_written@{n}' for n in (1, 2, 4, 6)] +
               [f'save_tmp_written@{n}' for n in (1, 2, 3)] +           # one Learner.save per epoch
               ['best_written@1'] + [f'last_written@{n}' for n in (1, 2, 3)] +
               [f'batch_done@{n}:TERM' for n in (1, 6, 12)] + ['save_tmp_written@1:TERM', 'csv_tmp_written@3:TERM'])


def test_killed_anywhere_a_run_resumes_to_the_uninterrupted_weights(tiny_data, tmp_path):
    start, cpu = time.time(), os.times()
    env = {**ENV, 'MINIAI_CACHE': str(tmp_path/'cache')}
    args = dict(data=tiny_data, **TINY)
    ref, folders = tmp_path/'ref', {point: tmp_path/point.replace('@', '-').replace(':', '-') for point in KILL_POINTS}
    # Killed inside the write of args.json, a run has nothing to resume: the same --out starts it afresh.
    again = tmp_path/'args_tmp_written'
    chains = ([[[{**args, 'out': str(again)}, 'args_tmp_written'], [{**args, 'out': str(again)}, None]]] +
              # resumed with --resume after SIGKILL; with the same command and --auto_resume (a requeued job) after SIGTERM
              [[[{**args, 'out': str(folders[pt])}, pt],
                [{**args, 'out': str(folders[pt]), 'auto_resume': True} if ':TERM' in pt else {'resume': str(folders[pt])}, None]]
               for pt in KILL_POINTS])
    results = run_chains(chains, env=env, warm_up={**args, 'out': str(ref)})   # the uninterrupted run, in the server
    assert results[0] == [-signal.SIGKILL, 0]
    assert sorted(p.name for p in again.iterdir()) == sorted(RUN_FILES) and same_weights(again/'last.pt', ref/'last.pt')
    assert best_epoch(ref) == read_checkpoint(ref/'best.pt')['epoch'] and sorted(p.name for p in ref.iterdir()) == sorted(RUN_FILES)
    for point, statuses in zip(KILL_POINTS, results[1:]):
        out = folders[point]
        stopped = 143 if ':TERM' in point else -signal.SIGKILL
        assert statuses == [stopped, 0], f'{point}: exit statuses {statuses} (stopped, then resumed)'
        assert sorted(f.name for f in out.iterdir()) == sorted(RUN_FILES), f'{point}: {leftovers(out)} left'
        assert same_weights(out/'last.pt', ref/'last.pt'), f'{point}: the resumed run ends with other weights'
        assert read_rows(out/'metrics.csv') == read_rows(ref/'metrics.csv'), point
        assert read_rows(out/'batches.csv') == read_rows(ref/'batches.csv'), point
        best = best_epoch(out)
        assert read_checkpoint(out/'best.pt')['epoch'] == best and same_weights(out/'best.pt', ref/'best.pt'), \
            f'{point}: best.pt is not the weights of epoch {best}, which metrics.csv says was best'
    used = os.times()
    print(f'{len(KILL_POINTS) + 1} kill points: {time.time()-start:.1f}s, of which the runs used '
          f'{used.children_user - cpu.children_user + used.children_system - cpu.children_system:.1f}s of CPU')


# (Two processes under torchrun, killed or stopped and resumed: tests/test_cluster.py.)


# ---------- Ctrl-C and SIGTERM ----------

def test_ctrl_c_and_sigterm_stop_cleanly_with_the_resume_hint(tiny_data, tmp_path):
    """A real SIGINT to one running miniai_train and a real SIGTERM (a scheduler's "stop now") to another: exit status
    130 and 143, one line that says what last.pt holds and how to resume, no traceback, last.pt intact."""
    env = {**ENV, 'MINIAI_CACHE': str(tmp_path/'cache')}
    exe = os.path.join(SCRIPTS, 'miniai_train')
    def start(out): return subprocess.Popen(
        [exe, '--data', tiny_data, '--epochs', '1000', '--bs', '32', '--widths', '4,4,4,4', '--n_holdout', '32', '--out', str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        # Ctrl-C's default, as in a terminal: a shell script's background jobs start with SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    runs = {signal.SIGINT: (tmp_path/'int', 130, 'Ctrl-C'), signal.SIGTERM: (tmp_path/'term', 143, 'SIGTERM')}
    procs = {sig: start(out) for sig, (out, _, _) in runs.items()}
    for sig, p in procs.items():
        out, deadline = runs[sig][0], time.time() + 600   # generous: a loaded machine starts Python slowly
        while not (out/'last.pt').exists() and p.poll() is None and time.time() < deadline: time.sleep(0.05)
        assert (out/'last.pt').exists(), f'{out}: no checkpoint yet'
        time.sleep(0.3)   # into a later epoch
        p.send_signal(sig)
    for sig, p in procs.items():
        out, code, why = runs[sig]
        stdout, stderr = p.communicate(timeout=60)
        assert p.returncode == code, stderr[-2000:]
        assert 'Traceback' not in stderr and stderr.count('\n') == 1, stderr
        assert stderr.startswith(f'miniai_train: stopped ({why}); ') and stderr.endswith(f'Continue with: miniai_train --resume {out}\n')
        ckpt = read_checkpoint(out/'last.pt')   # intact: it reads, and it is the place the line names
        place = ckpt['place']
        held = f"batch {place['batch']} of epoch {place['epoch']+1}." if place else f"the end of epoch {ckpt['epoch']+1}."
        assert f'holds the run to {held}' in stderr and ckpt['epoch'] < 999
        assert leftovers(out) == []


def test_auto_resume(tiny_data, tmp_path, capsys):
    "--auto_resume with --out: starts a run where there is none, continues one (the same command), refuses other settings."
    out = tmp_path/'run'
    args = dict(data=tiny_data, **{**TINY, 'epochs': 1}, out=str(out), auto_resume=True)
    main(**args)
    assert 'results go to' in capsys.readouterr().out
    main(**args)
    assert 'has finished all its 1 epochs: nothing to resume.' in capsys.readouterr().out
    with pytest.raises(SystemExit) as e: main(**{**args, 'lr': 0.5, 'seed': 3})
    assert e.value.code == (f"miniai_train: --auto_resume: {out} holds a run with other settings: --lr 0.5 (the run: 0.01); "
                            f"--seed 3 (the run: 1). Give its settings to continue it, or another --out for a new run.")
    with pytest.raises(SystemExit, match='--auto_resume needs --out'): main(auto_resume=True)
    with pytest.raises(SystemExit, match='not with --resume or --overwrite'): main(**args, overwrite=True)


def test_a_full_disk_gives_one_line(tiny_data, tmp_path):
    "A file-size limit (what a full disk looks like to a writer) that a checkpoint passes: one line, exit status 1, no temporary file left."
    import resource
    main(out=str(tmp_path/'warm'), data=tiny_data, **{**TINY, 'epochs': 1})   # the data cache is written: only the run writes below
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit then fails with EFBIG instead of killing
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (16_000, hard))   # args.json and the CSV files fit, a checkpoint does not
        with pytest.raises(SystemExit) as e: main(out=str(tmp_path/'full'), data=tiny_data, **{**TINY, 'epochs': 1})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
    msg = e.value.code
    assert isinstance(msg, str) and msg.startswith('miniai_train: ') and 'best.pt' in msg and '\n' not in msg, msg
    assert leftovers(tmp_path/'full') == []


def test_a_bug_that_raises_value_error_keeps_its_traceback(tiny_data, tmp_path, monkeypatch):
    "A ValueError from deep inside (like a scheduler stepped too often) is a bug, not bad input: it is not turned into one line."
    def broken(*args, **kwargs): raise ValueError('Tried to step 9 times. The specified number of total steps is 8')
    monkeypatch.setattr(commands, 'train', broken)
    with pytest.raises(ValueError, match='Tried to step 9 times'): main(out=str(tmp_path/'bug'), data=tiny_data, **TINY)


def test_no_test_hook_on_the_per_batch_path(tiny_data, tmp_path, monkeypatch):
    "The test hooks lie at the few moments a file is written, never in the per-batch path: as many calls for twice the batches."
    import miniai.checkpoint as checkpoint
    calls = []
    for mod in (commands, checkpoint): monkeypatch.setattr(mod, '_kill_point', calls.append)
    counts = []
    for bs in (32, 16):   # 4, then 8 training batches an epoch
        calls.clear()
        main(out=str(tmp_path/f'bs{bs}'), data=tiny_data, **{**TINY, 'bs': bs})
        counts.append(len([c for c in calls if c != 'best_written']))   # (best.pt is written when an epoch is the best so far)
    assert counts[0] == counts[1] and 'batch_done' not in calls, (counts, sorted(set(calls)))
