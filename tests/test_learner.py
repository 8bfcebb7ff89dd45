"Behaviour of `miniai.learner` that would clutter the lesson: event order, cancelling, faults, bad input, determinism, console output."
import contextlib, copy, io, math, os, subprocess, sys, textwrap
from functools import partial
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.optim import lr_scheduler
from torch.utils.data import DataLoader, TensorDataset
from torcheval.metrics import Mean, MulticlassAccuracy
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from miniai.datasets import DataLoaders

from miniai.learner import *
from conftest import LessonLearner, make_tiny_dls


def make_dls(n_train=8, n_valid=4, bs=4): return make_tiny_dls(n_train, n_valid, bs)

def make_model(seed=0):
    torch.manual_seed(seed)
    return nn.Linear(3, 1)


# Optimizers written from scratch (issue 23): only `step` and `zero_grad`, no `param_groups`, no `state_dict`.

class ScratchSGD:
    "The course's from-scratch SGD: its own `params`, `lr` and `wd`; nothing else of `torch.optim.Optimizer`."
    def __init__(self, params, lr, wd=0.): self.params, self.lr, self.wd = list(params), lr, wd
    def step(self):
        with torch.no_grad():
            for p in self.params:
                if self.wd: p *= 1 - self.lr * self.wd
                p -= p.grad * self.lr
    def zero_grad(self):
        for p in self.params: p.grad.data.zero_()

class BareOpt:
    "An optimizer that is nothing but `step` and `zero_grad` over the parameters it was given (no `params` attribute either)."
    def __init__(self, params, lr):
        ps = list(params)
        def step():
            with torch.no_grad():
                for p in ps: p -= lr * p.grad
        def zero_grad():
            for p in ps: p.grad = None
        self.step, self.zero_grad = step, zero_grad


class EventRecorder(Callback):
    "Records the name of every event and training step it is asked about (it answers to all of them)."
    def __init__(self, raise_in=None, exc=None, times=1):
        self.events, self.raise_in, self.exc, self.times = [], raise_in, exc, times
    def __getattr__(self, nm):
        if nm.startswith(('before_', 'after_', 'cleanup_')) or nm in ('predict', 'get_loss', 'backward', 'step', 'zero_grad'):
            def record(learn):
                self.events.append(nm)
                if nm == self.raise_in and self.times > 0:
                    self.times -= 1
                    raise self.exc()
            return record
        raise AttributeError(nm)

TRAIN_BATCH = ['before_batch', 'predict', 'after_predict', 'get_loss', 'after_loss', 'backward', 'after_backward',
               'step', 'after_step', 'zero_grad', 'after_batch', 'cleanup_batch']
VALID_BATCH = ['before_batch', 'predict', 'after_predict', 'get_loss', 'after_loss', 'after_batch', 'cleanup_batch']

def epoch(batches): return ['before_epoch', *batches, 'after_epoch', 'cleanup_epoch']

def record_fit(rec, n_epochs=1, **kwargs):
    learn = Learner(make_model(), make_dls(**kwargs), F.mse_loss, lr=0.01, cbs=[TrainCB(), rec])
    learn.fit(n_epochs)
    return learn, rec.events


def test_event_order_two_batches():
    _, events = record_fit(EventRecorder())
    assert events == ['before_fit', *epoch(TRAIN_BATCH * 2), *epoch(VALID_BATCH), 'after_fit', 'cleanup_fit']

def test_event_order_train_only_and_valid_only():
    learn = Learner(make_model(), make_dls(), F.mse_loss, cbs=[TrainCB()])
    rec = EventRecorder()
    learn.fit(1, valid=False, cbs=rec)
    assert rec.events == ['before_fit', *epoch(TRAIN_BATCH * 2), 'after_fit', 'cleanup_fit']
    rec = EventRecorder()
    learn.fit(1, train=False, cbs=rec)
    assert rec.events == ['before_fit', *epoch(VALID_BATCH), 'after_fit', 'cleanup_fit']

def test_callback_order_is_respected():
    calls = []
    class Named(Callback):
        def __init__(self, name, order): self.name, self.order = name, order
        def before_fit(self, learn): calls.append(self.name)
    cbs = [Named('c', 5), Named('a', -1), Named('b1', 0), Named('b2', 0)]
    learn = Learner(make_model(), make_dls(), F.mse_loss, cbs=[TrainCB(), *cbs])
    learn.fit(1)
    assert calls == ['a', 'b1', 'b2', 'c']   # ascending order, ties in list order
    calls.clear()
    run_cbs(cbs, 'before_fit')
    assert calls == ['a', 'b1', 'b2', 'c']


# --- cancelling: each exception stops exactly its own level -------------------------------------------------------

def test_cancel_batch_in_after_predict_skips_rest_of_that_batch_only():
    _, events = record_fit(EventRecorder('after_predict', CancelBatchException))
    cancelled = ['before_batch', 'predict', 'after_predict', 'cleanup_batch']   # no get_loss ... after_batch
    assert events == ['before_fit', *epoch(cancelled + TRAIN_BATCH), *epoch(VALID_BATCH), 'after_fit', 'cleanup_fit']

def test_cancel_batch_leaves_parameters_untouched():
    model = make_model()
    before = [p.detach().clone() for p in model.parameters()]
    class CancelAll(Callback):
        def after_loss(self, learn): raise CancelBatchException()
    Learner(model, make_dls(), F.mse_loss, cbs=[TrainCB(), CancelAll()]).fit(2)
    for b, p in zip(before, model.parameters()): assert torch.equal(b, p)

def test_cancel_epoch_in_training_batch_goes_on_with_validation_and_next_epoch():
    _, events = record_fit(EventRecorder('after_loss', CancelEpochException), n_epochs=2)
    cancelled_epoch = ['before_epoch', 'before_batch', 'predict', 'after_predict', 'get_loss', 'after_loss',
                       'cleanup_batch', 'cleanup_epoch']   # after_batch and after_epoch skipped
    assert events == ['before_fit', *cancelled_epoch, *epoch(VALID_BATCH),
                      *epoch(TRAIN_BATCH * 2), *epoch(VALID_BATCH), 'after_fit', 'cleanup_fit']

def test_cancel_fit_ends_cleanly_with_cleanup():
    _, events = record_fit(EventRecorder('after_step', CancelFitException), n_epochs=3)
    assert events == ['before_fit', 'before_epoch', *TRAIN_BATCH[:TRAIN_BATCH.index('after_step') + 1],
                      'cleanup_batch', 'cleanup_epoch', 'cleanup_fit']

def test_cancel_fit_in_before_fit():
    _, events = record_fit(EventRecorder('before_fit', CancelFitException))
    assert events == ['before_fit', 'cleanup_fit']

def test_wrong_level_cancel_is_not_swallowed_by_a_lower_level():
    # CancelEpochException raised in a batch passes through the batch level; a CancelBatchException raised
    # outside any batch is an error (nothing at that level can cancel a batch).
    with pytest.raises(CancelBatchException):
        record_fit(EventRecorder('before_epoch', CancelBatchException))

