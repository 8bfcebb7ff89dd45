"Initialization helpers (miniai.init): GeneralRelu, conv/get_model, init_weights, LSUV, BatchTransformCB, Lambda, view_tfm."
import math
from functools import partial

import pytest, torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from miniai.datasets import DataLoaders
from miniai.learner import Callback, TrainLearner
from miniai.init import BatchTransformCB, Lambda, flatten, view_tfm, GeneralRelu, plot_func, init_weights, lsuv_init, conv, get_model


def test_general_relu_values_and_grad():
    x = torch.tensor([-3., -1., 0., 1., 3.], requires_grad=True)
    y = GeneralRelu(leak=0.1, sub=0.4, maxv=2.)(x)
    assert torch.allclose(y, torch.tensor([-0.7, -0.5, -0.4, 0.6, 2.0]))
    y.sum().backward()
    assert torch.allclose(x.grad, torch.tensor([0.1, 0.1, 0.1, 1., 0.]))   # clamped at maxv: no gradient
    assert torch.equal(GeneralRelu()(x), F.relu(x))
    assert torch.equal(GeneralRelu(leak=0.)(x), F.relu(x))

def test_general_relu_keeps_input():
    x = torch.tensor([-1., 5.])
    GeneralRelu(leak=0.1, sub=0.4, maxv=1.)(x)
    assert torch.equal(x, torch.tensor([-1., 5.]))

class CancelsBias(nn.Module):     # stands for the hand-made batch norms of 12_batchnorm
    cancels_bias = True
    def __init__(self, nf): super().__init__()
    def forward(self, x): return x - x.mean((0, 2, 3), keepdim=True)

class NamedBatchNorm(nn.Module):  # a name is not enough: it does not declare that it cancels a bias
    def __init__(self, nf): super().__init__()
    def forward(self, x): return x

@pytest.mark.parametrize('norm,has_bias', [(None, True), (nn.BatchNorm2d, False), (partial(nn.BatchNorm2d, eps=1e-3), False),
                                           (nn.SyncBatchNorm, False), (CancelsBias, False), (NamedBatchNorm, True),
                                           (nn.InstanceNorm2d, True), (partial(nn.GroupNorm, 2), True)])
def test_conv_bias_rule(norm, has_bias):
    c = conv(4, 8, norm=norm)
    assert (c[0].bias is not None) == has_bias
    if norm is not nn.SyncBatchNorm: assert c.eval()(torch.zeros(2, 4, 10, 10)).shape == (2, 8, 5, 5)

def test_conv_is_the_one_conv():
    import miniai.conv, miniai.init
    assert miniai.init.conv is miniai.conv.conv
    assert isinstance(conv(1, 2, act=True)[-1], nn.ReLU) and len(conv(1, 2, act=False)) == 1

def test_conv_explicit_bias_and_act():
    assert conv(1, 2, norm=nn.BatchNorm2d, bias=True)[0].bias is not None
    assert conv(1, 2, bias=False)[0].bias is None
    c = conv(1, 2, ks=5, stride=1, act=partial(GeneralRelu, leak=0.1))
    assert isinstance(c[-1], GeneralRelu) and c[-1].leak == 0.1 and c[0].padding == (2, 2)
    assert len(conv(1, 2, act=None)) == 1

def test_get_model():
    m = get_model(partial(GeneralRelu, leak=0.1, sub=0.4), nfs=(1, 4, 8, 16, 32), norm=nn.BatchNorm2d)
    assert m(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert sum(isinstance(o, GeneralRelu) for o in m.modules()) == 4
    assert sum(isinstance(o, nn.BatchNorm2d) for o in m.modules()) == 4
    assert m[-2][0].bias is not None                       # the classifier conv keeps its bias
    assert get_model()(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
    with pytest.raises(ValueError, match='at least one'): get_model(nfs=[1])

@pytest.mark.parametrize('uniform', [False, True])
def test_init_weights(uniform):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(32, 64, 3), nn.BatchNorm2d(64), nn.Linear(400, 300))
    m.apply(partial(init_weights, leaky=0.2, uniform=uniform))
    for layer, n_in in ((m[0], 32*9), (m[2], 400)):
        assert abs(layer.weight.std().item() / math.sqrt(2/((1+0.04)*n_in)) - 1) < 0.03
        assert layer.bias.abs().sum() == 0
    assert torch.equal(m[1].weight, torch.ones(64))       # other modules left alone

def test_lsuv_init_targets():
    torch.manual_seed(0)
    model = get_model(partial(GeneralRelu, leak=0.1, sub=0.4), nfs=(1, 4, 8, 16, 16))
    xb = torch.randn(64, 1, 28, 28)
    relus = [o for o in model.modules() if isinstance(o, GeneralRelu)]
    convs = [o for o in model.modules() if isinstance(o, nn.Conv2d)]
    for r, c in zip(relus, convs): lsuv_init(model, r, c, xb)
    stats = []
    hooks = [r.register_forward_hook(lambda m, i, o: stats.append((o.mean().item(), o.std().item()))) for r in relus]
    with torch.no_grad(): model(xb)
    for h in hooks: h.remove()
    assert len(stats) == 4
    for mean, std in stats: assert abs(mean) < 1e-3 and abs(std - 1) < 1e-3
    assert all(len(o._forward_hooks) == 0 for o in model.modules())   # lsuv_init's own hooks are gone

def test_lsuv_init_bad_input():
    model = get_model()
    xb = torch.randn(16, 1, 28, 28)
    with pytest.raises(RuntimeError, match='never negative'): lsuv_init(model, model[0][1], model[0][0], xb, max_iters=3)
    assert all(len(o._forward_hooks) == 0 for o in model.modules())
    nb = nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), GeneralRelu(0.1, 0.4))
    with pytest.raises(ValueError, match='bias'): lsuv_init(nb, nb[1], nb[0], xb)

