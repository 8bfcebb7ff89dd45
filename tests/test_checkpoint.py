"Checkpoints: a saved learner loads in a fresh process; bad files and bad parts of real checkpoints fail clearly and change nothing; load then fit continues (one-cycle included); runs killed with SIGKILL (mid-epoch, inside a write, between best.pt and last.pt) and stopped with SIGTERM (mid-epoch, inside a write, between epochs, from outside) resume to identical weights and rows; two processes agree on a stop; a full disk, a read-only folder; get_preds."
import errno, json, inspect, math, os, random, resource, shutil, signal, stat, subprocess, sys, textwrap
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.optim.lr_scheduler import OneCycleLR, StepLR
from torch.utils.data import DataLoader, TensorDataset
from torcheval.metrics import MulticlassAccuracy

from miniai.accel import MixedPrecision
import miniai.checkpoint
from miniai.checkpoint import (CheckpointCB, CheckpointError, LoadedStateCB, TrainingStopped, _kill_point, atomic_save, find_in,
                               read_checkpoint, rng_states, set_rng_states)
from miniai.datasets import DataLoaders
from miniai.init import get_model
from miniai.learner import BatchSchedCB, Callback, CancelFitException, DeviceCB, MetricsCB, TrainLearner

NFS = (1, 4, 8)
CHILD_ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1', 'MPLBACKEND': 'Agg'}
CHILD_ENV.pop('MINIAI_TEST_KILL_AT', None)


def make_learner(nfs=NFS, cbs=(), epochs=3, opt_func=optim.AdamW, generator=False):
    "A small batch-norm CNN on 64 random 28x28 images, with AdamW, one-cycle and accuracy, as the recipe has them; `generator`: the training DataLoader shuffles with its own generator."
    torch.manual_seed(0)
    x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
    g = torch.Generator().manual_seed(1) if generator else None
    dls = DataLoaders(DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=g),
                      DataLoader(TensorDataset(x[:32], y[:32]), batch_size=16))
    sched = partial(OneCycleLR, max_lr=1e-2, total_steps=epochs*len(dls.train))
    metrics = MetricsCB(accuracy=MulticlassAccuracy())
    metrics.log_to(lambda row: None)   # quiet
    return TrainLearner(get_model(nfs=nfs, norm=nn.BatchNorm2d), dls, F.cross_entropy, lr=1e-2, opt_func=opt_func,
                        cbs=[DeviceCB('cpu'), metrics, BatchSchedCB(sched), *cbs])


def snapshot(learn):
    "Everything `load` may change, copied: weights and buffers, optimizer state, callbacks' states, generators, epoch, callbacks."
    clone = lambda o: ({k: clone(v) for k, v in o.items()} if isinstance(o, dict) else
                       [clone(v) for v in o] if isinstance(o, (list, tuple)) else o.clone() if isinstance(o, torch.Tensor) else o)
    return {'model': clone(learn.model.state_dict()), 'opt': clone(learn.opt.state_dict()),
            'cbs': [clone(cb.state_dict()) for cb in learn.cbs if hasattr(cb, 'state_dict')],
            'rng': clone(rng_states(learn.dls)), 'epoch': learn.epoch, 'cb_list': list(learn.cbs)}


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


def weights(learn): return {k: v.clone() for k, v in learn.model.state_dict().items()}


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
    assert (ckpt['format'], ckpt['version'], ckpt['epoch'], ckpt['opt_type']) == ('miniai.checkpoint', 3, 0, 'AdamW')
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
        learn = TrainLearner(get_model(nfs={NFS}, norm=nn.BatchNorm2d), loss_func=F.cross_entropy).load({str(path)!r}, model_only=True)
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
    torch.save({**torch.load(good, weights_only=True), 'version': 4}, tmp_path/'v4.pt')
    return {'missing.pt': 'does not exist', 'notes.txt': 'not a file written by `torch.save`', 'cut.pt': 'damaged',
            'bare.pt': 'not a miniai checkpoint', 'code.pt': 'pickled Python objects',
            'v4.pt': 'format version 4; this miniai reads versions 1 to 3'}


def test_bad_files_fail_clearly_and_change_nothing(trained, tmp_path):
    learn, good = trained
    bad = _bad_files(good, tmp_path)
    random.random(); np.random.rand(); torch.rand(1)   # move every generator away from the checkpoint's state
    before = snapshot(learn)
    for name, says in bad.items():
        with pytest.raises(CheckpointError) as e: learn.load(tmp_path/name)
        assert says in str(e.value), (name, str(e.value))
        assert_same(snapshot(learn), before)


# ---------- all or nothing: each part of a real checkpoint made wrong on disk ----------

def full_learner(folder, resume=False, cbs=()):
    "A learner with every kind of state: AdamW, one-cycle, a gradient scaler (float16), a CheckpointCB into `folder`, a DataLoader generator."
    return make_learner(cbs=[MixedPrecision(torch.float16), CheckpointCB(folder, monitor='loss', mode='min', resume=resume), *cbs],
                        generator=True)

def _edit(ckpt, where, value):
    "`ckpt` with the entry at path `where` (a tuple of keys) set to `value` (deleted if `value` is `del`)."
    d = ckpt
    for k in where[:-1]: d = d[k]
    if value is del_: del d[where[-1]]
    else: d[where[-1]] = value(d[where[-1]]) if callable(value) else value
    return ckpt

