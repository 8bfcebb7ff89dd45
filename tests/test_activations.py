"Hooks and activation statistics (miniai.activations): removal however a fit ends, histograms, seeds, bad use."
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import pytest, torch
import torch.nn.functional as F
from functools import partial
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from miniai.datasets import DataLoaders
from conftest import LessonLearner, make_tiny_dls
from miniai.learner import Callback, CancelFitException, CancelEpochException, TrainLearner, TrainCB
from miniai.activations import (set_seed, ListContainer, Hook, Hooks, HooksCallback, append_stats, get_hist, get_min,
                                ActivationStats)


def tiny_dls(n=64, bs=16, seed=0): return make_tiny_dls(n, n, bs, x_shape=(1, 8, 8), n_classes=3, shuffle=True, seed=seed)

def tiny_model():
    return nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.ReLU(), nn.Conv2d(4, 8, 3, 2, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))

def n_hooks(model): return sum(len(m._forward_hooks) for m in model.modules())

def record(hook, mod, inp, outp):
    hook.calls = getattr(hook, 'calls', 0) + 1

class RaiseAfter(Callback):
    order = 1
    def __init__(self, exc, n=1): self.exc, self.n = exc, n
    def after_batch(self, learn):
        if learn.iter + 1 >= self.n: raise self.exc


def test_set_seed_same_losses():
    def losses(seed):
        set_seed(seed)
        model, dls = tiny_model(), tiny_dls()
        res = []
        class Rec(Callback):
            def after_batch(self, learn):
                if learn.training: res.append(learn.loss.item())
        TrainLearner(model, dls, F.cross_entropy, lr=0.1, cbs=[Rec()]).fit(2)
        return res
    a, b, c = losses(3), losses(3), losses(4)
    assert a == b
    assert a != c

def test_set_seed_seeds_python_and_numpy():
    import random, numpy as np
    set_seed(5); r, n = random.random(), np.random.rand()
    set_seed(5); assert (random.random(), np.random.rand()) == (r, n)

def test_set_seed_deterministic_flag():
    set_seed(0, deterministic=True)
    assert torch.are_deterministic_algorithms_enabled()
    set_seed(0)
    assert not torch.are_deterministic_algorithms_enabled()

