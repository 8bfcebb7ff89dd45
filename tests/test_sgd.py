"`miniai.sgd`: the from-scratch optimizers step for step against `torch.optim`, EWMA debiasing, `HasLearnCB`, `RecorderCB`, the re-exported callbacks."
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.optim import lr_scheduler

import miniai.learner
from miniai.learner import TrainLearner, SingleBatchCB, Callback
from miniai.sgd import SGD, Momentum, RMSProp, Adam, AdamW, ewma, HasLearnCB
from conftest import make_tiny_dls


def weights_after(make_opt, n_steps=6, decay_by_hand=0., skip_every_other=False):
    "Float64 weights after `n_steps` of `make_opt(params)` on fixed random gradients; optionally decay by hand first, or give the second parameter no gradient in every other step."
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(4, 3, generator=g, dtype=torch.float64).requires_grad_(),
              torch.randn(5, generator=g, dtype=torch.float64).requires_grad_()]
    opt = make_opt(params)
    for i in range(n_steps):
        for j, p in enumerate(params):
            p.grad = None if (skip_every_other and j == 1 and i % 2 == 0) else torch.randn(p.shape, generator=g, dtype=torch.float64)
        if decay_by_hand:
            with torch.no_grad():
                for p in params:
                    if p.grad is not None: p.mul_(1 - decay_by_hand)   # ours decays only what it steps
        opt.step()
        opt.zero_grad()
    return [p.detach() for p in params]

def assert_same(a, b):
    for pa, pb in zip(a, b, strict=True): torch.testing.assert_close(pa, pb, rtol=1e-10, atol=1e-12)

def assert_differ(a, b):
    assert max((pa - pb).abs().max().item() for pa, pb in zip(a, b)) > 1e-4


LR, WD, MOM = 0.05, 0.1, 0.8

# (ours, torch's, weight decay done by hand beside torch's): with wd=0 and wd=WD
CASES = {
    'SGD':        (partial(SGD, lr=LR),                    partial(optim.SGD, lr=LR), 0.),
    'SGD wd':     (partial(SGD, lr=LR, wd=WD),             partial(optim.SGD, lr=LR, weight_decay=WD), 0.),   # decay == L2 for SGD
    'Momentum':   (partial(Momentum, lr=LR, mom=MOM),       partial(optim.SGD, lr=LR*(1-MOM), momentum=MOM), 0.),
    'Momentum wd':(partial(Momentum, lr=LR, mom=MOM, wd=WD),partial(optim.SGD, lr=LR*(1-MOM), momentum=MOM), LR*WD),
    'RMSProp':    (partial(RMSProp, lr=LR, sqr_mom=0.9),    partial(optim.RMSprop, lr=LR, alpha=0.9, eps=1e-5), 0.),
    'RMSProp wd': (partial(RMSProp, lr=LR, sqr_mom=0.9, wd=WD), partial(optim.RMSprop, lr=LR, alpha=0.9, eps=1e-5), LR*WD),
    'Adam':       (partial(Adam, lr=LR),                   partial(optim.Adam, lr=LR, betas=(0.9, 0.99), eps=1e-5), 0.),
    'Adam wd':    (partial(Adam, lr=LR, wd=WD),            partial(optim.AdamW, lr=LR, betas=(0.9, 0.99), eps=1e-5, weight_decay=WD), 0.),
    'AdamW':      (AdamW,                                  optim.AdamW, 0.),   # the defaults, wd 0.01 included
    'AdamW no wd':(partial(AdamW, lr=LR, wd=0.),           partial(optim.AdamW, lr=LR, weight_decay=0.), 0.),
}

@pytest.mark.parametrize('name', CASES)
def test_same_steps_as_torch(name):
    ours, theirs, by_hand = CASES[name]
    assert_same(weights_after(ours), weights_after(theirs, decay_by_hand=by_hand))
    # a parameter without a gradient is skipped and its step count stands still, as in torch.optim
    assert_same(weights_after(ours, skip_every_other=True), weights_after(theirs, decay_by_hand=by_hand, skip_every_other=True))