del_ = object()
SCALER = ('cbs', 'MixedPrecision')
BAD_PARTS = {   # name: (where, new value or a function of the old one, the words of the error)
    'model key missing': (('model', '0.0.weight'), del_, 'missing keys: 0.0.weight'),
    'model key unexpected': (('model', 'extra.weight'), torch.zeros(1), 'unexpected keys: extra.weight'),
    'model shape': (('model', '2.0.weight'), torch.zeros(8, 4, 1, 1), 'mis-shaped: 2.0.weight (8, 4, 1, 1) in the file'),
    'optimizer class': (('opt_type',), 'SGD', "optimizer state of class SGD; this learner's optimizer is AdamW"),
    'optimizer groups': (('opt', 'param_groups'), lambda gs: [{**gs[0], 'params': gs[0]['params'][:3]},
                                                             {**gs[0], 'params': gs[0]['params'][3:]}], 'parameter groups of sizes [3,'),
    'optimizer state shape': (('opt', 'state', 0, 'exp_avg'), torch.zeros(4, 1, 3, 3), "exp_avg of parameter 0: (4, 1, 3, 3) in the file, (4, 1, 5, 5) here"),
    'scheduler state': (('cbs', 'BatchSchedCB'), StepLR(optim.SGD([nn.Parameter(torch.zeros(1))]), 1).state_dict(),
                        'state for callback BatchSchedCB that does not fit it: it is the state of another kind of scheduler'),
    'scaler state keys': (SCALER, {'scale': 2.}, "state for callback MixedPrecision that does not fit it: a gradient scaler's state has the keys"),
    'scaler state empty': (SCALER, {}, 'saved without a gradient scaler (bfloat16 or float32), and float16 here needs one'),
    'checkpoint callback state': (('cbs', 'CheckpointCB'), {'best': 1.}, "state for callback CheckpointCB that does not fit it: keys ['best']"),
    'torch generator': (('rng', 'torch'), lambda s: s[:100], 'damaged random number generator state (torch: RuntimeError'),
    'DataLoader generator': (('rng', 'generators', 'train.sampler.generator'), lambda s: s[:10], 'state (train.sampler.generator)'),
    'numpy generator': (('rng', 'numpy', 'keys'), lambda s: s[:5], 'state (numpy'),
    'python generator index': (('rng', 'python', 'state'), lambda s: [*s[:-1], 700], 'state (python: ValueError'),
    'python generator size': (('rng', 'python', 'state'), lambda s: s[:-3], 'state (python'),
    'generators missing': (('rng',), del_, "lacks a part of a checkpoint or has one of the wrong kind (KeyError: 'rng')"),
    'epoch': (('epoch',), 'two', "epoch 'two' is not a number"),
}

@pytest.fixture(scope='module')
def full_trained(tmp_path_factory):
    "A learner with every kind of state after one epoch, and its checkpoint."
    folder = tmp_path_factory.mktemp('full')
    learn = full_learner(folder/'run')
    learn.fit(1)
    path = folder/'model.pt'
    learn.save(path)
    return learn, path

@pytest.mark.parametrize('part', list(BAD_PARTS))
def test_load_is_all_or_nothing(full_trained, tmp_path, part):
    "A real checkpoint with one part made wrong: one CheckpointError naming it, into a trained learner and a fresh one, and neither changes."
    learn, good = full_trained
    where, value, says = BAD_PARTS[part]
    torch.save(_edit(torch.load(good, weights_only=True), where, value), tmp_path/'bad.pt')
    fresh = full_learner(tmp_path/'run')
    fresh.opt = fresh.opt_func(fresh.model.parameters(), fresh.lr)   # for the snapshot: an optimizer that never stepped
    fresh.epoch = -1
    random.random(); np.random.rand(); torch.rand(1)   # move every generator away from the checkpoint's state
    for target in (learn, fresh):
        before = snapshot(target)
        with pytest.raises(CheckpointError) as e: target.load(tmp_path/'bad.pt')
        assert says in str(e.value), (part, str(e.value))
        assert_same(snapshot(target), before)
    learn.load(good)   # the good file still loads
    learn.cbs.remove(next(cb for cb in learn.cbs if isinstance(cb, LoadedStateCB)))


def test_scheduler_state_checked_before_the_first_fit(full_trained, tmp_path):
    "Before any fit the callback has no scheduler: the check makes one to compare with, so a fresh learner refuses too."
    _, good = full_trained
    where, value, says = BAD_PARTS['scheduler state']
    torch.save(_edit(torch.load(good, weights_only=True), where, value), tmp_path/'bad.pt')
    fresh = full_learner(tmp_path/'run')
    w = weights(fresh)
    with pytest.raises(CheckpointError, match='another kind of scheduler'): fresh.load(tmp_path/'bad.pt')
    assert_same(weights(fresh), w)
    assert not any(isinstance(cb, LoadedStateCB) for cb in fresh.cbs)


def test_scaler_needed_at_fit_is_refused_before_training(tmp_path):
    "MixedPrecision() chooses its type at the fit: an empty scaler state meeting a float16 scaler is refused when the fit starts, before any step."
    bf16 = make_learner(cbs=[MixedPrecision(torch.bfloat16)])
    bf16.fit(1)
    bf16.save(tmp_path/'bf16.pt')
    auto = make_learner(cbs=[mp := MixedPrecision()])   # on the CPU it will choose bfloat16 at the fit...
    auto.load(tmp_path/'bf16.pt')
    mp.dtype = torch.float16                             # ...but float16 here, as on a GPU
    w = weights(auto)
    with pytest.raises(CheckpointError, match='saved without a gradient scaler'): auto.fit(3)
    assert_same(weights(auto), w)   # nothing trained


def version_1(ckpt):
    "`ckpt` as the last release wrote it (format version 1): no optimizer class, no MPS state, generators named by where they sit."
    ckpt = {k: v for k, v in ckpt.items() if k != 'opt_type'}
    rng = {k: v for k, v in ckpt['rng'].items() if k != 'mps'}
    rng['generators'] = {k.removesuffix('.generator'): g for k, g in rng['generators'].items()}
    return {**ckpt, 'version': 1, 'rng': rng}