def test_single_batch_cb():
    rec = EventRecorder()
    learn = Learner(make_model(), make_dls(), F.mse_loss, cbs=[TrainCB(), rec, SingleBatchCB()])
    learn.fit(5)
    assert rec.events == ['before_fit', 'before_epoch', *TRAIN_BATCH[:-1], 'cleanup_batch', 'cleanup_epoch', 'cleanup_fit']


# --- faults ---------------------------------------------------------------------------------------------------------

def test_raising_callback_still_cleans_up_and_removes_fit_only_callbacks():
    class Boom(Callback):
        def after_batch(self, learn):
            if learn.iter == 1: raise RuntimeError('boom')
    rec, fit_only = EventRecorder(), Boom()
    learn = Learner(make_model(), make_dls(), F.mse_loss, cbs=[TrainCB(), rec])
    with pytest.raises(RuntimeError, match='boom'): learn.fit(2, cbs=fit_only)
    assert rec.events[-3:] == ['cleanup_batch', 'cleanup_epoch', 'cleanup_fit']
    assert 'after_fit' not in rec.events and 'after_epoch' not in rec.events
    assert fit_only not in learn.cbs and len(learn.cbs) == 2
    # and the learner still works afterwards
    rec.events.clear()
    learn.fit(1)
    assert rec.events[-2:] == ['after_fit', 'cleanup_fit']

def test_fit_only_callbacks_and_lr_are_for_one_fit():
    learn = TrainLearner(make_model(), make_dls(), F.mse_loss, lr=0.01)
    lrs = []
    class LR(Callback):
        def before_fit(self, learn): lrs.append(learn.opt.param_groups[0]['lr'])
    cb = LR()
    learn.fit(1, cbs=cb, lr=0.5)
    learn.fit(1, cbs=[cb])
    assert lrs == [0.5, 0.01] and learn.cbs == [] and learn.lr == 0.01

def test_same_seed_same_losses():
    def losses(seed):
        torch.manual_seed(seed)
        dls = make_tiny_dls(64, 16, 8, shuffle=True, seed=seed)
        model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))
        out = []
        class Rec(Callback):
            def after_loss(self, learn): out.append(learn.loss.item())
        TrainLearner(model, dls, F.mse_loss, lr=0.05, cbs=Rec()).fit(2)
        return out
    a, b, c = losses(1), losses(1), losses(2)
    assert a == b and a != c and len(a) == 2 * (8 + 2)   # 8 training and 2 validation batches per epoch

@pytest.mark.parametrize('split', ['train', 'valid'])
def test_empty_dataloader_gives_a_clear_error(split):
    dls = make_dls()
    setattr(dls, split, DataLoader(TensorDataset(torch.zeros(0, 3), torch.zeros(0, 1)), 4))
    learn = TrainLearner(make_model(), dls, F.mse_loss, cbs=MetricsCB())
    with pytest.raises(ValueError, match=f'The {split} DataLoader yields no batches'): learn.fit(1)

def test_drop_last_smaller_than_batch_is_empty_too():
    dls = make_dls()
    dls.train = DataLoader(TensorDataset(torch.zeros(3, 3), torch.zeros(3, 1)), 4, drop_last=True)
    with pytest.raises(ValueError, match='drop_last'): TrainLearner(make_model(), dls, F.mse_loss).fit(1)

def test_missing_dls_and_missing_training_steps():
    with pytest.raises(ValueError, match='no `train` DataLoader'): TrainLearner(make_model()).fit(1)
    with pytest.raises(TypeError, match='TrainCB'): Learner(make_model(), make_dls()).fit(1)
    # evaluation only needs predict and get_loss
    class Eval(Callback):
        def predict(self, learn): learn.preds = learn.model(learn.batch[0])
        def get_loss(self, learn): learn.loss = learn.loss_func(learn.preds, learn.batch[1])
    Learner(make_model(), make_dls(), F.mse_loss, cbs=Eval()).fit(1, train=False)

def test_lr_finder_stops_on_nan_loss():
    class NaNAt(Callback):
        order = LRFinderCB.order - 1   # before the finder sees the loss
        def after_loss(self, learn):
            if learn.iter == 2: learn.loss = learn.loss * float('nan')
    dls = make_dls(n_train=40)   # 10 batches an epoch
    finder = LRFinderCB(gamma=1.1, max_mult=1e9)
    TrainLearner(make_model(), dls, F.mse_loss, cbs=NaNAt()).fit(3, cbs=finder, lr=1e-4)
    assert len(finder.losses) == 3 and math.isnan(finder.losses[-1])
    assert not any(math.isnan(l) for l in finder.losses[:-1])

def test_lr_finder_stops_when_loss_explodes_and_grows_lr_exponentially():
    learn = TrainLearner(make_model(), make_dls(n_train=400, bs=8), F.mse_loss)
    finder = LRFinderCB(gamma=1.5, max_mult=3)
    learn.fit(10, cbs=finder, lr=1e-4)
    assert finder.losses[-1] > 3 * min(finder.losses)   # stopped because of the explosion ...
    assert len(finder.lrs) < 10 * 50                    # ... long before the epochs ran out
    for a, b in zip(finder.lrs, finder.lrs[1:]): assert b == pytest.approx(a * 1.5)
    assert learn.cbs == []

def test_lr_find_method_searches_then_leaves_no_callback():
    model = make_model()
    before = [p.detach().clone() for p in model.parameters()]
    learn = TrainLearner(model, make_dls(n_train=400, bs=50), F.mse_loss)
    learn.lr_find(gamma=2, start_lr=1e-5)
    assert learn.opt.param_groups[0]['lr'] >= 1e-5 * 2**5   # the rate grew batch by batch ...
    assert learn.epoch < 9                                   # ... until the loss exploded, before the 10 epochs ran out
    assert any(not torch.equal(p, p0) for p, p0 in zip(model.parameters(), before))
    assert learn.cbs == []

def test_batch_scheduler_steps_only_while_training():
    dls = make_dls(n_train=12, n_valid=8)   # 3 training batches, 2 validation batches
    rec = RecorderCB(lr=lambda cb: cb.pg['lr'])
    sched = partial(lr_scheduler.StepLR, step_size=1, gamma=0.5)
    TrainLearner(make_model(), dls, F.mse_loss, lr=1.).fit(2, cbs=[BatchSchedCB(sched), rec])
    assert rec.recs['lr'] == [0.5 ** i for i in range(6)]   # the rate each training batch used

def test_epoch_scheduler():
    rec = RecorderCB(lr=lambda cb: cb.pg['lr'])
    sched = partial(lr_scheduler.StepLR, step_size=1, gamma=0.1)
    TrainLearner(make_model(), make_dls(), F.mse_loss, lr=1.).fit(3, cbs=[rec, EpochSchedCB(sched)])
    assert rec.recs['lr'] == pytest.approx([1., 1., .1, .1, .01, .01])

