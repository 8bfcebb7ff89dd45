"Edge cases of miniai.conv: devices, moving nested batches, collation and the conv layer."
from collections import OrderedDict, namedtuple, defaultdict

import pytest
import torch
from torch import nn

from miniai.conv import conv, to_device, collate_device, get_device, def_device


@pytest.mark.parametrize('mps,cuda,expected', [(True, True, 'mps'), (True, False, 'mps'),
                                               (False, True, 'cuda'), (False, False, 'cpu')])
def test_get_device_order(monkeypatch, mps, cuda, expected):
    monkeypatch.setattr(torch.backends.mps, 'is_available', lambda: mps)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
    assert get_device() == expected


def test_to_device_tensor_moves():
    t = torch.arange(3)
    moved = to_device(t, 'meta')
    assert moved.device.type == 'meta' and moved.shape == t.shape
    assert t.device.type == 'cpu'


def test_to_device_default_is_def_device():
    assert to_device(torch.zeros(2)).device.type == def_device


def test_to_device_nested_keeps_types_and_non_tensors():
    batch = {'x': torch.ones(2, 3),
             'extra': [torch.zeros(1), ('name', 5, None, torch.ones(1)), 2.5],
             'label': 'a string', 'n': 7, 'none': None}
    out = to_device(batch, 'meta')
    assert type(out) is dict and list(out) == list(batch)
    assert out['x'].device.type == 'meta'
    assert type(out['extra']) is list and out['extra'][0].device.type == 'meta'
    inner = out['extra'][1]
    assert type(inner) is tuple and inner[:3] == ('name', 5, None) and inner[3].device.type == 'meta'
    assert out['extra'][2] == 2.5
    assert out['label'] == 'a string' and out['n'] == 7 and out['none'] is None
    # the input is not changed in place
    assert batch['x'].device.type == 'cpu' and batch['extra'][0].device.type == 'cpu'


def test_to_device_mapping_and_tuple_subclasses():
    Pair = namedtuple('Pair', 'x y')
    od = OrderedDict(a=torch.ones(1), b=Pair(torch.zeros(1), 'y'))
    out = to_device(od, 'meta')
    assert type(out) is OrderedDict and list(out) == ['a', 'b']
    assert type(out['b']) is Pair and out['b'].x.device.type == 'meta' and out['b'].y == 'y'
    # a mapping that can't be rebuilt from a plain dict comes back as a dict
    dd = defaultdict(list, a=torch.ones(1))
    assert to_device(dd, 'meta')['a'].device.type == 'meta'


@pytest.mark.parametrize('x', ['text', 3, 2.5, None, b'bytes', {1, 2}])
def test_to_device_leaves_other_things(x):
    assert to_device(x, 'meta') is x


def test_collate_device_shapes():
    items = [(torch.full((1, 28, 28), float(i)), i) for i in range(5)]
    xb, yb = collate_device(items)
    assert xb.shape == (5, 1, 28, 28) and yb.shape == (5,)
    assert xb.device.type == def_device and yb.device.type == def_device
    assert yb.tolist() == list(range(5)) and xb[3].eq(3).all()


def test_collate_device_dicts():
    b = collate_device([{'image': torch.zeros(2, 2), 'label': 1}, {'image': torch.ones(2, 2), 'label': 0}])
    assert type(b) is dict and b['image'].shape == (2, 2, 2) and b['label'].tolist() == [1, 0]


@pytest.mark.parametrize('ks,stride,size,expected', [(3, 2, 28, 14), (3, 2, 7, 4), (3, 1, 28, 28),
                                                     (5, 1, 28, 28), (5, 2, 28, 14), (1, 1, 9, 9), (3, 2, 1, 1)])
def test_conv_output_size(ks, stride, size, expected):
    out = conv(3, 6, ks=ks, stride=stride)(torch.randn(2, 3, size, size))
    assert out.shape == (2, 6, expected, expected)


def test_conv_act():
    layer = conv(1, 4)
    assert isinstance(layer, nn.Sequential) and [type(m) for m in layer] == [nn.Conv2d, nn.ReLU]
    assert (layer(torch.randn(2, 1, 8, 8)) >= 0).all()
    plain = conv(1, 4, ks=5, stride=1, act=False)
    assert [type(m) for m in plain] == [nn.Conv2d]
    assert plain[0].kernel_size == (5, 5) and plain[0].stride == (1, 1) and plain[0].padding == (2, 2)
    assert (plain(torch.randn(2, 1, 8, 8)) < 0).any()
    assert [type(m) for m in conv(1, 4, act=True)] == [nn.Conv2d, nn.ReLU]     # lesson 15's switch
    assert [type(m) for m in conv(1, 4, act=nn.GELU)] == [nn.Conv2d, nn.GELU]  # lesson 10's activation class


class CancelsBias(nn.Module):
    "A stand-in norm layer that says it subtracts each channel's mean."
    cancels_bias = True
    def __init__(self, nf): super().__init__()
    def forward(self, x): return x - x.mean((0, 2, 3), keepdim=True)


@pytest.mark.parametrize('norm,has_bias', [(None, True), (nn.BatchNorm2d, False), (nn.BatchNorm1d, False),
                                           (CancelsBias, False), (lambda nf: nn.GroupNorm(2, nf), True),
                                           (nn.InstanceNorm2d, True)])
def test_conv_bias_follows_the_norm_layer(norm, has_bias):
    layer = conv(3, 4, norm=norm)
    assert (layer[0].bias is not None) == has_bias
    if norm is not None: assert type(layer[1]) is type(norm(4)) and isinstance(layer[2], nn.ReLU)


def test_conv_explicit_bias_wins():
    assert conv(3, 4, norm=nn.BatchNorm2d, bias=True)[0].bias is not None
    assert conv(3, 4, bias=False)[0].bias is None