def test_version_1_file_still_loads(full_trained, tmp_path):
    "A file of the last release loads, weights, optimizer, schedule, scaler and DataLoader generator; its optimizer is told by its settings' names."
    learn, good = full_trained
    torch.save(version_1(torch.load(good, weights_only=True)), tmp_path/'v1.pt')
    assert 'train.sampler' in torch.load(tmp_path/'v1.pt', weights_only=True)['rng']['generators']
    other = full_learner(tmp_path/'run')
    other.load(tmp_path/'v1.pt')
    assert_same(weights(other), weights(learn))
    gen = other.dls.train.sampler.generator
    assert torch.equal(gen.get_state(), read_checkpoint(good)['rng']['generators']['train.sampler.generator'])
    class StopAtStart(Callback):
        order = LoadedStateCB.order + 1
        def before_fit(self, learn): raise CancelFitException()
    other.fit(3, cbs=StopAtStart())   # the fit applies the optimizer's and callbacks' states, then stops at once
    assert_same(other.opt.state_dict()['state'], learn.opt.state_dict()['state'])
    sgd = make_learner(opt_func=partial(optim.SGD, momentum=0.9))
    w = weights(sgd)
    with pytest.raises(CheckpointError, match=r"another kind of optimizer than this learner's SGD \(its settings lack momentum"): sgd.load(tmp_path/'v1.pt')
    assert_same(weights(sgd), w)


# ---------- load, then fit: the run goes on ----------

class StopAfter(Callback):
    "End the fit after the validation of epoch `epoch`."
    order = CheckpointCB.order + 1
    def __init__(self, epoch): self.epoch = epoch
    def after_epoch(self, learn):
        if not learn.training and learn.epoch == self.epoch: raise CancelFitException()


@pytest.fixture(scope='module')
def full_run(tmp_path_factory):
    "The uninterrupted 3-epoch run of `full_learner` (float16 scaler, one-cycle, a DataLoader generator): its learner and rows."
    full = full_learner(tmp_path_factory.mktemp('full'))
    full.fit(3)
    return full, [dict(r) for r in full.metrics.history]


def test_load_then_fit_continues(full_run, tmp_path):
    "Stopped after 2 of 3 epochs; a new learner loads and fits, `fit(3)` as the saved run: it runs the one epoch left, and ends with the weights of the uninterrupted run, to the bit."
    full, _ = full_run
    stopped = full_learner(tmp_path/'stopped', cbs=[StopAfter(1)])
    stopped.fit(3)
    again = full_learner(tmp_path/'again')
    again.load(tmp_path/'stopped'/'last.pt')
    seen = {}
    class Look(Callback):
        order = LoadedStateCB.order + 1
        def before_fit(self, learn): seen['step'] = learn.opt.state_dict()['state'][0]['step'].item()
        def before_epoch(self, learn): seen.setdefault('epochs', []).append(learn.epoch)
    again.fit(3, cbs=Look())
    assert seen['step'] == 2*len(again.dls.train)   # AdamW's step count went on
    assert seen['epochs'] == [2, 2]                 # one epoch ran: its training and validation passes
    assert_same(weights(again), weights(full))
    assert_same(again.cbs[2].state_dict(), full.cbs[2].state_dict())   # the one-cycle schedule, to its end
    assert not any(isinstance(cb, LoadedStateCB) for cb in again.cbs)   # used once
    # Without the optimizer's and the schedule's states (model_only), the same epoch gives other weights.
    fresh_opt = full_learner(tmp_path/'fresh')
    fresh_opt.load(tmp_path/'stopped'/'last.pt', model_only=True)
    fresh_opt.fit(1)
    assert not torch.equal(weights(fresh_opt)['0.0.weight'], weights(full)['0.0.weight'])


def test_global_generator_restored(tmp_path, monkeypatch):
    "A DataLoader that shuffles with PyTorch's global generator: resumed, the run is the uninterrupted one only because `load` restores that generator (with the restore switched off, the weights differ)."
    full = make_learner()
    full.fit(3)
    stopped = make_learner(cbs=[StopAfter(1), CheckpointCB(tmp_path, monitor='loss')])
    stopped.fit(3)
    def resumed():
        torch.manual_seed(99)   # the generator somewhere else, as in a new process
        learn = make_learner()
        learn.load(tmp_path/'last.pt')
        learn.fit(3)
        return weights(learn)
    assert_same(resumed(), weights(full))
    monkeypatch.setattr(miniai.checkpoint, 'set_rng_states', lambda states, dls=None: None)
    assert not torch.equal(resumed()['0.0.weight'], weights(full)['0.0.weight'])


def test_another_batch_size_is_refused(full_trained, tmp_path):
    "A one-cycle schedule made for another number of batches per epoch cannot be continued: `load` refuses it, nothing changes."
    _, good = full_trained
    other = full_learner(tmp_path/'run')
    other.dls.train = DataLoader(other.dls.train.dataset, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(1))
    sched = next(cb for cb in other.cbs if isinstance(cb, BatchSchedCB))
    sched.sched = partial(OneCycleLR, max_lr=1e-2, total_steps=3*len(other.dls.train))   # as the recipe makes it: for this batch size
    w = weights(other)
    with pytest.raises(CheckpointError, match=r'a schedule of 12 steps \(total_steps\) and this learner.s has 24: the batch size'):
        other.load(good)
    assert_same(weights(other), w)


class RequestStopAt(Callback):
    "Call `ckpt.request_stop()` (or send this process `signum`) after training batch `iter` of epoch `epoch`."
    order = CheckpointCB.order + 1
    def __init__(self, ckpt, epoch, iter, signum=None): self.ckpt, self.epoch, self.iter, self.signum = ckpt, epoch, iter, signum
    def after_batch(self, learn):
        if not (learn.training and (learn.epoch, learn.iter) == (self.epoch, self.iter)): return
        if self.signum: os.kill(os.getpid(), self.signum)
        else: self.ckpt.request_stop()