def test_momentum_learner_is_sgd_with_momentum():
    m1, m2 = make_model(), make_model()
    MomentumLearner(m1, make_dls(), F.mse_loss, lr=0.05, mom=0.8).fit(2)
    TrainLearner(m2, make_dls(), F.mse_loss, lr=0.05, opt_func=partial(optim.SGD, momentum=0.8)).fit(2)
    for a, b in zip(m1.parameters(), m2.parameters()): torch.testing.assert_close(a, b)

def test_to_cpu():
    x = {'a': [torch.ones(2, dtype=torch.float16, requires_grad=False)], 'b': (torch.zeros(1, requires_grad=True), 3)}
    res = to_cpu(x)
    assert res['a'][0].dtype == torch.float32 and not res['b'][0].requires_grad and res['b'][1] == 3
    assert isinstance(res['b'], tuple) and isinstance(res['a'], list)


# --- ProgressCB without Jupyter -------------------------------------------------------------------------------------

def test_progress_table_with_non_string_values(capsys):
    cb = ProgressCB()
    cb.before_fit(SimpleNamespace(epochs=range(1)))
    cb.write_row({'loss': 0.5, 'epoch': 3, 'note': None, 't': torch.tensor(2.)})
    cb.write_row({'loss': 1, 'epoch': 10, 'note': 'x', 't': 7})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ['loss', 'epoch', 'note', 't']
    assert lines[1].split() == ['0.500', '3', 'None', 'tensor(2.)']   # floats with three decimals
    assert lines[2].split() == ['1', '10', 'x', '7']
    assert lines[1].index('3') == lines[0].index('epoch')   # columns line up

def test_progress_with_console_bars(capsys):
    # As in a terminal: fastprogress's console bars plus our table rows, some values not strings.
    learn = TrainLearner(nn.Linear(3, 2), classification_dls(32, 8), F.cross_entropy, cbs=[MetricsCB(MulticlassAccuracy()), ProgressCB(plot=True, bars=True)])
    learn.fit(2)
    out = capsys.readouterr().out
    rows = [l.split('\r')[-1].split() for l in out.split('\n') if l.strip()]
    assert rows[0] == ['MulticlassAccuracy', 'loss', 'epoch', 'train']
    assert [r[2:] for r in rows[1:]] == [['0', 'train'], ['0', 'eval'], ['1', 'train'], ['1', 'eval']]

SCRIPT = textwrap.dedent('''
    import torch, torch.nn.functional as F
    from types import SimpleNamespace
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset
    from torcheval.metrics import MulticlassAccuracy
    from miniai.learner import *
    torch.manual_seed(0)
    x = torch.randn(64, 3); y = (x[:, 0] > 0).long()
    dls = SimpleNamespace(train=DataLoader(TensorDataset(x, y), 8), valid=DataLoader(TensorDataset(x, y), 16))
    learn = TrainLearner(nn.Linear(3, 2), dls, F.cross_entropy, lr=0.5,
                         cbs=[DeviceCB('cpu'), MetricsCB(MulticlassAccuracy()), ProgressCB(plot=True)])
    learn.fit(3)
''')

def test_progress_in_plain_python_prints_plain_lines():
    "Run in a separate interpreter with stdout to a pipe, as in a log file or CI: only plain table lines."
    res = subprocess.run([sys.executable, '-c', SCRIPT], capture_output=True, text=True, timeout=120,
                         env={**os.environ, 'MPLBACKEND': 'Agg'})
    assert res.returncode == 0, res.stderr
    assert '\r' not in res.stdout
    lines = res.stdout.splitlines()
    assert len(lines) == 7 and lines[0].split() == ['MulticlassAccuracy', 'loss', 'epoch', 'train']
    for i, line in enumerate(lines[1:]):
        acc, loss, ep, kind = line.split()
        assert float(loss) > 0 and int(ep) == i // 2 and kind == ('train', 'eval')[i % 2]
    assert float(lines[-1].split()[0]) >= 0.9   # the classes are split by the sign of x[:, 0]: a linear model learns it

class NaNAt(Callback):
    "Make the training loss NaN at the batches `iters` (of every training pass), before the metrics see it."
    order = -5
    def __init__(self, *iters): self.iters = iters
    def after_loss(self, learn):
        if learn.training and learn.iter in self.iters: learn.loss = learn.loss * float('nan')

def test_nan_training_loss_is_a_clear_error_at_the_end_of_the_pass_and_never_reaches_the_weights():
    model = make_model()
    learn = TrainLearner(model, make_dls(n_train=40), F.mse_loss, cbs=[NaNAt(2, 5), NonFiniteGuardCB(), MetricsCB()])   # 10 batches
    with pytest.raises(FloatingPointError, match=r'(?s)not finite at epoch 0, batch 2 \(2 of .* 10 batches.*lr_find.*'
                                                  r'steps were skipped.*Checked now: the weights hold no NaN'):
        learn.fit(3)
    assert (learn.epoch, learn.iter, learn.training) == (0, 9, True)   # raised after the pass's last batch, no later
    assert learn.metrics.history == []                                   # the guard runs first: the bad pass logged no row
    assert len(learn.cbs) == 3
    # The weights are those of a fit that skipped batches 2 and 5.
    class Skip(Callback):
        def after_loss(self, learn):
            if learn.training and learn.iter in (2, 5): raise CancelBatchException()
    skipped = make_model()
    TrainLearner(skipped, make_dls(n_train=40), F.mse_loss, cbs=Skip()).fit(1, valid=False)
    for p, q in zip(model.parameters(), skipped.parameters()): assert torch.isfinite(p).all() and torch.equal(p, q)

def test_without_the_guard_there_is_no_guard():
    "A learner without `NonFiniteGuardCB` is not guarded: the NaN batch's step fills the weights with NaN, the row says nan."
    model, metrics = make_model(), MetricsCB()
    TrainLearner(model, make_dls(n_train=40), F.mse_loss, cbs=[NaNAt(2), metrics]).fit(1)
    assert not all(torch.isfinite(p).all() for p in model.parameters()) and math.isnan(metrics.history[0]['loss'])

class NaNGrad(nn.Module):
    "A linear model whose loss gets `sqrt(0 * w).sum()` (0, finite) at chosen batches: its gradient is 0 * inf = NaN."
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin, self.bad = nn.Linear(3, 1), False
    def forward(self, x):
        out = self.lin(x)
        return out + (0 * self.lin.weight).sqrt().sum() if self.bad else out

