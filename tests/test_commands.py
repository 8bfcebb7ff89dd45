"The commands: `miniai_train` keeps its results in a folder and `miniai_eval` reports the same accuracy; bad input gives one clear line."
import json, os, shutil, subprocess

import pytest
import torch

from miniai.checkpoint import CheckpointCB, read_checkpoint
from miniai.commands import main, evaluate, read_rows

ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1', 'MPLBACKEND': 'Agg'}
QUICK = ['--epochs', '2', '--n_train', '1024', '--n_valid', '512', '--widths', '8,8,16,16', '--bs', '64']


def run_cli(*args):
    exe = shutil.which(args[0])
    assert exe, f"the console script {args[0]} is not installed: run `pip install -e .`"
    return subprocess.run([exe, *args[1:]], capture_output=True, text=True, env=ENV, timeout=300)


def last_accuracy(stdout, start):
    "The accuracy on the line of `stdout` that starts with `start`, as printed (4 decimals)."
    line = next(l for l in stdout.splitlines() if l.startswith(start))
    return line.split(': ')[1].split()[0]


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
    assert sorted(p.name for p in out.iterdir()) == ['args.json', 'batches.csv', 'best.pt', 'last.pt', 'loss.png', 'lr.png', 'metrics.csv']
    args = json.loads((out/'args.json').read_text())
    assert (args['epochs'], args['n_train'], args['widths'], args['norm'], args['out']) == (2, 1024, '8,8,16,16', 'batch', str(out))
    rows = read_rows(out/'metrics.csv')
    assert [(r['epoch'], r['train']) for r in rows] == [('0', 'train'), ('0', 'eval'), ('1', 'train'), ('1', 'eval')]
    acc = last_accuracy(stdout, 'validation accuracy after 2 epochs')
    assert f"{float(rows[-1]['accuracy']):.4f}" == acc
    assert float(acc) > 0.5   # ten classes: guessing gives 0.1
    assert len(read_rows(out/'batches.csv')) == 2*1024//64
    assert (out/'loss.png').read_bytes()[:4] == b'\x89PNG'


def test_eval_prints_the_accuracy_training_reported(run):
    out, stdout = run
    res = run_cli('miniai_eval', str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    assert last_accuracy(res.stdout, 'test accuracy of') == last_accuracy(stdout, 'validation accuracy after 2 epochs')


def test_resume_of_a_finished_run_does_nothing(run, capsys):
    out, _ = run
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    main(resume=str(out))
    assert 'has finished all its 2 epochs: nothing to resume' in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_bad_input_gives_one_line_and_exit_status(tmp_path):
    res = run_cli('miniai_train', '--epochs', '0')
    assert res.returncode != 0 and res.stderr == 'miniai_train: --epochs 0: it must be at least 1.\n'


@pytest.mark.parametrize('kwargs, says', [
    (dict(epochs=0), '--epochs 0: it must be at least 1'),
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


def test_resume_after_an_interruption_and_overwrite(tmp_path, monkeypatch, capsys):
    quick = dict(epochs=2, n_train=1024, n_valid=512, widths='8,8,16,16', bs=64)
    full, stopped = tmp_path/'full', tmp_path/'stopped'
    main(out=str(full), **quick)
    save_checkpoint = CheckpointCB.after_epoch
    def stop_after_epoch_0(self, learn):   # as if the user pressed Ctrl-C just after the first checkpoint
        save_checkpoint(self, learn)
        if not learn.training and learn.epoch == 0: raise KeyboardInterrupt()
    monkeypatch.setattr(CheckpointCB, 'after_epoch', stop_after_epoch_0)
    with pytest.raises(KeyboardInterrupt): main(out=str(stopped), **quick)
    monkeypatch.undo()
    assert read_checkpoint(stopped/'last.pt')['epoch'] == 0
    capsys.readouterr()
    main(resume=str(stopped))
    assert f'resuming {stopped} after epoch 1' in capsys.readouterr().out
    same_run = lambda a, b: (read_rows(a/'metrics.csv') == read_rows(b/'metrics.csv') and
                             torch.equal(read_checkpoint(a/'last.pt')['model']['0.0.weight'], read_checkpoint(b/'last.pt')['model']['0.0.weight']))
    assert same_run(stopped, full)
    (stopped/'mine.txt').write_text('not a run file')
    main(out=str(stopped), overwrite=True, seed=2, **quick)   # a run's own files are replaced, nothing else
    assert not same_run(stopped, full) and (stopped/'mine.txt').read_text() == 'not a run file'


def test_the_main_job_under_torchrun(tmp_path):
    "Two processes started by torchrun: Accelerate shares out the batches, one table, one set of files, same accuracy."
    import sysconfig
    out = tmp_path/'two'
    torchrun = os.path.join(sysconfig.get_path('scripts'), 'torchrun')
    exe = os.path.join(sysconfig.get_path('scripts'), 'miniai_train')   # the real script (a pyenv shim is a shell script)
    res = subprocess.run([torchrun, '--standalone', '--nproc_per_node', '2', exe, *QUICK, '--out', str(out)],
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count('accuracy  loss') == 1 and res.stdout.count('validation accuracy after 2 epochs') == 1
    assert sorted(p.name for p in out.iterdir()) == ['args.json', 'batches.csv', 'best.pt', 'last.pt', 'loss.png', 'lr.png', 'metrics.csv']
    assert len(read_rows(out/'metrics.csv')) == 4                                     # 2 epochs x (train, eval), once each
    ev = run_cli('miniai_eval', str(out))
    assert ev.returncode == 0, ev.stderr
    assert last_accuracy(ev.stdout, 'test accuracy') == last_accuracy(res.stdout, 'validation accuracy')