def test_stopped_mid_epoch_then_load_and_fit(full_run, tmp_path):
    "`request_stop` in the middle of epoch 1 (float16 scaler, one-cycle, DataLoader generator): TrainingStopped names last.pt and the place; a new learner loads it and fits: the weights and the rows (the partial epoch's included) are the uninterrupted run's."
    full, full_rows = full_run
    stopped = full_learner(tmp_path/'stopped')
    ckpt = next(cb for cb in stopped.cbs if isinstance(cb, CheckpointCB))
    with pytest.raises(TrainingStopped) as e: stopped.fit(3, cbs=RequestStopAt(ckpt, 1, 0))
    assert (e.value.path, e.value.signum, e.value.epoch, e.value.batch) == (tmp_path/'stopped'/'last.pt', None, 1, 2)
    assert f"{tmp_path/'stopped'/'last.pt'}" in str(e.value) and 'request_stop()' in str(e.value)
    again = full_learner(tmp_path/'again')
    again.load(tmp_path/'stopped'/'last.pt')
    again.fit(3)
    assert_same(weights(again), weights(full))
    assert [dict(r) for r in stopped.metrics.history] + [dict(r) for r in again.metrics.history] == full_rows


def test_signal_handlers_installed_only_during_fit(tmp_path):
    "SIGUSR1 in `stop_signals` stops the fit; before and after, whatever handler was there is there again, however the fit ended."
    seen, term = [], signal.getsignal(signal.SIGTERM)
    old = signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))
    try:
        ckpt = CheckpointCB(tmp_path, monitor='loss', stop_signals=(signal.SIGTERM, signal.SIGUSR1))
        learn = make_learner(cbs=[ckpt], epochs=1)
        with pytest.raises(TrainingStopped, match='SIGUSR1 after 2 training batches of epoch 0'):
            learn.fit(1, cbs=RequestStopAt(ckpt, 0, 0, signal.SIGUSR1))
        assert signal.getsignal(signal.SIGTERM) is term
        os.kill(os.getpid(), signal.SIGUSR1)
        assert seen == [signal.SIGUSR1]       # the old handler is back
        assert not ckpt.stop_requested        # and a later fit is not stopped by the old request
    finally: signal.signal(signal.SIGUSR1, old)


def test_adamw_state_is_refused_by_sgd(trained):
    _, path = trained
    sgd = make_learner(opt_func=partial(optim.SGD, momentum=0.9))
    w = weights(sgd)
    with pytest.raises(CheckpointError, match=r'class AdamW; this learner.s optimizer is SGD.*model_only=True'): sgd.load(path)
    assert_same(weights(sgd), w)
    sgd.load(path, model_only=True)   # the weights alone are fine
    assert_same(weights(sgd), trained[0].model.state_dict())


def test_no_optimizer_state_is_not_a_silent_fresh_start(tmp_path):
    "A checkpoint saved by a learner that never trained has no optimizer state: fitting after loading it refuses, unless model_only."
    make_learner().save(tmp_path/'untrained.pt')
    learn = make_learner()
    learn.load(tmp_path/'untrained.pt')
    with pytest.raises(CheckpointError, match='holds no optimizer state, so this fit would start the optimizer afresh'): learn.fit(1)
    learn.load(tmp_path/'untrained.pt', model_only=True)
    learn.fit(1)


def test_mps_generator_saved_where_there_is_one(monkeypatch):
    "Where MPS is available its generator's state is saved and restored (faked here: this machine has no MPS)."
    mps_state, restored = torch.arange(8, dtype=torch.uint8), []
    monkeypatch.setattr(torch.backends.mps, 'is_available', lambda: True)
    monkeypatch.setattr(torch.mps, 'get_rng_state', lambda: mps_state.clone())
    monkeypatch.setattr(torch.mps, 'set_rng_state', lambda s: restored.append(s))
    states = rng_states()
    assert torch.equal(states['mps'], mps_state)
    set_rng_states(states)
    assert len(restored) == 1 and torch.equal(restored[0], mps_state)
    monkeypatch.setattr(torch.backends.mps, 'is_available', lambda: False)
    assert rng_states()['mps'] is None


def test_generators_found_however_deep():
    "A generator in a sampler inside a batch sampler inside a wrapper is found (and the same one only once), and restored."
    g = torch.Generator().manual_seed(0)
    dl = DataLoader(TensorDataset(torch.arange(12)), batch_size=4, shuffle=True, generator=g)
    class Wrapper:
        def __init__(self, dl): self.inner = dl
        def __iter__(self): return iter(self.inner)
    dls = DataLoaders(Wrapper(dl), None)
    assert list(find_in(dls.train, torch.Generator, 'train')) == ['train.inner.sampler.generator']
    states = rng_states(dls)
    order = [b[0].tolist() for b in dls.train]
    set_rng_states(states, dls)
    assert [b[0].tolist() for b in dls.train] == order


# ---------- killed for real: SIGKILL at chosen moments, then resumed ----------

def test_kill_point():
    "Unset, or another name: nothing happens. In a child told `here@2`: it dies by SIGKILL the second time, not the first; told `here:TERM`, it gets SIGTERM."
    _kill_point('here')
    code = "from miniai.checkpoint import _kill_point\nfor i in range(3): print(i, flush=True); _kill_point('here')"
    for spec, sig, printed in (('here@2', signal.SIGKILL, ['0', '1']), ('here:TERM', signal.SIGTERM, ['0'])):
        res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60,
                             env={**CHILD_ENV, 'MINIAI_TEST_KILL_AT': spec})
        assert res.returncode == -sig and res.stdout.split() == printed, (spec, res.returncode, res.stdout)


