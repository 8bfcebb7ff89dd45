"Checkpoints: a saved learner loads in a fresh process; bad files fail clearly and change nothing; a run killed with SIGKILL resumes to identical weights; get_preds."
import os, random, signal, subprocess, sys, textwrap
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.optim.lr_scheduler import OneCycleLR
from torch.utils.data import DataLoader, TensorDataset
from torcheval.metrics import MulticlassAccuracy

from miniai.checkpoint import CheckpointCB, CheckpointError, read_checkpoint, rng_states
from miniai.datasets import DataLoaders
from miniai.init import get_model
from miniai.learner import BatchSchedCB, DeviceCB, MetricsCB, TrainLearner
from miniai.train import read_rows

NFS = (1, 4, 8)
CHILD_ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1', 'MPLBACKEND': 'Agg'}


def make_learner(nfs=NFS, cbs=(), epochs=3):
    "A small batch-norm CNN on 64 random 28x28 images, with AdamW, one-cycle and accuracy, as the recipe has them."
    torch.manual_seed(0)
    x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
    dls = DataLoaders(DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True),
                      DataLoader(TensorDataset(x[:32], y[:32]), batch_size=16))
    sched = partial(OneCycleLR, max_lr=1e-2, total_steps=epochs*len(dls.train))
    metrics = MetricsCB(accuracy=MulticlassAccuracy())
    metrics.log_to(lambda row: None)   # quiet
    return TrainLearner(get_model(nfs=nfs, norm=nn.BatchNorm2d), dls, F.cross_entropy, lr=1e-2, opt_func=optim.AdamW,
                        cbs=[DeviceCB('cpu'), metrics, BatchSchedCB(sched), *cbs])


def snapshot(learn):
    "Everything `load` may change, copied: weights and buffers, optimizer state, scheduler state, generators, epoch."
    clone = lambda d: {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in d.items()}
    return {'model': clone(learn.model.state_dict()),
            'opt': {i: clone(s) for i, s in learn.opt.state_dict()['state'].items()},
            'sched': learn.cbs[2].state_dict(), 'rng': rng_states(learn.dls), 'epoch': learn.epoch}


def assert_same(a, b):
    "Two nested structures of tensors and plain values are equal, tensor for tensor."
    if isinstance(a, torch.Tensor): assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a: assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b): assert_same(x, y)
    else: assert a == b


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    "A learner after one epoch, and its checkpoint."
    learn = make_learner()
    learn.fit(1)
    path = tmp_path_factory.mktemp('ckpt')/'model.pt'
    learn.save(path)
    return learn, path


def test_checkpoint_holds_everything(trained):
    learn, path = trained
    ckpt = read_checkpoint(path)
    assert (ckpt['format'], ckpt['version'], ckpt['epoch']) == ('miniai.checkpoint', 1, 0)
    assert ckpt['cbs']['BatchSchedCB']['last_epoch'] == len(learn.dls.train)
    assert_same(ckpt['model'], learn.model.state_dict())
    assert not [p for p in path.parent.iterdir() if p.name != 'model.pt']   # no temporary file left