def test_a_nan_gradient_from_a_finite_loss_is_caught():
    class BadAt(Callback):
        order = -5
        def before_batch(self, learn): learn.model.bad = learn.training and learn.iter == 3
    model, losses = NaNGrad(), []
    class Losses(Callback):
        def after_loss(self, learn): losses.append(learn.loss.item())
    learn = TrainLearner(model, make_dls(n_train=40), F.mse_loss, cbs=[BadAt(), Losses(), NonFiniteGuardCB()])
    with pytest.raises(FloatingPointError, match=r'(?s)batch 3 \(1 of .*weights hold no NaN'): learn.fit(1)
    assert all(math.isfinite(l) for l in losses)   # the loss was finite throughout: only the gradient told
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # The check can fail: unguarded, the same batch puts NaN in the weights.
    model = NaNGrad()
    TrainLearner(model, make_dls(n_train=40), F.mse_loss, cbs=[BadAt()]).fit(1)
    assert not torch.isfinite(model.lin.weight).all()

class Snapshot(Callback):
    "The weights and the optimizer's state just before and just after training batch `i`."
    order = 5
    def __init__(self, i): self.i = i
    def _take(self, learn):
        opt = learn.opt
        if isinstance(opt, optim.Optimizer): state = copy.deepcopy(opt.state_dict()['state'])
        else: state = ({k: v for k, v in vars(opt).items() if k != 'params'}, [copy.deepcopy(vars(p)) for p in opt.params])
        return [p.detach().clone() for p in learn.model.parameters()], state
    def before_batch(self, learn):
        if learn.training and learn.iter == self.i: self.before = self._take(learn)
    def after_batch(self, learn):
        if learn.training and learn.iter == self.i: self.after = self._take(learn)

def same(a, b):
    "Exactly equal, through dicts, lists and tuples of tensors and numbers."
    if torch.is_tensor(a): return torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict): return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)): return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b

class ScratchMomentum(ScratchSGD):
    "A from-scratch optimizer with state: a momentum buffer on each parameter and a Python step count."
    def __init__(self, params, lr, mom=0.9): super().__init__(params, lr); self.mom, self.i = mom, 0
    def step(self):
        with torch.no_grad():
            for p in self.params:
                if not hasattr(p, 'grad_avg'): p.grad_avg = torch.zeros_like(p.grad)
                p.grad_avg = p.grad_avg * self.mom + p.grad
                p -= self.lr * p.grad_avg
        self.i += 1

OPTIMIZERS = {'SGD': optim.SGD, 'SGD momentum': partial(optim.SGD, momentum=0.9),
              'SGD weight decay': partial(optim.SGD, weight_decay=0.1), 'Adam': optim.Adam,
              'AdamW': partial(optim.AdamW, weight_decay=0.1)}
OPTIMIZERS.update({f'{k} fused': partial(v, fused=True) for k, v in list(OPTIMIZERS.items())})
OPTIMIZERS['from scratch, momentum'] = ScratchMomentum

@pytest.mark.parametrize('name', OPTIMIZERS)
def test_a_skipped_step_leaves_weights_and_optimizer_state_exactly_as_before(name):
    def fit(guard, bad=3):
        snap = Snapshot(bad)
        learn = TrainLearner(make_model(), make_dls(n_train=40), F.mse_loss, lr=0.05, opt_func=OPTIMIZERS[name],
                             cbs=[NaNAt(bad), snap, MetricsCB()] + ([NonFiniteGuardCB()] if guard else []))
        if guard:
            with pytest.raises(FloatingPointError, match=f'batch {bad} .*weights hold no NaN'): learn.fit(1)
        else: learn.fit(1)
        grad_avgs = [p.grad_avg.clone() for p in learn.model.parameters()] if hasattr(learn.opt, 'mom') else []
        return snap, learn, grad_avgs
    snap, learn, _ = fit(guard=True)
    assert same(snap.before, snap.after)
    if name.startswith('from scratch'): assert snap.before[1][0]['i'] == 3 and 'grad_avg' in snap.before[1][1][0]
    elif 'momentum' in name or 'Adam' in name: assert len(snap.before[1]) == 2   # the state existed, and held still
    # The check can fail: without the guard the same batch changes them.
    snap, _, _ = fit(guard=False)
    assert not same(snap.before, snap.after)
    # A from-scratch optimizer keeps its state on the parameters: held too (it is read once per batch, see the notebook).
    if name.startswith('from scratch'):
        snap, learn, avgs = fit(guard=True, bad=0)   # the very first step skipped: no buffer made from NaN
        assert learn.opt.i == 9 and all(torch.isfinite(a).all() for a in avgs)

def test_the_first_step_skipped_creates_no_state_from_nan():
    "The first step creates the optimizer's state (a fused SGD's momentum buffer uninitialised): the guard reads, once, and skips it."
    for opt_func in (partial(optim.SGD, momentum=0.9, fused=True), optim.Adam):
        model = make_model()
        learn = TrainLearner(model, make_dls(n_train=40), F.mse_loss, lr=0.05, opt_func=opt_func,
                             cbs=[NaNAt(0), NonFiniteGuardCB()])
        with pytest.raises(FloatingPointError, match=r'batch 0 \(1 of'): learn.fit(1)
        assert all(torch.isfinite(v).all() for st in learn.opt.state.values() for v in st.values())
        # Its state is that of an optimizer that never saw batch 0: the same weights as a fit that skipped it.
        class Skip(Callback):
            def after_loss(self, learn):
                if learn.training and learn.iter == 0: raise CancelBatchException()
        ref = make_model()
        TrainLearner(ref, make_dls(n_train=40), F.mse_loss, lr=0.05, opt_func=opt_func, cbs=Skip()).fit(1, valid=False)
        for p, q in zip(model.parameters(), ref.parameters()): assert torch.equal(p, q)

def test_the_guard_puts_nothing_on_the_optimizer_between_steps():
    "What the guard hands a fused optimizer for one step (`found_inf`) is taken back, also when a batch is cancelled after backward."
    class CancelAfterBackward(Callback):
        order = 5
        def after_backward(self, learn):
            if learn.iter == 1: raise CancelBatchException()
    learn = TrainLearner(make_model(), make_dls(n_train=16), F.mse_loss, opt_func=partial(optim.SGD, fused=True),
                         cbs=[CancelAfterBackward(), NonFiniteGuardCB()])
    learn.fit(1)
    assert not hasattr(learn.opt, 'found_inf') and not hasattr(learn.opt, 'grad_scale')

def test_nan_in_validation_is_reported_not_raised(capsys):
    class NaNValid(Callback):
        def after_loss(self, learn):
            if not learn.training: learn.loss = learn.loss * float('nan')
    metrics = MetricsCB()
    TrainLearner(make_model(), make_dls(), F.mse_loss, cbs=[NaNValid(), metrics]).fit(1)
    assert math.isnan(metrics.history[-1]['loss']) and not math.isnan(metrics.history[0]['loss'])