def test_set_seed_switches_deterministic_only_when_it_changes(monkeypatch):
    "The switch is called to turn the setting on or off (or clear warn_only), and skipped when it already holds."
    calls = []
    switch = torch.use_deterministic_algorithms
    monkeypatch.setattr(torch, 'use_deterministic_algorithms', lambda *a, **k: (calls.append(a), switch(*a, **k)))
    try:
        set_seed(0); set_seed(1)
        assert calls == [] and not torch.are_deterministic_algorithms_enabled()
        set_seed(0, deterministic=True); set_seed(1, deterministic=True)
        assert calls == [(True,)] and torch.are_deterministic_algorithms_enabled()
        set_seed(0)
        assert calls == [(True,), (False,)] and not torch.are_deterministic_algorithms_enabled()
        switch(True, warn_only=True)             # as before the change: set_seed(deterministic=True) leaves no warn_only
        set_seed(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()
    finally: switch(False)

def test_set_seed_does_not_import_the_compiler():
    "Seeding a process that never asked for deterministic algorithms doesn't pay for importing torch._dynamo."
    import subprocess, sys
    code = "import sys; from miniai.core import set_seed; set_seed(0); print('torch._dynamo' in sys.modules)"
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == 'False'

def test_hook_with_block_and_delete():
    lin = nn.Linear(2, 2)
    with Hook(lin, record) as h:
        lin(torch.zeros(1, 2)); lin(torch.zeros(1, 2))
        assert len(lin._forward_hooks) == 1
    assert len(lin._forward_hooks) == 0 and h.calls == 2
    h.remove()                                   # removing twice is fine
    h = Hook(lin, record); assert len(lin._forward_hooks) == 1
    del h
    assert len(lin._forward_hooks) == 0

def test_hook_removed_when_with_block_raises():
    lin = nn.Linear(2, 2)
    with pytest.raises(RuntimeError):
        with Hook(lin, record): lin(torch.zeros(1, 3))   # wrong shape
    assert len(lin._forward_hooks) == 0

def test_hooks_list():
    model = tiny_model()
    with Hooks(model, record) as hs:
        assert len(hs) == len(model) and n_hooks(model) == len(model)
        model(torch.zeros(2, 1, 8, 8))
        assert all(h.calls == 1 for h in hs)
    assert n_hooks(model) == 0
    hs = Hooks(model[:4], record)
    del hs[1:3]
    assert len(hs) == 2 and n_hooks(model) == 2 and len(model[1]._forward_hooks) == 0
    del hs
    assert n_hooks(model) == 0

def test_hooks_append_a_module_or_a_hook_and_remove_them():
    model = tiny_model()
    with Hooks(model[:1], record) as hs:
        hs.append(model[2])                                   # a module: hooked with the list's function
        hs.append(Hook(model[6], record))                     # a Hook: added as it is
        assert len(hs) == 3 and n_hooks(model) == 3
        assert [len(model[i]._forward_hooks) for i in (0, 2, 6)] == [1, 1, 1]
        model(torch.zeros(2, 1, 8, 8))
        assert [h.calls for h in hs] == [1, 1, 1]
        del hs[1]
        assert n_hooks(model) == 2 and len(model[2]._forward_hooks) == 0
    assert n_hooks(model) == 0                                # the with block removed the appended ones too
    lin = nn.Linear(3, 2)
    x = torch.randn(4, 3, requires_grad=True)
    grads = Hooks([], lambda hook, mod, gi, go: setattr(hook, 'seen', go[0].shape), backward=True)
    grads.append(lin)                                         # appended on the backward pass, as the list's hooks are
    assert len(lin._backward_hooks) == 1 and len(lin._forward_hooks) == 0
    lin(x).sum().backward()
    assert grads[0].seen == (4, 2)
    grads.remove()
    assert len(lin._backward_hooks) == 0

def test_list_container_append():
    lc = ListContainer('ab'); lc.append('c')
    assert list(lc) == ['a', 'b', 'c'] and lc[[False, False, True]] == ['c']

@pytest.mark.parametrize('stop', [None, CancelFitException(), CancelEpochException(), ValueError('boom')])
def test_hooks_callback_removes_hooks_however_fit_ends(stop):
    model = tiny_model()
    cb = HooksCallback(record, mod_filter=lambda m: isinstance(m, nn.ReLU))
    cbs = [cb] + ([RaiseAfter(stop, 2)] if stop is not None else [])
    learn = TrainLearner(model, tiny_dls(), F.cross_entropy, lr=0.1, cbs=cbs)
    if isinstance(stop, ValueError):
        with pytest.raises(ValueError, match='boom'): learn.fit(1)
    else: learn.fit(1)
    assert len(cb) == 2
    assert n_hooks(model) == 0
    assert all(h.calls >= 2 for h in cb)

def test_hooks_callback_removes_hooks_when_model_raises():
    model = tiny_model()
    bad = DataLoaders(DataLoader(TensorDataset(torch.zeros(8, 3, 8, 8), torch.zeros(8).long()), 4), None)
    cb = HooksCallback(record, mod_filter=lambda m: isinstance(m, nn.ReLU))
    with pytest.raises(RuntimeError): TrainLearner(model, bad, F.cross_entropy, cbs=[cb]).fit(1, valid=False)
    assert n_hooks(model) == 0

def test_hooks_callback_cleanup_when_fit_fails_before_hooking():
    class FailFirst(Callback):
        order = -100
        def before_fit(self, learn): raise KeyError('early')
    model = tiny_model()
    cb = HooksCallback(record)
    with pytest.raises(KeyError, match='early'):     # not an AttributeError from the cleanup
        TrainLearner(model, tiny_dls(), F.cross_entropy, cbs=[FailFirst(), cb]).fit(1)
    assert n_hooks(model) == 0

def test_hooks_callback_train_valid_flags_and_mods():
    counts = {}
    for on_train, on_valid in ((True, False), (False, True), (True, True)):
        model = tiny_model()
        cb = HooksCallback(record, on_train=on_train, on_valid=on_valid, mods=[model[0]])
        TrainLearner(model, tiny_dls(n=64, bs=16), F.cross_entropy, cbs=[cb]).fit(1)
        assert len(cb) == 1
        counts[(on_train, on_valid)] = getattr(list(cb)[0], 'calls', 0)
    assert counts == {(True, False): 4, (False, True): 4, (True, True): 8}

def test_hooks_callback_default_filter_hooks_every_module():
    model = tiny_model()
    cb = HooksCallback(record)
    TrainLearner(model, tiny_dls(), F.cross_entropy, cbs=[cb]).fit(1, valid=False)
    assert len(cb) == len(list(model.modules()))
    assert n_hooks(model) == 0

def test_append_stats_histogram_counts_everything():
    lin = nn.Linear(10, 50)
    x = torch.randn(32, 10)
    with Hook(lin, partial(append_stats, hist_range=(-50, 50))) as h: out = lin(x)
    hist = h.stats[2][0]
    assert hist.shape == (40,) and hist.sum() == out.numel()
    assert h.hist_range == (-50, 50)
    assert torch.allclose(h.stats[0][0], out.mean()) and torch.allclose(h.stats[1][0], out.std())
    assert all(t.device.type == 'cpu' and not t.requires_grad for s in h.stats for t in s)

def test_append_stats_default_range_and_bins():
    r = nn.ReLU()
    x = torch.tensor([-1., 0., 0.1, 0.3, 9.99, 20.])
    with Hook(r, append_stats) as h: r(x)
    hist = h.stats[2][0]
    assert hist.shape == (40,) and h.hist_range == (0, 10)
    assert hist[0] == 3 and hist[1] == 1 and hist[-1] == 2 and hist.sum() == 6   # 20 is beyond it: last bin
    with Hook(r, partial(append_stats, bins=10)) as h: r(x)
    assert h.stats[2][0].shape == (10,)

def test_append_stats_half_precision():
    r = nn.Identity()
    with Hook(r, append_stats) as h: r(torch.ones(4, dtype=torch.bfloat16))
    assert h.stats[2][0].dtype == torch.float32 and h.stats[2][0].sum() == 4

def test_get_hist_and_get_min():
    hk = type('H', (), {})()
    hk.stats = ([], [], [torch.arange(40.), torch.ones(40)])
    hk.hist_range = (0, 10)
    assert get_hist(hk).shape == (40, 2)
    assert torch.allclose(get_min(hk), torch.tensor([1/780, 2/40]))          # bins 0 and 1: below 0.5
    hk.hist_range = (-7, 7)
    assert torch.allclose(get_min(hk)[1], torch.tensor(4/40))                  # the middle four: -0.7 to 0.7
    assert torch.allclose(get_min(hk, near=0.3)[1], torch.tensor(2/40))        # just the two around 0

def test_activation_stats_fit_and_plots():
    set_seed(0)
    model = tiny_model()
    stats = ActivationStats(lambda m: isinstance(m, nn.ReLU), hist_range=(-5, 5), bins=20)
    TrainLearner(model, tiny_dls(), F.cross_entropy, lr=0.1, cbs=[stats]).fit(2)
    assert n_hooks(model) == 0
    hs = list(stats)
    assert len(hs) == 2 and len(hs[0].stats[2]) == 8 and hs[0].stats[2][0].shape == (20,)
    assert hs[0].hist_range == (-5, 5)
    # ReLU outputs: nothing in the negative bins, everything counted (they are far below 5)
    h0 = torch.stack(hs[0].stats[2])
    assert h0[:, :10].sum() == 0
    stats.plot_stats(); stats.color_dim(); stats.dead_chart()
    plt.close('all')

def test_activation_stats_bad_use():
    stats = ActivationStats(lambda m: isinstance(m, nn.ReLU))
    with pytest.raises(ValueError, match='fit a learner'): stats.plot_stats()
    model = tiny_model()
    none = ActivationStats(lambda m: isinstance(m, nn.GELU))
    TrainLearner(model, tiny_dls(), F.cross_entropy, cbs=[none]).fit(1, valid=False)
    with pytest.raises(ValueError, match='mod_filter'): none.color_dim()
    onlyvalid = ActivationStats(lambda m: isinstance(m, nn.ReLU))
    TrainLearner(model, tiny_dls(), F.cross_entropy, cbs=[onlyvalid]).fit(1, train=False)
    with pytest.raises(ValueError, match='recorded nothing'): onlyvalid.dead_chart()


# ---------- ListContainer, backward hooks, imports ----------


def test_list_container_indexing():
    lc = ListContainer('abcdef')
    assert lc[0] == 'a' and lc[-1] == 'f' and lc[1:3] == ['b', 'c']
    assert lc[[True, False, True, False, False, True]] == ['a', 'c', 'f']
    assert lc[torch.tensor([False, True] * 3)] == ['b', 'd', 'f']
    assert lc[[4, 0, 4]] == ['e', 'a', 'e'] and lc[torch.tensor([1, 2])] == ['b', 'c'] and lc[torch.tensor(3)] == 'd'
    assert lc[[]] == []
    with pytest.raises(IndexError, match='one bool per item'): lc[[True, False]]
    with pytest.raises(IndexError): lc[[0, 9]]
    lc[1] = 'B'; del lc[0]
    assert list(lc) == ['B', 'c', 'd', 'e', 'f'] and len(lc) == 5

def test_list_container_repr_is_short():
    assert repr(ListContainer([1, 2])) == 'ListContainer (2 items) [1, 2]'
    r = repr(ListContainer(range(100)))
    assert r == 'ListContainer (100 items) [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ...]'
    assert repr(ListContainer(range(10))).endswith('9]')          # exactly ten: no ellipsis

def test_hooks_is_a_list_container():
    model = tiny_model()
    with Hooks(model, record) as hs:
        assert isinstance(hs, ListContainer)
        relus = hs[[isinstance(m, nn.ReLU) for m in model]]
        assert len(relus) == 2 and all(isinstance(h, Hook) for h in relus)
        assert repr(hs).startswith('Hooks (7 items) [Hook(Conv2d), Hook(ReLU)')

def test_backward_hook_sees_output_gradient():
    lin = nn.Linear(3, 2)
    x = torch.randn(5, 3, requires_grad=True)
    def keep(hook, mod, grad_in, grad_out): hook.grad_in, hook.grad_out = grad_in[0], grad_out[0]
    with Hook(lin, keep, backward=True) as h:
        y = lin(x)
        (y * torch.tensor([1., -2.])).sum().backward()
        assert len(lin._backward_hooks) == 1 and len(lin._forward_hooks) == 0
    assert len(lin._backward_hooks) == 0
    assert torch.allclose(h.grad_out, torch.tensor([1., -2.]).expand(5, 2))
    assert torch.allclose(h.grad_in, x.grad)
    assert torch.allclose(h.grad_out.t() @ x.detach(), lin.weight.grad)
    assert repr(h) == 'Hook(Linear, backward)'

def test_backward_hook_cannot_change_gradients():
    lin = nn.Linear(3, 2)
    x = torch.randn(4, 3, requires_grad=True)
    lin(x).sum().backward(); expected = x.grad.clone(); x.grad = None
    with Hook(lin, lambda hook, m, gi, go: (torch.zeros_like(gi[0]),), backward=True):   # returns a replacement: ignored
        lin(x).sum().backward()
    assert torch.equal(x.grad, expected)

def test_hooks_callback_backward_records_training_gradients():
    def grad_std(hook, mod, grad_in, grad_out): hook.n = getattr(hook, 'n', 0) + 1
    model = tiny_model()
    cb = HooksCallback(grad_std, mod_filter=lambda m: isinstance(m, nn.ReLU), backward=True, on_valid=True)
    TrainLearner(model, tiny_dls(n=64, bs=16), F.cross_entropy, lr=0.1, cbs=[cb]).fit(1)
    assert [h.n for h in cb] == [4, 4]                 # the 4 training batches; validation has no backward pass
    assert all(len(m._backward_hooks) == 0 for m in model.modules())

def test_callbacks_under_a_learner_without_cleanup_events():
    class ZeroInputs(Callback):   # a batch transform, written here: BatchTransformCB comes later, in 11_initializing
        def before_batch(self, learn): learn.batch = (learn.batch[0]*0, learn.batch[1])
    model = tiny_model()
    stats = ActivationStats(lambda m: isinstance(m, nn.ReLU))
    grads = HooksCallback(record, mod_filter=lambda m: isinstance(m, nn.ReLU), backward=True)
    seen = []
    class Seen(Callback):
        order = 5
        def before_batch(self, learn): seen.append(learn.batch[0].abs().max().item())
    LessonLearner(model, tiny_dls(), F.cross_entropy, 0.1,
                  [TrainCB(), stats, grads, ZeroInputs(), Seen()]).fit(1)
    assert all(len(m._forward_hooks) == 0 and len(m._backward_hooks) == 0 for m in model.modules())   # removed in after_fit
    assert len(list(stats)[0].stats[0]) == 4 and [h.calls for h in grads] == [4, 4]
    assert seen == [0.] * 8                                                                          # 4 train + 4 valid