def test_round_trip_in_fresh_process(trained, tmp_path):
    learn, path = trained
    x = torch.rand(8, 1, 28, 28)
    torch.save(x, tmp_path/'x.pt')
    learn.model.eval()
    with torch.no_grad(): expected = learn.model(x)
    child = textwrap.dedent(f"""
        import torch, torch.nn.functional as F
        from torch import nn
        from miniai.init import get_model
        from miniai.learner import TrainLearner
        import miniai.checkpoint
        learn = TrainLearner(get_model(nfs={NFS}, norm=nn.BatchNorm2d), loss_func=F.cross_entropy).load({str(path)!r})
        learn.model.eval()
        with torch.no_grad(): torch.save(learn.model(torch.load({str(tmp_path/'x.pt')!r})), {str(tmp_path/'preds.pt')!r})
        """)
    env = {**CHILD_ENV, 'OMP_NUM_THREADS': str(torch.get_num_threads())}   # as here, so the arithmetic is the same
    res = subprocess.run([sys.executable, '-c', child], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert torch.equal(torch.load(tmp_path/'preds.pt'), expected)


def _bad_files(good, tmp_path):
    "Each bad file (a path) and the words its error must contain."
    (tmp_path/'notes.txt').write_text('hello')
    (tmp_path/'cut.pt').write_bytes(good.read_bytes()[:5000])
    torch.save(get_model(nfs=NFS, norm=nn.BatchNorm2d).state_dict(), tmp_path/'bare.pt')
    torch.save({'f': partial(print)}, tmp_path/'code.pt')
    wide = make_learner(nfs=(1, 4, 16))
    wide.save(tmp_path/'wide.pt')
    return {'missing.pt': 'does not exist', 'notes.txt': 'not a file written by `torch.save`', 'cut.pt': 'damaged',
            'bare.pt': 'not a miniai checkpoint', 'code.pt': 'pickled Python objects',
            'wide.pt': 'another architecture than this model (mis-shaped: 1.0.weight (16, 4, 3, 3) in the file, (8, 4, 3, 3) in the model'}


def test_bad_files_fail_clearly_and_change_nothing(trained, tmp_path):
    learn, good = trained
    bad = _bad_files(good, tmp_path)
    random.random(); np.random.rand(); torch.rand(1)   # move every generator away from the checkpoint's state
    before = snapshot(learn)
    for name, says in bad.items():
        with pytest.raises(CheckpointError) as e: learn.load(tmp_path/name)
        assert says in str(e.value), (name, str(e.value))
        assert_same(snapshot(learn), before)


def test_newer_format_version_is_refused(trained, tmp_path):
    _, good = trained
    ckpt = torch.load(good, weights_only=True)
    torch.save({**ckpt, 'version': 2}, tmp_path/'v2.pt')
    with pytest.raises(CheckpointError, match='format version 2; this miniai reads version 1'): read_checkpoint(tmp_path/'v2.pt')


def test_optimizer_state_is_restored(trained):
    learn, path = trained
    other = make_learner()
    other.opt = other.opt_func(other.model.parameters(), other.lr)   # the optimizer a fit would make
    other.load(path)
    saved = learn.opt.state_dict()
    assert len(saved['state']) == len(list(learn.model.parameters()))
    assert_same(other.opt.state_dict()['state'], saved['state'])   # Adam's moments and step counts
    assert float(saved['state'][0]['step']) == len(learn.dls.train)


# A training run in a child process: 'full' runs 3 epochs; 'crash' pauses in the middle of epoch 1 and waits to be
# killed; 'resume' continues from the last checkpoint. Each saves its final weights. It uses the real recipe (`train`).
CHILD = textwrap.dedent("""
    import sys, time, torch
    from datasets import DatasetDict
    from miniai.datasets import load_fashion_mnist
    from miniai.learner import Callback
    from miniai.checkpoint import CheckpointCB
    from miniai.train import train, RunLogCB
    mode, folder = sys.argv[1], sys.argv[2]

    class PauseCB(Callback):
        "In the middle of training epoch 1, say so and wait to be killed."
        def after_batch(self, learn):
            if learn.training and learn.epoch == 1 and learn.iter == 2:
                print('PAUSED', flush=True)
                time.sleep(600)

    dsd = load_fashion_mnist()
    small = DatasetDict(train=dsd['train'].select(range(640)), test=dsd['test'].select(range(256)))
    cbs = [RunLogCB(folder), CheckpointCB(folder, resume=mode == 'resume')] + ([PauseCB()] if mode == 'crash' else [])
    learn, acc = train(epochs=3, bs=64, dd=small, nfs=(1, 4, 8, 16), progress=False, cbs=cbs)
    torch.save(learn.model.state_dict(), f'{folder}/final.pt')
    """)


def test_killed_mid_epoch_then_resumed_gives_identical_weights(tmp_path):
    script = tmp_path/'child.py'
    script.write_text(CHILD)
    run = lambda mode, folder: subprocess.Popen([sys.executable, str(script), mode, str(folder)], env=CHILD_ENV,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    full, crash = run('full', tmp_path/'full'), run('crash', tmp_path/'crash')   # side by side, to save time
    try:
        for line in crash.stdout:
            if line.strip() == 'PAUSED': break
        else: pytest.fail(f'the crash child never paused: {crash.stderr.read()[-2000:]}')
        os.kill(crash.pid, signal.SIGKILL)
        assert crash.wait(timeout=60) == -signal.SIGKILL
    finally: crash.kill()
    assert read_checkpoint(tmp_path/'crash'/'last.pt')['epoch'] == 0   # epoch 0 saved; epoch 1 was running
    assert not (tmp_path/'crash'/'final.pt').exists()
    resume = run('resume', tmp_path/'crash')
    for child in (full, resume):
        _, err = child.communicate(timeout=300)
        assert child.returncode == 0, err[-2000:]
    expected, resumed = torch.load(tmp_path/'full'/'final.pt'), torch.load(tmp_path/'crash'/'final.pt')
    assert_same(resumed, expected)
    for fn in ('metrics.csv', 'batches.csv'):   # each epoch's rows once, as in the uninterrupted run
        assert read_rows(tmp_path/'crash'/fn) == read_rows(tmp_path/'full'/fn)
    assert sorted(p.name for p in (tmp_path/'crash').iterdir()) == ['batches.csv', 'best.pt', 'final.pt', 'last.pt', 'metrics.csv']


def test_checkpoint_cb_keeps_last_and_best(tmp_path):
    learn = make_learner(cbs=[cb := CheckpointCB(tmp_path, monitor='loss', mode='min')])
    learn.fit(3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['best.pt', 'last.pt']
    losses = [row['loss'] for row in learn.metrics.history if row['train'] == 'eval']
    best = min(range(3), key=losses.__getitem__)
    assert (cb.best, cb.best_epoch) == (losses[best], best)
    assert read_checkpoint(tmp_path/'best.pt')['epoch'] == best
    assert read_checkpoint(tmp_path/'last.pt')['epoch'] == 2


def test_checkpoint_cb_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="use 'max'"): CheckpointCB(tmp_path, mode='up')
    learn = make_learner(cbs=[CheckpointCB(tmp_path, monitor='f1')])
    with pytest.raises(ValueError, match=r"no metric 'f1' to monitor; MetricsCB has \['accuracy', 'loss'\]"): learn.fit(1)


def test_only_the_main_process_writes(tmp_path):
    learn = make_learner(cbs=[CheckpointCB(tmp_path)])
    learn.is_main_process = False
    learn.fit(1)
    assert list(tmp_path.iterdir()) == []


def test_get_preds(trained, tmp_path):
    learn, path = trained
    learn.cbs.append(cb := CheckpointCB(tmp_path/'never'))
    try:
        acc_before = learn.metrics.metrics['accuracy'].compute()
        for mode in (True, False):
            learn.model.train(mode)
            preds, targs = learn.get_preds()
            assert learn.model.training == mode   # the mode is put back
        xs, ys = map(torch.cat, zip(*learn.dls.valid))
        with torch.no_grad(): expected = learn.model.eval()(xs)
        assert preds.device.type == 'cpu' and torch.equal(preds, expected) and torch.equal(targs, ys)
        assert torch.equal(learn.metrics.metrics['accuracy'].compute(), acc_before)   # metrics untouched
        assert not (tmp_path/'never').exists()                                          # no checkpoint written
        # A learner with no data at all: loaded from the file, it predicts a DataLoader it is given.
        bare = TrainLearner(get_model(nfs=NFS, norm=nn.BatchNorm2d), loss_func=F.cross_entropy).load(path)
        assert torch.equal(bare.get_preds(dl=learn.dls.valid)[0], expected)
        with pytest.raises(ValueError, match='pass one with `dl=`'): bare.get_preds()
    finally: learn.cbs.remove(cb)