def test_lr_finder_with_metrics_stops_quietly_on_nan():
    class NaNAt(Callback):
        order = LRFinderCB.order - 1
        def after_loss(self, learn):
            if learn.iter == 3: learn.loss = learn.loss * float('nan')
    finder = LRFinderCB(gamma=1.1, max_mult=1e9)
    TrainLearner(make_model(), make_dls(n_train=40), F.mse_loss, cbs=[NaNAt(), MetricsCB()]).fit(2, cbs=finder, lr=1e-4)
    assert len(finder.losses) == 4 and math.isnan(finder.losses[-1])


# --- callbacks under the lesson's smaller Learner (fit / epoch / batch events only) ----------------------------------

def classification_dls(n=64, bs=8): return make_tiny_dls(n, n, bs, n_classes=2)

def test_every_callback_works_under_the_lesson_learner(capsys):
    def run(make):
        torch.manual_seed(0)
        model = nn.Linear(3, 2)
        metrics, rec = MetricsCB(MulticlassAccuracy()), RecorderCB(lr=lambda cb: cb.pg['lr'])
        sched = BatchSchedCB(partial(lr_scheduler.OneCycleLR, max_lr=0.5, total_steps=16))
        make(model, [TrainCB(), DeviceCB('cpu'), metrics, ProgressCB(plot=True), sched, rec]).fit(2)
        return metrics.history, rec.recs['lr'], [p.detach() for p in model.parameters()], capsys.readouterr().out
    ours = run(lambda m, cbs: Learner(m, classification_dls(), F.cross_entropy, 0.5, cbs))
    lesson = run(lambda m, cbs: LessonLearner(m, classification_dls(), F.cross_entropy, 0.5, cbs))
    assert ours[0] == lesson[0] and len(ours[0]) == 4 and ours[0][-1]['MulticlassAccuracy'] > 0.8
    assert ours[1] == lesson[1] and len(ours[1]) == 16
    for a, b in zip(ours[2], lesson[2]): assert torch.equal(a, b)
    assert ours[3] == lesson[3] and ours[3].splitlines()[0].split() == ['MulticlassAccuracy', 'loss', 'epoch', 'train']

def test_nan_guard_and_lr_finder_under_the_lesson_learner():
    "Without an `after_backward` event the guard can only see the loss after the step: it says so, and checks the weights."
    class NaNAfter(Callback):
        order = -5
        def after_batch(self, learn):
            if learn.training and learn.iter == 2: learn.loss = learn.loss * float('nan')
    learn = LessonLearner(make_model(), make_dls(n_train=40), F.mse_loss, 0.01, [TrainCB(), NaNAfter(), NonFiniteGuardCB()])
    with pytest.raises(FloatingPointError, match='batch 2 .*no `after_backward`.*weights hold no NaN'): learn.fit(1)
    class NaNLoss(Callback):   # after `TrainCB.get_loss`: the NaN reaches backward and the step
        order = 1
        def get_loss(self, learn):
            if learn.training and learn.iter == 2: learn.loss = learn.loss * float('nan')
    learn = LessonLearner(make_model(), make_dls(n_train=40), F.mse_loss, 0.01, [TrainCB(), NaNLoss(), NonFiniteGuardCB()])
    with pytest.raises(FloatingPointError, match='batch 2 .*no `after_backward`.*weights hold NaN or infinity'): learn.fit(1)
    finder = LRFinderCB(gamma=2)
    LessonLearner(make_model(), make_dls(n_train=800, bs=8), F.mse_loss, 1e-5, [TrainCB(), finder]).fit(5)
    assert finder.losses[-1] > 3 * min(finder.losses) and finder.lrs[1] == pytest.approx(2e-5)


# --- callbacks that change during a fit, and the metrics' public path -------------------------------------------------

def test_callback_added_during_a_fit_runs_from_the_next_event():
    rec = EventRecorder()
    class Bring(Callback):
        def before_fit(self, learn): learn.cbs.append(rec)
    learn, everything = record_fit(EventRecorder())
    learn = Learner(make_model(), make_dls(), F.mse_loss, lr=0.01, cbs=[TrainCB(), Bring()])
    learn.fit(1)
    assert rec.events == everything[1:]   # all but the `before_fit` it was added in

def test_callback_removed_during_a_fit_stops_at_the_next_event():
    rec = EventRecorder()
    class Drop(Callback):
        def after_epoch(self, learn):
            if learn.training and rec in learn.cbs: learn.cbs.remove(rec)
    learn = Learner(make_model(), make_dls(), F.mse_loss, lr=0.01, cbs=[TrainCB(), Drop(), rec])
    learn.fit(2)
    assert rec.events[-3:] == ['after_batch', 'cleanup_batch', 'after_epoch'] and rec.events.count('before_epoch') == 1

def test_metrics_history_and_log_to(capsys):
    metrics = MetricsCB(acc=MulticlassAccuracy())
    learn = TrainLearner(nn.Linear(3, 2), classification_dls(), F.cross_entropy, lr=0.5, cbs=[metrics])
    learn.fit(1)
    printed = capsys.readouterr().out.splitlines()
    assert [(r['epoch'], r['train']) for r in metrics.history] == [(0, 'train'), (0, 'eval')]
    assert printed[1] == str({'acc': f"{metrics.history[1]['acc']:.3f}", 'loss': f"{metrics.history[1]['loss']:.3f}",
                              'epoch': 0, 'train': 'eval'})
    rows = []
    metrics.log_to(rows.append, replace=False)
    learn.fit(1)
    assert rows == metrics.history[2:] and len(capsys.readouterr().out.splitlines()) == 2   # printed and sent
    metrics.log_to(rows.append)
    learn.fit(1)
    assert rows == metrics.history[2:] and capsys.readouterr().out == ''                    # only sent
    # The valid row's numbers are those of the trained model, computed directly.
    x, y = learn.dls.valid.dataset.tensors
    with torch.no_grad(): preds = learn.model(x)
    assert rows[-1]['acc'] == pytest.approx((preds.argmax(1) == y).float().mean().item())
    assert rows[-1]['loss'] == pytest.approx(F.cross_entropy(preds, y).item(), rel=1e-5)

def test_progress_table_sits_beside_other_loggers(capsys):
    metrics, rows = MetricsCB(), []
    metrics.log_to(rows.append, replace=False)
    TrainLearner(make_model(), make_dls(), F.mse_loss, cbs=[metrics, ProgressCB()]).fit(1)
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ['loss', 'epoch', 'train'] and len(out) == 3   # a table, not the printed dicts
    assert len(rows) == 2


# --- no wait for the device per batch; the same numbers as before -------------------------------------------------

READS = ('item', '__bool__', 'tolist', 'cpu', 'numpy')   # each makes the host wait for the device's value

def count_reads(monkeypatch, fit):
    "How many times `fit()` asks a tensor for its value, by method."
    counts = dict.fromkeys(READS, 0)
    for nm in READS:
        def counted(self, *args, _nm=nm, _f=getattr(torch.Tensor, nm), **kwargs):
            counts[_nm] += 1
            return _f(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, nm, counted)
    try: fit()
    finally: monkeypatch.undo()
    return counts