def test_test_hooks_are_not_public():
    "The kill point is a test hook: out of `__all__` and so out of `miniai.all`."
    import miniai.all
    for name in ('kill_point', 'KILL_ENV', '_kill_point', '_KILL_ENV'):
        assert name not in miniai.checkpoint.__all__ and not hasattr(miniai.all, name), name


def tiny_cnn():
    "The model of the child runs below: a tiny batch-norm CNN."
    return nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 8, 3, 2, 1), nn.BatchNorm2d(8),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

# A training run in a child process: 3 epochs of a tiny batch-norm CNN (AdamW, one-cycle, a DataLoader generator) with
# CheckpointCB (resuming if asked), then the final weights and the metrics' rows saved. A test stops it where it wants
# by naming a kill point in MINIAI_TEST_KILL_AT (`:TERM` after it: SIGTERM instead of SIGKILL); `batch_E_I` is a point
# after training batch I of epoch E; `wait_E_I` makes the child wait there (up to 20 s) for a SIGTERM that its parent
# sends. A child stopped by SIGTERM exits with status 3 and writes what `TrainingStopped` said. It imports only what it
# needs: a child starts in a second or two.
CHILD = textwrap.dedent("""
    import sys, time, torch, torch.nn.functional as F
    from functools import partial
    from pathlib import Path
    from types import SimpleNamespace
    from torch import nn, optim
    from torch.optim.lr_scheduler import OneCycleLR
    from torch.utils.data import DataLoader, TensorDataset
    from torcheval.metrics import MulticlassAccuracy
    from miniai.checkpoint import CheckpointCB, TrainingStopped, _kill_point
    from miniai.learner import BatchSchedCB, Callback, MetricsCB, TrainLearner
    import json, os, signal, traceback
    """) + inspect.getsource(tiny_cnn) + textwrap.dedent("""
    class BatchKillPoints(Callback):
        order = CheckpointCB.order + 1
        def __init__(self, ckpt, folder): self.ckpt, self.folder = ckpt, folder
        def after_batch(self, learn):
            if not learn.training: return
            _kill_point(f'batch_{learn.epoch}_{learn.iter}')
            if os.environ.get('MINIAI_TEST_KILL_AT') == f'wait_{learn.epoch}_{learn.iter}':
                (self.folder/'waiting').touch()
                for _ in range(2000):   # until the parent's SIGTERM has come
                    if self.ckpt.stop_requested: break
                    time.sleep(0.01)

    def fit(folder, resume):
        folder = Path(folder)
        torch.manual_seed(0)
        x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
        dls = SimpleNamespace(train=DataLoader(TensorDataset(x, y), 16, shuffle=True, generator=torch.Generator().manual_seed(1)),
                              valid=DataLoader(TensorDataset(x[:32], y[:32]), 16))
        model = tiny_cnn()
        metrics = MetricsCB(accuracy=MulticlassAccuracy())
        metrics.log_to(lambda row: None)
        sched = BatchSchedCB(partial(OneCycleLR, max_lr=3e-2, total_steps=3*len(dls.train)))
        ckpt = CheckpointCB(folder, monitor='loss', resume=resume)
        learn = TrainLearner(model, dls, F.cross_entropy, lr=3e-2, opt_func=optim.AdamW,
                             cbs=[metrics, sched, ckpt, BatchKillPoints(ckpt, folder)])
        try: learn.fit(3)
        finally:
            with open(folder/'rows.json', 'a') as f: f.write(json.dumps(metrics.history) + '\\n')
        torch.save(learn.model.state_dict(), folder/'final.pt')

    # Each job `[folder, resume, kill point]` runs in a child forked from this process, which has imported everything
    # once and trained once (a fresh Python and a first fit cost seconds); all side by side. It reads one list of jobs a
    # line from its input and prints `[pid, exit status]` per job (negative: killed) for each.
    def start(folder, resume, kill):
        pid = os.fork()
        if pid: return pid
        code = 1
        try:
            if kill: os.environ['MINIAI_TEST_KILL_AT'] = kill
            fit(folder, resume)
            code = 0
        except TrainingStopped as e:
            Path(folder, 'stopped.json').write_text(json.dumps([str(e.path), e.signum, e.epoch, e.batch, str(e)]))
            code = 3
        except BaseException: traceback.print_exc()
        finally: os._exit(code)

    import tempfile
    with tempfile.TemporaryDirectory() as d: fit(d, False)   # a first fit pays PyTorch's one-time set-up: once, here, not in each child
    def run(jobs):
        pids = [start(*job) for job in jobs]
        reaped = {}
        for pid, (folder, _, kill) in zip(pids, jobs):   # a SIGTERM from outside, sent once the child waits for it
            if not (kill and kill.startswith('wait_')): continue
            while not Path(folder, 'waiting').exists():
                done, st = os.waitpid(pid, os.WNOHANG)
                if done: reaped[pid] = st; break   # it ended without waiting: the test will say so
                time.sleep(0.01)
            if pid not in reaped: os.kill(pid, signal.SIGTERM)
        status = {**reaped, **dict(os.wait() for _ in range(len(pids) - len(reaped)))}
        return [[pid, -os.WTERMSIG(status[pid]) if os.WIFSIGNALED(status[pid]) else os.WEXITSTATUS(status[pid])] for pid in pids]

    for line in sys.stdin:   # one list of jobs a line; one line of results each
        print(json.dumps(run(json.loads(line))), flush=True)
    """)

KILLS = {'mid-epoch': 'batch_1_2', 'inside a write': 'save_tmp_written@2', 'between best.pt and last.pt': 'best_written@2'}
# SIGTERM: after training batch 1 of epoch 1 (seen at the next batch's end: 3 done); while epoch 1's checkpoint is written; between epochs 0 and 1 (once
# epoch 0's last.pt is on disk); from the parent, at whatever batch the child has reached after batch 0 of epoch 2.
TERMS = {'term mid-epoch': ('batch_1_1:TERM', 1, 3), 'term inside a write': ('save_tmp_written@2:TERM', 2, 0),
         'term between epochs': ('last_written@1:TERM', 1, 0), 'term from outside': ('wait_2_0', 2, None)}