def test_the_comparison_can_fail():
    "The checks above would catch an optimizer that is off: decay is not L2 for Adam, momentum needs its lr mapped, wd matters."
    assert_differ(weights_after(partial(Adam, lr=LR, wd=WD)),
                  weights_after(partial(optim.Adam, lr=LR, betas=(0.9, 0.99), eps=1e-5, weight_decay=WD)))
    assert_differ(weights_after(partial(Momentum, lr=LR, mom=MOM)), weights_after(partial(optim.SGD, lr=LR, momentum=MOM)))
    for cls in (SGD, Momentum, RMSProp, Adam):
        assert_differ(weights_after(partial(cls, lr=LR, wd=WD)), weights_after(partial(cls, lr=LR)))

def test_momentum_state_is_torchs_buffer_times_one_minus_mom():
    w1, w2 = torch.randn(3, requires_grad=True), torch.randn(3, requires_grad=True)
    ours, theirs = Momentum([w1], lr=LR, mom=MOM), optim.SGD([w2], lr=LR*(1-MOM), momentum=MOM)
    for _ in range(3):
        g = torch.randn(3)
        w1.grad, w2.grad = g.clone(), g.clone()
        ours.step(); theirs.step()
    torch.testing.assert_close(ours.state[w1]['grad_avg'], (1-MOM) * theirs.state[w2]['momentum_buffer'])
    assert ours.state[w1]['step'] == 3 and ours.i == 3

def test_adam_first_step_is_lr_times_sign():
    "Debiasing: the first step is `lr` against the sign of the gradient, whatever its size."
    w = torch.zeros(3, requires_grad=True)
    opt = Adam([w], lr=0.01, eps=0.)
    w.grad = torch.tensor([1e3, -2., 1e-3])
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([-0.01, 0.01, -0.01]))

def test_zero_grad_drops_gradients():
    w = torch.zeros(2, requires_grad=True)
    opt = SGD([w], lr=0.1)
    w.sum().backward()
    opt.zero_grad()
    assert w.grad is None