def _seen_means(cb):
    "The mean input of each training and each validation batch after `cb`, on a batch of 2s."
    x, y = torch.full((8, 1, 28, 28), 2.), torch.zeros(8).long()
    dls = DataLoaders(DataLoader(TensorDataset(x, y), 4), DataLoader(TensorDataset(x, y), 4))
    seen = {True: [], False: []}
    class Seen(Callback):
        order = 5
        def before_batch(self, learn): seen[learn.training].append(learn.batch[0].mean().item())
    TrainLearner(get_model(), dls, F.cross_entropy, lr=0., cbs=[cb, Seen()]).fit(1)
    return seen

def minus_two(b): return b[0] - 2., b[1]

@pytest.mark.parametrize('on_train,on_valid', [(True, True), (True, False), (False, True)])
def test_batch_transform_cb_flags(on_train, on_valid):
    for cb in (BatchTransformCB(minus_two, on_train=on_train, on_valid=on_valid),
               BatchTransformCB(minus_two, on_train, on_valid),                      # positionally
               BatchTransformCB(minus_two, on_train=on_train, on_val=on_valid)):     # the lessons' name
        seen = _seen_means(cb)
        assert seen[True] == [0. if on_train else 2.] * 2
        assert seen[False] == [0. if on_valid else 2.] * 2

def test_batch_transform_cb_lives_in_init():
    "11_initializing teaches it, so it lives in miniai.init; miniai.learner (09) must not depend on a later notebook."
    import miniai.learner, miniai.init
    assert miniai.init.BatchTransformCB.__module__ == 'miniai.init'
    assert not hasattr(miniai.learner, 'BatchTransformCB')
    assert BatchTransformCB(minus_two).on_valid and not BatchTransformCB(minus_two, on_val=False).on_valid

def test_lambda_layer():
    def double(x): return x * 2
    layer = Lambda(double)
    x = torch.randn(3, 4)
    assert torch.equal(layer(x), x * 2)
    assert list(layer.parameters()) == [] and 'double' in repr(layer)
    model = nn.Sequential(Lambda(lambda x: x.view(-1, 1, 4, 4)), nn.Conv2d(1, 2, 3, padding=1), Lambda(flatten))
    assert model(torch.randn(5, 16)).shape == (5, 32)

def test_flatten_matches_nn_flatten():
    x = torch.randn(6, 10, 1, 1)
    assert torch.equal(flatten(x), nn.Flatten()(x)) and flatten(x).shape == (6, 10)
    assert flatten(torch.randn(2, 3, 4, 5)).shape == (2, 60)

def test_view_tfm():
    x, y = torch.arange(2*784.).view(2, 784), torch.tensor([3, 7])
    xv, yv = view_tfm(1, 28, 28)((x, y))
    assert xv.shape == (2, 1, 28, 28) and yv is y
    assert torch.equal(xv[1, 0, 0], x[1, :28])                   # the first row of the second image
    assert view_tfm(784)((xv, y))[0].shape == (2, 784)            # and back
    with pytest.raises(RuntimeError, match='invalid'): view_tfm(3, 28, 28)((x, y))