def test_killed_or_stopped_then_resumed_gives_identical_weights(tmp_path):
    "Killed (SIGKILL) in the middle of epoch 1, inside the writing of a checkpoint, and between best.pt and last.pt; stopped (SIGTERM) in the middle of an epoch, inside a write, between epochs and from outside: each resumes to the uninterrupted run's weights and rows, best.pt holds the best epoch's, and no temporary file is left by the resumed runs."
    script = tmp_path/'child.py'
    script.write_text(CHILD)
    runner = subprocess.Popen([sys.executable, str(script)], env=CHILD_ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    def run(jobs):
        "Run `jobs` (`(folder, resume, kill point)`) side by side; their process ids and exit statuses."
        runner.stdin.write(json.dumps([[str(f), r, k] for f, r, k in jobs]) + '\n')
        runner.stdin.flush()
        line = runner.stdout.readline()
        assert line, runner.stderr.read()[-2000:]
        return json.loads(line)
    for name in [*KILLS, *TERMS, 'full']: (tmp_path/name).mkdir()
    (_, full), *stopped_runs = run([(tmp_path/'full', False, None)] + [(tmp_path/name, False, kill) for name, kill in KILLS.items()]
                                   + [(tmp_path/name, False, kill) for name, (kill, _, _) in TERMS.items()])
    assert full == 0 and [st for _, st in stopped_runs] == [-signal.SIGKILL]*len(KILLS) + [3]*len(TERMS), (full, stopped_runs)
    pid_of = dict(zip([*KILLS, *TERMS], [pid for pid, _ in stopped_runs]))
    killed = {name: tmp_path/name for name in [*KILLS, *TERMS]}
    assert read_checkpoint(killed['mid-epoch']/'last.pt')['epoch'] == 0   # epoch 0 saved; epoch 1 was running
    # Killed while writing epoch 1's checkpoint (its temporary file written, not renamed): the leftover stays, last.pt is
    # epoch 0's, whole. A load of that path is a read: it leaves the leftover alone.
    d = killed['inside a write']
    left = [p.name for p in d.glob('.*')]
    assert len(left) == 1 and left[0].startswith(('.last.pt.tmp', '.best.pt.tmp')), left
    assert read_checkpoint(d/'last.pt')['epoch'] == 0
    TrainLearner(tiny_cnn()).load(d/'last.pt', model_only=True)
    assert [p.name for p in d.glob('.*')] == left
    # Killed between the two files of an epoch that was the best so far: best.pt is one epoch ahead of last.pt.
    d = killed['between best.pt and last.pt']
    assert read_checkpoint(d/'best.pt')['epoch'] == read_checkpoint(d/'last.pt')['epoch'] + 1
    # Stopped by SIGTERM: TrainingStopped named last.pt and the place; last.pt holds that place.
    for name, (_, epoch, batch) in TERMS.items():
        path, signum, e, b, message = json.loads((killed[name]/'stopped.json').read_text())
        assert (Path(path), signum, e) == (killed[name]/'last.pt', signal.SIGTERM, epoch), (name, path, signum, e)
        if batch is not None: assert b == batch, (name, b)
        assert str(killed[name]/'last.pt') in message and 'SIGTERM' in message
        ckpt = read_checkpoint(killed[name]/'last.pt')
        assert ckpt['epoch'] == e - 1 and (ckpt['place'] is None) == (b == 0), (name, ckpt['epoch'], ckpt['place'])
        if b: assert (ckpt['place']['epoch'], ckpt['place']['batch']) == (e, b)
    leftovers = {name: set(folder.glob('.*')) for name, folder in killed.items()}
    assert [st for _, st in run([(folder, True, None) for folder in killed.values()])] == [0]*len(killed)
    full = tmp_path/'full'
    expected, best, rows = torch.load(full/'final.pt'), read_checkpoint(full/'best.pt'), json.loads((full/'rows.json').read_text())
    for name, folder in killed.items():
        assert_same(torch.load(folder/'final.pt'), expected)
        assert_same(read_checkpoint(folder/'best.pt')['model'], best['model'])
        runs = [json.loads(line) for line in (folder/'rows.json').read_text().splitlines()]
        if name in TERMS: assert runs[0] + runs[1] == rows, name   # the stopped run's rows, then the resumed run's: the same
        assert sorted(p.name for p in folder.iterdir() if not p.name.startswith('.')) >= ['best.pt', 'final.pt', 'last.pt'], name
        assert set(folder.glob('.*')) <= leftovers[name], name   # the resumed run left no temporary file
    runner.stdin.close()
    assert runner.wait(timeout=60) == 0, runner.stderr.read()[-2000:]


# ---------- CheckpointCB and get_preds ----------

def test_checkpoint_cb_keeps_last_and_best(tmp_path):
    learn = make_learner(cbs=[cb := CheckpointCB(tmp_path, monitor='loss', mode='min')])
    learn.fit(3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['best.pt', 'last.pt']
    losses = [row['loss'] for row in learn.metrics.history if row['train'] == 'eval']
    best = min(range(3), key=losses.__getitem__)
    assert (cb.best, cb.best_epoch) == (losses[best], best)
    assert read_checkpoint(tmp_path/'best.pt')['epoch'] == best
    assert read_checkpoint(tmp_path/'last.pt')['epoch'] == 2


class _Score:
    "A metric that computes to `value`."
    def __init__(self, value): self.value = value
    def compute(self): return torch.tensor(self.value)

def _validated(cb, scores, batches=1):
    "Run `cb.after_epoch` for validation passes scoring `scores` (on a process that writes nothing): the best epoch kept."
    for epoch, v in enumerate(scores):
        learn = SimpleNamespace(training=False, epoch=epoch, n_epochs=len(scores), is_main_process=False,
                                metrics=SimpleNamespace(all_metrics={cb.monitor: _Score(v)}))
        cb.distributed, cb.pass_batches = False, batches
        cb.after_epoch(learn)
    return cb.best_epoch

def test_checkpoint_cb_mode_follows_the_metric_and_ties_keep_the_earlier():
    assert CheckpointCB(monitor='loss').mode == 'min' and CheckpointCB(monitor='valid_error').mode == 'min'
    assert CheckpointCB(monitor='accuracy').mode == 'max' and CheckpointCB(monitor='loss', mode='max').mode == 'max'
    assert _validated(CheckpointCB(monitor='loss'), [0.5, 0.4, 0.6]) == 1
    assert _validated(CheckpointCB(monitor='loss'), [0.5, 0.4, 0.4]) == 1        # a tie keeps the earlier epoch
    assert _validated(CheckpointCB(monitor='accuracy'), [0.7, 0.7, 0.6]) == 0
    assert _validated(CheckpointCB(monitor='accuracy'), [float('nan'), 0.1]) == 1   # a NaN is never best
    assert _validated(CheckpointCB(monitor='loss'), [0.0, 0.0], batches=0) is None  # nor an empty pass


def test_empty_validation_pass_never_becomes_best(tmp_path):
    "A validation DataLoader that yields nothing (an iterable without a length, so the fit's check cannot tell): its row reads loss 0 and accuracy NaN; last.pt is written, best.pt never."
    learn = make_learner(cbs=[cb := CheckpointCB(tmp_path, monitor='loss')], epochs=1)
    class Empty:
        def __iter__(self): return iter(())
    learn.dls.valid = Empty()
    learn.fit(1)
    row = learn.metrics.history[-1]
    assert row['train'] == 'eval' and math.isnan(row['accuracy'])
    assert sorted(p.name for p in tmp_path.iterdir()) == ['last.pt'] and cb.best is None


def test_best_score_carried_over(tmp_path):
    "The best score so far is part of the checkpoint: a learner that loads one whose best loss no epoch can beat never writes best.pt, and keeps that score."
    learn = make_learner(cbs=[CheckpointCB(tmp_path/'a', monitor='loss')], epochs=2)
    learn.fit(2, cbs=StopAfter(0))
    ckpt = torch.load(tmp_path/'a'/'last.pt', weights_only=True)
    ckpt['cbs']['CheckpointCB'].update(best=-1.0, best_epoch=0)   # a loss below zero: no epoch beats it
    torch.save(ckpt, tmp_path/'unbeatable.pt')
    again = make_learner(cbs=[cb := CheckpointCB(tmp_path/'b', monitor='loss')], epochs=2)
    again.load(tmp_path/'unbeatable.pt')
    again.fit(2)
    assert (cb.best, cb.best_epoch) == (-1.0, 0) and sorted(p.name for p in (tmp_path/'b').iterdir()) == ['last.pt']


def test_two_stateful_callbacks_of_one_class(tmp_path):
    "Two CheckpointCBs (one watching the loss, one the accuracy) in one learner: each gets its own state back."
    learn = make_learner(cbs=[CheckpointCB(tmp_path/'l', monitor='loss'), CheckpointCB(tmp_path/'a', monitor='accuracy')], epochs=1)
    learn.fit(1)
    learn.save(tmp_path/'both.pt')
    assert set(read_checkpoint(tmp_path/'both.pt')['cbs']) == {'BatchSchedCB', 'CheckpointCB', 'CheckpointCB_1'}
    again = make_learner(cbs=[l := CheckpointCB(tmp_path/'l2', monitor='loss'), a := CheckpointCB(tmp_path/'a2', monitor='accuracy')], epochs=1)
    again.load(tmp_path/'both.pt')
    next(cb for cb in again.cbs if isinstance(cb, LoadedStateCB)).apply(again)   # what the next fit does first
    assert [(cb.monitor, cb.best) for cb in (l, a)] == [(cb.monitor, cb.best) for cb in learn.cbs if isinstance(cb, CheckpointCB)]


def test_explicit_lr_wins_after_load(trained):
    "`fit(lr=1e-4)` after `load` trains at 1e-4, not at the saved optimizer's rate; `fit()` goes on at the saved rate."
    _, path = trained
    rates = []
    class Rate(Callback):
        order = LoadedStateCB.order + 1
        def before_batch(self, learn): rates.append(learn.opt.param_groups[0]['lr'])
    learn = make_learner()
    learn.cbs = [cb for cb in learn.cbs if not isinstance(cb, BatchSchedCB)]   # no schedule: the optimizer's rate is the one used
    learn.load(path)
    saved = read_checkpoint(path)['opt']['param_groups'][0]['lr']
    learn.fit(3, lr=1e-4, cbs=Rate())
    assert saved != 1e-4 and set(rates) == {1e-4}
    rates.clear()
    learn.load(path)
    learn.fit(2, cbs=Rate())
    assert set(rates) == {saved}


def test_full_disk_is_an_oserror(tmp_path):
    "A write that fails for want of room (a file-size limit in a child process, SIGXFSZ ignored) raises OSError, not PyTorch's RuntimeError; the old file is untouched and no temporary file is left."
    target = tmp_path/'model.pt'
    atomic_save({'w': torch.ones(10)}, target)
    before = target.read_bytes()
    child = textwrap.dedent(f"""
        import resource, signal, torch
        from miniai.checkpoint import atomic_save
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit then fails, instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))   # no file of this process may grow past 64 kB
        try: atomic_save({{'w': torch.zeros(100_000)}}, {str(target)!r})   # 400 kB
        except OSError as e: print('OSError', e)
        """)
    res = subprocess.run([sys.executable, '-c', child], capture_output=True, text=True, env=CHILD_ENV, timeout=120)
    said = res.stdout + res.stderr[-2000:]
    assert res.returncode == 0 and said.startswith('OSError') and 'is the disk full?' in said, said
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ['model.pt']


def test_load_deletes_nothing(trained, tmp_path, monkeypatch):
    "`load` is a read: a run folder made read-only, holding a temporary file a killed writer left, still loads, and the leftover stays. (As root the permission bits stop nothing, so every way of deleting a file is made to fail as well.)"
    _, good = trained
    run = tmp_path/'run'
    run.mkdir()
    (run/'last.pt').write_bytes(good.read_bytes())
    (run/'.last.pt.tmp999999999').write_text('left by a process that is gone')
    def no_delete(*args, **kwargs): raise AssertionError(f'load deleted {args}')
    for mod, name in ((os, 'unlink'), (os, 'remove'), (os, 'rmdir'), (shutil, 'rmtree'), (Path, 'unlink'), (Path, 'rmdir')):
        monkeypatch.setattr(mod, name, no_delete)
    run.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        make_learner().load(run/'last.pt')
        assert sorted(p.name for p in run.iterdir()) == ['.last.pt.tmp999999999', 'last.pt']
    finally: run.chmod(stat.S_IRWXU)


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
        attrs = set(vars(learn))
        for mode in (True, False):
            learn.model.train(mode)
            preds, targs = learn.get_preds()
            assert learn.model.training == mode   # the mode is put back
        assert set(vars(learn)) == attrs
        xs, ys = map(torch.cat, zip(*learn.dls.valid))
        with torch.no_grad(): expected = learn.model.eval()(xs)
        assert preds.device.type == 'cpu' and torch.equal(preds, expected) and torch.equal(targs, ys)
        assert torch.equal(learn.metrics.metrics['accuracy'].compute(), acc_before)   # metrics untouched
        assert not (tmp_path/'never').exists()                                          # no checkpoint written
        # A learner with no data at all: loaded from the file, it predicts a DataLoader it is given.
        bare = TrainLearner(get_model(nfs=NFS, norm=nn.BatchNorm2d), loss_func=F.cross_entropy).load(path, model_only=True)
        assert torch.equal(bare.get_preds(dl=learn.dls.valid)[0], expected)
        with pytest.raises(ValueError, match='pass one with `dl=`'): bare.get_preds()
    finally: learn.cbs.remove(cb)


# ---------- two processes agree on a stop ----------

# Two processes (forked, joined by torch.distributed over gloo) train the tiny CNN side by side, each with CheckpointCB
# into its own folder, rank 0 the main process. Only rank 1 gets SIGTERM, after training batch 0 of epoch 1: both must
# stop at the same batch, both must know the signal, and only rank 0 writes.
TWO = textwrap.dedent("""
    import json, os, signal, sys, traceback, torch, torch.nn.functional as F, torch.distributed as dist
    from pathlib import Path
    from types import SimpleNamespace
    from torch import nn, optim
    from torch.utils.data import DataLoader, TensorDataset
    from miniai.checkpoint import CheckpointCB, TrainingStopped
    from miniai.learner import Callback, MetricsCB, TrainLearner
    """) + inspect.getsource(tiny_cnn) + textwrap.dedent("""
    class SignalRank1(Callback):
        order = CheckpointCB.order + 1
        def after_batch(self, learn):
            if learn.training and dist.get_rank() == 1 and (learn.epoch, learn.iter) == (1, 0): os.kill(os.getpid(), signal.SIGTERM)

    def rank(r, folder):
        dist.init_process_group('gloo', init_method=f'file://{folder}/store', rank=r, world_size=2)
        torch.manual_seed(0)
        x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
        dls = SimpleNamespace(train=DataLoader(TensorDataset(x, y), 16, shuffle=True), valid=DataLoader(TensorDataset(x[:32], y[:32]), 16))
        metrics = MetricsCB()
        metrics.log_to(lambda row: None)
        learn = TrainLearner(tiny_cnn(), dls, F.cross_entropy, lr=1e-2, opt_func=optim.AdamW,
                             cbs=[metrics, CheckpointCB(Path(folder)/str(r), monitor='loss'), SignalRank1()])
        learn.is_main_process = r == 0
        try: learn.fit(3); res = None
        except TrainingStopped as e: res = [e.signum, e.epoch, e.batch, e.path.parent.name]
        Path(folder, f'rank{r}.json').write_text(json.dumps(res))
        dist.destroy_process_group()

    folder = sys.argv[1]
    pids = []
    for r in range(2):
        pid = os.fork()
        if pid: pids.append(pid); continue
        code = 1
        try: rank(r, folder); code = 0
        except BaseException: traceback.print_exc()
        finally: os._exit(code)
    print(json.dumps([os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]))
    """)

def test_two_processes_stop_at_the_same_batch(tmp_path):
    "Under torch.distributed, a SIGTERM that reaches one process stops both at the same batch; only the main process writes the checkpoint, which holds that place."
    script = tmp_path/'two.py'
    script.write_text(TWO)
    res = subprocess.run([sys.executable, str(script), str(tmp_path)], env={**CHILD_ENV, 'GLOO_SOCKET_IFNAME': 'lo'},
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and json.loads(res.stdout.splitlines()[-1]) == [0, 0], res.stderr[-3000:]
    stops = [json.loads((tmp_path/f'rank{r}.json').read_text()) for r in range(2)]
    assert stops == [[signal.SIGTERM, 1, 2, '0'], [signal.SIGTERM, 1, 2, '1']], stops   # rank 0 learnt of rank 1's signal
    place = read_checkpoint(tmp_path/'0'/'last.pt')['place']
    assert (place['epoch'], place['batch']) == (1, 2)
    assert not (tmp_path/'1').exists()   # rank 1 wrote nothing