def test_ewma_and_its_debiasing():
    torch.testing.assert_close(ewma([2., 2., 2.], 0.9), torch.tensor([0.2, 0.38, 0.542]))
    torch.testing.assert_close(ewma([2.] * 30, 0.9, debias=True), torch.full((30,), 2.))
    xs = torch.randn(25)
    for beta in (0.5, 0.9, 0.99):
        weights = beta ** torch.arange(24, -1, -1.)
        torch.testing.assert_close(ewma(xs, beta, debias=True)[-1], (weights * xs).sum() / weights.sum(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ewma(xs, beta) / ewma(xs, beta, debias=True), 1 - beta ** torch.arange(1., 26.), rtol=1e-4, atol=1e-6)


def tiny_learner(opt_func=optim.SGD, lr=0.1, cbs=()):
    torch.manual_seed(0)
    return TrainLearner(nn.Linear(3, 1), make_tiny_dls(n_train=32, n_valid=8, bs=4), F.mse_loss, lr=lr, cbs=list(cbs), opt_func=opt_func)

@pytest.mark.parametrize('opt_func', [SGD, partial(Momentum, mom=0.5), partial(RMSProp, sqr_mom=0.9), Adam, AdamW])
def test_from_scratch_optimizers_train_through_the_learner(opt_func):
    learn = tiny_learner(opt_func, lr=0.05)
    before = [p.detach().clone() for p in learn.model.parameters()]
    learn.fit(2)
    assert not hasattr(learn.opt, 'param_groups')
    xs, ys = learn.dls.train.dataset.tensors
    loss_before = F.mse_loss(xs @ before[0].T + before[1], ys)
    assert F.mse_loss(learn.model(xs), ys) < 0.5 * loss_before


class SeesLearnCB(HasLearnCB):
    "Checks, in every batch, that `self.learn` is the learner running the fit."
    def before_fit(self, learn):
        super().before_fit(learn)
        self.seen = []
    def after_batch(self, learn): self.seen.append(self.learn is learn)

def test_has_learn_cb_holds_the_learner_only_during_the_fit():
    cb = SeesLearnCB()
    learn = tiny_learner(cbs=[cb])
    learn.fit(1)
    assert cb.seen == [True] * (8 + 2) and cb.learn is None          # 8 training and 2 validation batches
    cb = SeesLearnCB()
    learn.fit(1, cbs=[cb, SingleBatchCB()])                           # cancelled: after_fit is skipped
    assert cb.seen == [True] and cb.learn is None
    class Boom(Callback):
        def after_batch(self, learn): raise RuntimeError('boom')
    with pytest.raises(RuntimeError, match='boom'): learn.fit(1, cbs=[cb, Boom()])
    assert cb.learn is None

def test_recorder_records_training_batches_before_the_scheduler_steps():
    from miniai.sgd import RecorderCB, BatchSchedCB, EpochSchedCB
    rec = RecorderCB(lr=lambda cb: cb.pg['lr'], n=lambda cb: cb.learn.iter)
    sched = BatchSchedCB(partial(lr_scheduler.LambdaLR, lr_lambda=lambda step: 1 / (step + 1)))
    tiny_learner(lr=0.1, cbs=[sched, rec]).fit(2)                     # 2 epochs of 8 training batches
    assert rec.recs['n'] == list(range(8)) * 2                         # training batches only
    torch.testing.assert_close(torch.tensor(rec.recs['lr']), 0.1 / torch.arange(1., 17.), rtol=1e-6, atol=0)
    rec = RecorderCB(lr=lambda cb: cb.pg['lr'])
    tiny_learner(lr=0.1, cbs=[EpochSchedCB(partial(lr_scheduler.StepLR, step_size=1, gamma=0.5)), rec]).fit(3)
    assert rec.recs['lr'] == pytest.approx([0.1] * 8 + [0.05] * 8 + [0.025] * 8)

def test_scheduler_with_a_from_scratch_optimizer_says_what_it_needs():
    from miniai.sgd import BatchSchedCB
    learn = tiny_learner(SGD, cbs=[BatchSchedCB(partial(lr_scheduler.CosineAnnealingLR, T_max=4))])
    with pytest.raises(TypeError, match='param_groups'): learn.fit(1)

def test_reexports_are_the_learners_objects():
    from miniai.sgd import BaseSchedCB, BatchSchedCB, EpochSchedCB, HasLearnCB, RecorderCB
    import miniai.sgd
    for cls in (BaseSchedCB, BatchSchedCB, EpochSchedCB, RecorderCB):
        assert getattr(miniai.learner, cls.__name__) is cls
        assert cls.__name__ in miniai.sgd.__all__
    assert issubclass(HasLearnCB, miniai.learner.Callback)
    assert {'SGD', 'Momentum', 'RMSProp', 'Adam', 'AdamW', 'ewma', 'HasLearnCB'} <= set(miniai.sgd.__all__)

def test_a_subclass_in_the_courses_shape():
    "A course-style optimizer: subclass `SGD`, replace `opt_step(self, p)`; its memory in `self.state[p]`, its steps counted."
    class SignSGD(SGD):
        def opt_step(self, p):
            self.state[p]['last_sign'] = p.grad.sign()
            p.sub_(self.lr * p.grad.sign())
    w = torch.zeros(3, requires_grad=True)
    opt = SignSGD([w], lr=0.1, wd=0.5)
    for _ in range(2):
        w.grad = torch.tensor([3., -0.2, 0.])
        opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([-0.1*0.95 - 0.1, 0.1*0.95 + 0.1, 0.]))
    assert opt.state[w]['step'] == 2 and opt.i == 2