def test_device_reads_are_a_fixed_number_per_pass_not_per_batch(monkeypatch, tmp_path, capsys):
    from miniai.checkpoint import CheckpointCB
    def fit(n_train, epochs=2):
        torch.manual_seed(0)
        dls = make_tiny_dls(n_train, 16, 4, n_classes=3)
        cbs = [DeviceCB('cpu'), MetricsCB(accuracy=MulticlassAccuracy()), ProgressCB(plot=True, bars=True),
               CheckpointCB(tmp_path/str(n_train), monitor='accuracy')]
        return lambda: TrainLearner(nn.Linear(3, 3), dls, F.cross_entropy, lr=0.1, cbs=cbs).fit(epochs)
    few, many = count_reads(monkeypatch, fit(8)), count_reads(monkeypatch, fit(80))   # 2 and 20 training batches a pass
    assert few == many, (few, many)                     # nothing per batch
    assert sum(few.values()) <= 8 * 4, few              # a few per pass: 2 epochs of a training and a validation pass
    # The check can fail: a callback that reads the loss every batch is seen.
    class ReadsLoss(Callback):
        def after_batch(self, learn): learn.loss.item()
    counts = count_reads(monkeypatch, lambda: TrainLearner(make_model(), make_dls(n_train=40), F.mse_loss, cbs=[ReadsLoss(), MetricsCB()]).fit(1))
    assert counts['item'] >= 11

def plain_metrics(model, dl):
    "Accuracy and mean loss over `dl`, computed directly."
    with torch.no_grad():
        preds = torch.cat([model(xb) for xb, _ in dl]); targs = torch.cat([yb for _, yb in dl])
    return (preds.argmax(1) == targs).float().mean().item(), F.cross_entropy(preds, targs).item()

@pytest.mark.parametrize('max_kept', [2**22, 7])   # the whole pass at once, or nearly every batch
def test_metrics_are_those_of_a_plain_computation(max_kept):
    dls = make_tiny_dls(60, 30, 8, n_classes=3)   # last batches smaller: 4 and 6 items
    torch.manual_seed(0)
    metrics = MetricsCB(accuracy=MulticlassAccuracy())
    metrics.max_kept = max_kept
    class Before(Callback):   # the training pass's numbers are those of the weights each batch saw
        def before_epoch(self, learn): self.preds, self.targs = [], []
        def after_loss(self, learn):
            if learn.training: self.preds.append(learn.preds.detach()); self.targs.append(learn.batch[1])
    before = Before()
    learn = TrainLearner(nn.Linear(3, 3), dls, F.cross_entropy, lr=0.5, cbs=[metrics, before])
    learn.fit(1, valid=False)
    p, t = torch.cat(before.preds), torch.cat(before.targs)
    assert metrics.history[-1]['accuracy'] == (p.argmax(1) == t).float().mean().item()
    assert metrics.history[-1]['loss'] == pytest.approx(F.cross_entropy(p, t).item(), rel=1e-6)
    learn.fit(1, train=False)
    acc, loss = plain_metrics(learn.model, dls.valid)
    assert metrics.history[-1]['accuracy'] == acc and metrics.history[-1]['loss'] == pytest.approx(loss, rel=1e-6)
    assert metrics.metrics['accuracy'].compute().item() == acc and metrics.loss.compute().item() == pytest.approx(loss, rel=1e-6)


# --- a learner that never sets `learn.training` ----------------------------------------------------------------------

class ModeOnlyLearner(LessonLearner):
    "The lesson's Learner as the course first writes it: it sets only the model's mode, never `learn.training`."
    def fit(self, n_epochs):
        self.epochs, self.opt = range(n_epochs), self.opt_func(self.model.parameters(), self.lr)
        self.callback('before_fit')
        for self.epoch in self.epochs:
            for train in (True, False):
                self.model.train(train)
                self.dl = self.dls.train if train else self.dls.valid
                self.callback('before_epoch')
                with torch.set_grad_enabled(train):
                    for self.iter, self.batch in enumerate(self.dl):
                        self.callback('before_batch')
                        self.predict(); self.get_loss()
                        if train: self.backward(); self.step(); self.zero_grad()
                        self.callback('after_batch')
                self.callback('after_epoch')
        self.callback('after_fit')
        self.callback('cleanup_fit')

def test_metrics_and_progress_under_a_learner_without_training(capsys):
    def run(make):
        torch.manual_seed(0)
        metrics, progress = MetricsCB(MulticlassAccuracy()), ProgressCB(plot=True)
        learn = make(nn.Linear(3, 2), [TrainCB(), metrics, progress])
        learn.fit(2)
        return metrics.history, len(progress.train_losses), capsys.readouterr().out
    ours = run(lambda m, cbs: Learner(m, classification_dls(), F.cross_entropy, 0.5, cbs))
    mode_only = run(lambda m, cbs: ModeOnlyLearner(m, classification_dls(), F.cross_entropy, 0.5, cbs))
    assert not hasattr(ModeOnlyLearner, 'training')
    assert ours == mode_only and [r['train'] for r in ours[0]] == ['train', 'eval'] * 2 and ours[1] == 16


# --- one table per fit ------------------------------------------------------------------------------------------------

def test_each_fit_prints_each_row_once(capsys):
    metrics, rows = MetricsCB(), []
    metrics.log_to(rows.append, replace=False)
    learn = TrainLearner(make_model(), make_dls(), F.mse_loss, cbs=[metrics])
    for i in range(3):
        learn.fit(1, cbs=ProgressCB())   # a fresh progress table each time
        out = capsys.readouterr().out.splitlines()
        assert len(out) == 3 and out[0].split() == ['loss', 'epoch', 'train'], out   # a header and two rows, once
    assert metrics.loggers == [print_row, rows.append] and len(rows) == 6
    learn.fit(1)                                  # without a ProgressCB: plain printing again
    assert len(capsys.readouterr().out.splitlines()) == 2


# --- save, load and get_preds come with miniai.checkpoint -------------------------------------------------------------

def test_save_without_checkpoint_says_which_import_adds_it():
    script = textwrap.dedent('''
        import sys
        from torch import nn
        from miniai.learner import TrainLearner
        learn = TrainLearner(nn.Linear(2, 1))
        for nm, args in (('save', ('x.pt',)), ('load', ('x.pt',)), ('get_preds', ())):
            try: getattr(learn, nm)(*args)
            except AttributeError as e: print(e)
        print('miniai.checkpoint' in sys.modules)
    ''')
    res = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=120)
    lines = res.stdout.splitlines()
    assert res.returncode == 0 and len(lines) == 4, res.stderr
    for nm, line in zip(('save', 'load', 'get_preds'), lines):
        assert f'Learner.{nm}' in line and 'from miniai.checkpoint import *' in line and 'from miniai.all import *' in line
    assert lines[-1] == 'False'
    from miniai.checkpoint import CheckpointCB   # and once it is imported, the real methods are there
    assert 'comes with' not in (TrainLearner.save.__doc__ or '')