def test_view_tfm_trains_a_model_on_flat_rows():
    "Flat rows through `view_tfm` as a batch transform train the same as a model with `Lambda` layers, step for step."
    torch.manual_seed(0)
    x, y = torch.randn(32, 784), torch.randint(0, 10, (32,))
    dls = DataLoaders(DataLoader(TensorDataset(x, y), 8), DataLoader(TensorDataset(x, y), 8))
    torch.manual_seed(1)
    with_lambda = nn.Sequential(Lambda(lambda t: t.view(-1, 1, 28, 28)), *list(get_model())[:-1], Lambda(flatten))
    torch.manual_seed(1)
    plain = get_model()
    TrainLearner(with_lambda, dls, F.cross_entropy, lr=0.1).fit(1)
    TrainLearner(plain, dls, F.cross_entropy, lr=0.1, cbs=[BatchTransformCB(view_tfm(1, 28, 28))]).fit(1)
    start = get_model()   # fresh weights: training must have moved them
    for p, q, r in zip(with_lambda.parameters(), plain.parameters(), start.parameters()):
        assert torch.allclose(p, q, atol=1e-6) and p.shape == r.shape
    assert not all(torch.allclose(p, r) for p, r in zip(plain.parameters(), start.parameters()))
    with pytest.raises(RuntimeError, match='4D'):   # without the transform, flat rows cannot go through a conv
        TrainLearner(get_model(), dls, F.cross_entropy, lr=0.1).fit(1)

def test_plot_func():
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    plot_func(GeneralRelu(leak=0.1, sub=0.4), start=-2, end=2, steps=5)
    line = plt.gca().lines[0]
    assert list(line.get_xdata()) == [-2., -1., 0., 1., 2.]
    assert torch.allclose(torch.tensor(line.get_ydata()), torch.tensor([-0.6, -0.5, -0.4, 0.6, 1.6]))
    plt.close('all')


# ---------- memory helpers (exported to miniai.core, re-exported here) ----------
import gc, subprocess, sys, weakref
from miniai.init import clean_ipython_hist, clean_tb, clean_mem

def _fail_holding(refs):
    big = torch.zeros(1000)
    refs.append(weakref.ref(big))
    raise ValueError('failed with a tensor in a local variable')

def test_clean_tb_frees_what_a_traceback_holds(monkeypatch):
    for name in ('last_type', 'last_value', 'last_traceback'): monkeypatch.setattr(sys, name, None, raising=False)
    refs = []
    try: _fail_holding(refs)
    except ValueError: sys.last_type, sys.last_value, sys.last_traceback = sys.exc_info()   # as IPython does for a failed cell
    gc.collect()
    assert refs[0]() is not None                   # only the stored traceback keeps it
    clean_tb(); gc.collect()
    assert refs[0]() is None
    assert sys.last_traceback is None and sys.last_value is None

def test_clean_tb_keeps_module_level_variables(monkeypatch):
    ns = {}
    try: exec("import torch\nkept = torch.ones(2)\nraise KeyError('k')", ns)
    except KeyError: monkeypatch.setattr(sys, 'last_traceback', sys.exc_info()[2], raising=False)
    clean_tb()
    assert torch.equal(ns['kept'], torch.ones(2))  # a notebook's globals are not a traceback's locals

def test_memory_helpers_never_fail_outside_a_kernel(monkeypatch):
    for name in ('last_type', 'last_value', 'last_traceback', 'last_exc'): monkeypatch.delattr(sys, name, raising=False)
    assert clean_tb() is None and clean_ipython_hist() is None and clean_mem() is None   # nothing stored: nothing to do
    refs = []
    try: _fail_holding(refs)
    except ValueError: sys.last_type, sys.last_value, sys.last_traceback = sys.exc_info()
    clean_mem()
    assert refs[0]() is None

def test_clean_ipython_hist_in_a_shell():
    # In a fresh process, so that the IPython shell this starts does not leak into other tests.
    code = """
import gc, weakref, torch
from execnb.shell import CaptureShell
from execnb.nbio import mk_cell
shell = CaptureShell()
cells = ['import gc, weakref, torch\\nfrom miniai.init import clean_ipython_hist\\nt = torch.zeros(1000)\\nr = weakref.ref(t)',
         't', 't', 'del t; gc.collect(); print(r() is not None)', 'clean_ipython_hist(); gc.collect(); print(r() is None, len(Out))']
for src in cells:
    shell.cell(c := mk_cell(src))
    for o in c.outputs:
        if o.get('output_type') == 'stream': print(''.join(o['text']).strip())
print(shell.user_ns['r']() is None)
"""
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ['True', 'True', '0', 'True']

def test_clean_tb_frees_locals_a_debugger_looked_at(monkeypatch):
    refs = []
    try: _fail_holding(refs)
    except ValueError: exc_info = sys.exc_info()
    monkeypatch.setattr(sys, 'last_traceback', exc_info[2], raising=False)
    frames = [frame for frame, _ in __import__('traceback').walk_tb(exc_info[2])]
    assert 'big' in frames[-1].f_locals            # looking at the locals leaves a copy of them on the frame
    clean_tb(); gc.collect()
    assert refs[0]() is None                       # freed although the traceback itself is still referenced here
    del exc_info, frames