# --- optimizers written from scratch ---

@pytest.mark.parametrize('opt_func', [ScratchSGD, BareOpt])
def test_an_optimizer_with_only_step_and_zero_grad_trains_with_every_callback(opt_func, capsys):
    torch.manual_seed(0)
    model, ref = make_model(), make_model()
    rec = RecorderCB(loss=lambda cb: cb.learn.loss.item())
    learn = TrainLearner(model, make_dls(n_train=16), F.mse_loss, lr=0.05, opt_func=opt_func,
                         cbs=[DeviceCB('cpu'), MetricsCB(), ProgressCB(plot=True, bars=False), rec])
    learn.fit(2)
    assert not hasattr(learn.opt, 'param_groups')
    assert [r['train'] for r in learn.metrics.history] == ['train', 'eval'] * 2
    assert len(rec.recs['loss']) == 8
    # The same fit with `torch.optim.SGD` gives the same weights: the from-scratch optimizer really trained.
    TrainLearner(ref, make_dls(n_train=16), F.mse_loss, lr=0.05, cbs=[MetricsCB()]).fit(2)
    for p, q in zip(model.parameters(), ref.parameters()): torch.testing.assert_close(p, q)

def test_an_optimizer_without_param_groups_is_refused_clearly_where_it_must_be():
    "Schedulers, the LR finder and `RecorderCB.pg` set or read the rate in `param_groups`: each says so, before training."
    def fit_with(cb, **kwargs):
        learn = TrainLearner(make_model(), make_dls(), F.mse_loss, opt_func=ScratchSGD, cbs=cb)
        learn.fit(1, **kwargs)
    sched = partial(lr_scheduler.StepLR, step_size=1)
    for cb in (BatchSchedCB(sched), EpochSchedCB(sched)):
        with pytest.raises(TypeError, match=f"{type(cb).__name__} .*param_groups.*ScratchSGD"): fit_with(cb)
    with pytest.raises(TypeError, match="LRFinderCB .*param_groups.*ScratchSGD"): fit_with(LRFinderCB())
    with pytest.raises(TypeError, match="RecorderCB.pg .*param_groups"): fit_with(RecorderCB(lr=lambda cb: cb.pg['lr']))
    learn = TrainLearner(make_model(), make_dls(), F.mse_loss, opt_func=ScratchSGD)
    with pytest.raises(TypeError, match="LRFinderCB .*param_groups"): learn.lr_find()


# --- devices: no float64 off the CPU (Apple's MPS has none), and DeviceCB really moves ---------------------------------

class DtypesOnDevices(TorchDispatchMode):
    "Record the (device type, dtype) of every tensor any PyTorch operation makes while active."
    def __init__(self): super().__init__(); self.seen = set()
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.seen.update((t.device.type, t.dtype) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))
        return out

class MeanTarget(Mean):
    "A torcheval metric with float64 states (those of `Mean`) that takes predictions and targets."
    def update(self, preds, targs): return super().update(targs.float())

def fake_device_reads(monkeypatch):
    "Let the `meta` device stand in for a GPU: reading a meta tensor's value gives zeros instead of an error."
    for nm in ('item', 'cpu', 'tolist', '__bool__'):
        f = getattr(torch.Tensor, nm)
        def read(t, *args, _nm=nm, _f=f, **kwargs):
            if t.device.type != 'meta': return _f(t, *args, **kwargs)
            zeros = torch.zeros(t.shape, dtype=t.dtype)
            return {'item': 0., 'cpu': zeros, 'tolist': zeros.tolist(), '__bool__': False}[_nm]
        monkeypatch.setattr(torch.Tensor, nm, read)

def test_no_float64_tensor_is_put_on_a_device(monkeypatch, capsys):
    fake_device_reads(monkeypatch)
    metrics, mode = MetricsCB(MulticlassAccuracy(), mean=MeanTarget()), DtypesOnDevices()
    with mode:
        learn = TrainLearner(nn.Linear(3, 2), classification_dls(16, 4), F.cross_entropy, lr=0.1,
                             cbs=[DeviceCB('meta'), NonFiniteGuardCB(), metrics, ProgressCB(plot=True, bars=False)])
        learn.fit(2)
    on_meta = {dtype for dev, dtype in mode.seen if dev == 'meta'}
    assert torch.float32 in on_meta and torch.float64 not in on_meta, on_meta   # the fit ran there, float64 never did
    assert torch.float64 in {dtype for dev, dtype in mode.seen if dev == 'cpu'}  # the loss's mean and `Mean`'s states: on the CPU
    assert len(metrics.history) == 4 and learn.model.weight.device.type == 'meta'
    assert metrics.loss.weighted_sum.device.type == 'cpu' and metrics.metrics['mean'].weighted_sum.device.type == 'cpu'
    assert metrics.metrics['MulticlassAccuracy'].num_correct.device.type == 'meta'   # float32 states go where the predictions are

def test_device_cb_moves_the_model_and_every_batch():
    seen = []
    class Where(Callback):
        def before_batch(self, learn): seen.append(learn.batch[0].device.type)   # after DeviceCB's (order -10)
        def after_predict(self, learn): seen.append(learn.preds.device.type); raise CancelBatchException()
    learn = TrainLearner(make_model(), make_dls(), F.mse_loss, cbs=[Where(), DeviceCB('meta')])
    learn.fit(1)
    assert seen == ['meta'] * 6 and next(learn.model.parameters()).device.type == 'meta'
    assert learn.dls.train.dataset.tensors[0].device.type == 'cpu'   # the data itself stays where it was
    # Lists, nested tuples and dicts of tensors move too; other things pass through.
    cb = DeviceCB('meta'); cb.before_fit(SimpleNamespace(model=None))
    moved = cb._move([torch.zeros(2), (torch.ones(1), 'x'), {'a': torch.ones(1)}])
    assert [moved[0].device.type, moved[1][0].device.type, moved[1][1], moved[2]['a'].device.type] == ['meta', 'meta', 'x', 'meta']


# --- the learning rate as it is; the finder's own rates; an empty pass; tuples; the course's ways ---------------------

def test_recorder_reads_the_live_learning_rate_after_the_optimizer_state_is_loaded():
    class Load(Callback):   # what `learn.load` does: replace the optimizer's state, and with it the `param_groups` dicts
        order = RecorderCB.order + 1
        def before_fit(self, learn):
            opt = optim.SGD(learn.model.parameters(), lr=0.123)
            learn.opt.load_state_dict(opt.state_dict())
    rec = RecorderCB(lr=lambda cb: cb.pg['lr'])
    TrainLearner(make_model(), make_dls(), F.mse_loss, lr=0.01, cbs=[rec, Load()]).fit(1)
    assert rec.recs['lr'] == [0.123, 0.123]

def test_lr_find_sets_the_schedulers_aside_and_gives_them_back():
    sched = BatchSchedCB(partial(lr_scheduler.OneCycleLR, max_lr=0.1, total_steps=100))
    learn = TrainLearner(make_model(), make_dls(n_train=800, bs=8), F.mse_loss, cbs=[MetricsCB(), sched, ProgressCB()])
    finder = LRFinderCB(gamma=1.5)
    # Given with a scheduler, the finder refuses: both would set the rate.
    with pytest.raises(ValueError, match='LRFinderCB sets the learning rate itself.*BatchSchedCB.*lr_find'): learn.fit(1, cbs=finder)
    learn.lr_find(gamma=1.5, start_lr=1e-5, max_mult=1e9, max_epochs=1)
    assert learn.cbs[1] is sched and len(learn.cbs) == 3   # given back, in its place
    finders = []
    class Keep(Callback):
        def before_fit(self, learn): finders.extend(cb for cb in learn.cbs if isinstance(cb, LRFinderCB))
    learn.cbs.append(Keep())
    learn.lr_find(gamma=1.5, start_lr=1e-5, max_mult=1e9, max_epochs=1)   # on until the loss is NaN
    lrs = finders[0].lrs
    assert lrs[0] == pytest.approx(1e-5) and lrs[1] == pytest.approx(1.5e-5) and len(lrs) > 5   # its own rates, from start_lr

def test_an_empty_validation_pass_is_not_a_perfect_score(capsys):
    class NoBatches:   # an iterable without a length that yields nothing (the fit's checks can't tell in advance)
        def __iter__(self): return iter(())
    dls = classification_dls()
    dls.valid = NoBatches()
    metrics = MetricsCB(accuracy=MulticlassAccuracy())
    TrainLearner(nn.Linear(3, 2), dls, F.cross_entropy, cbs=[metrics]).fit(1)
    train, valid = metrics.history
    assert math.isfinite(train['loss']) and math.isnan(valid['loss'])
    assert "'loss': 'nan'" in capsys.readouterr().out.splitlines()[1]

def test_metrics_on_a_model_that_returns_a_tuple():
    "The course's VAE returns (reconstruction, mu, logvar): the loss takes the tuple, the metrics the first element."
    class TupleModel(nn.Module):
        def __init__(self): super().__init__(); torch.manual_seed(0); self.lin = nn.Linear(3, 2)
        def forward(self, x): out = self.lin(x); return out, out.mean()
    def loss(preds, y): return F.cross_entropy(preds[0], y) + 0 * preds[1]
    for metrics in (MetricsCB(), MetricsCB(accuracy=MulticlassAccuracy())):
        learn = TrainLearner(TupleModel(), classification_dls(), loss, lr=0.5, cbs=[metrics])
        with contextlib.redirect_stdout(io.StringIO()): learn.fit(1)
        assert [r['train'] for r in metrics.history] == ['train', 'eval']
    acc, loss_value = plain_metrics(lambda x: learn.model(x)[0], learn.dls.valid)
    assert metrics.history[-1]['accuracy'] == acc and metrics.history[-1]['loss'] == pytest.approx(loss_value, rel=1e-6)

def test_metrics_take_the_target_after_n_inp_inputs():
    "`TrainCB(n_inp=2)`: the model takes two inputs, the target is `batch[2]`."
    class TwoInputs(nn.Module):
        def __init__(self): super().__init__(); torch.manual_seed(0); self.lin = nn.Linear(3, 2)
        def forward(self, x, scale): return self.lin(x) * scale
    x, y = classification_dls().train.dataset.tensors
    ds = TensorDataset(x, torch.ones(len(x), 1), y)
    dls = DataLoaders(DataLoader(ds, 8), DataLoader(ds, 8))
    metrics = MetricsCB(accuracy=MulticlassAccuracy())
    learn = Learner(TwoInputs(), dls, F.cross_entropy, lr=0.5, cbs=[TrainCB(n_inp=2), metrics])
    with contextlib.redirect_stdout(io.StringIO()): learn.fit(1)
    acc, _ = plain_metrics(lambda x: learn.model(x, torch.ones(len(x), 1)), DataLoader(TensorDataset(x, y), 8))
    assert metrics.history[-1]['accuracy'] == acc

def test_the_course_ways_set_log_and_read_training_before_a_fit():
    learn = TrainLearner(make_model(), make_dls(), F.mse_loss, cbs=[MetricsCB()])
    assert learn.training is True   # the model's mode until the first pass (a fresh module trains)
    rows = []
    class CourseProgress(Callback):   # what the course's ProgressCB does with the metrics' logger
        order = MetricsCB.order + 1
        def before_fit(self, learn): learn.metrics._log = rows.append
    learn.cbs.append(CourseProgress())
    learn.fit(1)
    assert [r['train'] for r in rows] == ['train', 'eval'] and all(isinstance(r['loss'], str) for r in rows)   # as text, as the course's
    assert rows[1]['loss'] == f"{learn.metrics.history[1]['loss']:.3f}"
    learn.metrics._log({'x': 1})   # and calling it logs a row
    assert rows[-1] == {'x': 1}


# --- memory: no copy for one chunk; no tensor per batch kept for a whole fit -------------------------------------------

def test_metrics_copy_only_to_join_several_chunks(monkeypatch):
    joins, cat = [], torch.cat
    monkeypatch.setattr(torch, 'cat', lambda ts, *a, **k: joins.append(len(ts)) or cat(ts, *a, **k))
    metrics = MetricsCB(accuracy=MulticlassAccuracy())
    learn = TrainLearner(nn.Linear(3, 2), classification_dls(), F.cross_entropy, cbs=[metrics])
    metrics.max_kept = 1   # every batch's predictions go in alone: nothing to join
    with contextlib.redirect_stdout(io.StringIO()): learn.fit(1)
    assert joins == []
    metrics.max_kept = 2**22   # the pass's 8 batches joined once
    with contextlib.redirect_stdout(io.StringIO()): learn.fit(1)
    assert joins == [8, 8, 8, 8]   # predictions and targets, of the training and the validation pass

def test_progress_plot_keeps_one_tensor_per_256_batches():
    progress, counts = ProgressCB(plot=True, bars=False), []
    class Count(Callback):
        order = ProgressCB.order + 1
        def after_batch(self, learn): counts.append(len(progress.new_losses) + len(progress.loss_chunks))
    with contextlib.redirect_stdout(io.StringIO()):
        TrainLearner(make_model(), make_dls(n_train=600 * 2, bs=2), F.mse_loss, cbs=[MetricsCB(), progress, Count()]).fit(1)
    assert max(counts) <= 256 + 2 and counts[-1] == 600 - 512 + 2   # 600 losses: two stacked chunks and 88 single ones
    assert len(progress.train_losses) == 600 and progress.valid_at == [600]
