"""Tests of miniai.resnet: ResBlock's shapes and identity path, `_conv_block`'s layout, and `Learner.summary`'s counts
worked out by hand, with the weights left untouched."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from miniai.datasets import DataLoaders
from miniai.learner import Learner, TrainCB, MetricsCB, DeviceCB, ProgressCB
from miniai.init import BatchTransformCB
from miniai.resnet import act_gr, _conv_block, ResBlock, summary


def test_act_gr_is_leaky_relu_minus_0_4():
    x = torch.tensor([-2., 0., 3.])
    assert torch.allclose(act_gr()(x), torch.tensor([-0.2 - 0.4, -0.4, 3. - 0.4]))


def test_conv_block_layout():
    blk = _conv_block(3, 6, stride=2, norm=nn.BatchNorm2d, ks=5)
    c1, c2 = blk[0][0], blk[1][0]
    assert (c1.in_channels, c1.out_channels, c1.stride, c1.kernel_size) == (3, 6, (1, 1), (5, 5))
    assert (c2.in_channels, c2.out_channels, c2.stride, c2.kernel_size) == (6, 6, (2, 2), (5, 5))
    assert isinstance(blk[0][-1], nn.Module) and type(blk[0][-1]).__name__ == 'GeneralRelu'
    assert isinstance(blk[1][-1], nn.BatchNorm2d)            # the second conv ends at its norm: no activation


@pytest.mark.parametrize('ni,nf,stride,hw,out_hw', [(4, 4, 1, 8, 8), (4, 8, 1, 8, 8), (4, 4, 2, 8, 4), (4, 8, 2, 7, 4)])
def test_resblock_shapes(ni, nf, stride, hw, out_hw):
    out = ResBlock(ni, nf, stride)(torch.randn(2, ni, hw, hw))
    assert out.shape == (2, nf, out_hw, out_hw)


def test_resblock_identity_path():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 6, 6)
    rb = ResBlock(4, 4)
    assert torch.allclose(rb(x), rb.act(rb.convs(x) + x))
    with torch.no_grad():                                     # conv path zeroed: the block is act(x)
        for p in rb.convs.parameters(): p.zero_()
    assert torch.allclose(rb(x), act_gr()(x))
    rb2 = ResBlock(4, 8, stride=2)                            # otherwise the path pools, then 1x1-convolves
    with torch.no_grad():
        for p in rb2.convs.parameters(): p.zero_()
    expect = act_gr()(F.conv2d(F.avg_pool2d(x, 2, ceil_mode=True), rb2.idconv[0].weight, rb2.idconv[0].bias))
    assert torch.allclose(rb2(x), expect, atol=1e-6)


def _learner(model, cbs=()):
    xs, ys = torch.randn(6, 1, 12, 12), torch.randint(0, 10, (6,))
    dls = DataLoaders([(xs, ys)], [(xs, ys)])
    return Learner(model, dls, F.cross_entropy, cbs=[TrainCB(), *cbs])


def test_summary_counts_by_hand(capsys):
    model = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), ResBlock(4, 8, stride=2),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    before = [p.detach().clone() for p in model.parameters()]
    s = _learner(model, [DeviceCB('cpu'), MetricsCB(), ProgressCB()]).summary()
    out = capsys.readouterr().out
    assert 'Total' in out and 'ResBlock' in out
    r = s.rows
    assert [x['module'] for x in r] == ['Conv2d', 'BatchNorm2d', 'ResBlock', 'AdaptiveAvgPool2d', 'Flatten', 'Linear']
    assert r[0]['input'] == (6, 1, 12, 12) and r[0]['output'] == (6, 4, 6, 6)
    assert r[0]['params'] == 4*1*3*3 + 4
    assert r[0]['mflops'] == pytest.approx((4*1*3*3*6*6 + 4) / 1e6)      # each kernel weight once per output pixel
    assert r[1]['params'] == 8 and r[1]['mflops'] == pytest.approx(8 / 1e6)
    rb_params = (4*8*9 + 8) + (8*8*9 + 8) + (4*8 + 8)                   # two 3x3 convs, the 1x1 conv
    assert r[2]['params'] == rb_params and r[2]['output'] == (6, 8, 3, 3)
    # the first 3x3 conv works at 6x6 (stride 1), the second and the 1x1 conv at 3x3; biases once each
    assert r[2]['mflops'] == pytest.approx((4*8*9*36 + 8*8*9*9 + 4*8*9 + 3*8) / 1e6)
    assert r[5]['params'] == 8*10 + 10 and r[5]['mflops'] == pytest.approx(90 / 1e6)
    assert s.total_params == sum(p.numel() for p in model.parameters())
    assert s.total_mflops == pytest.approx(sum(x['mflops'] for x in r))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))   # no step was taken


def test_summary_goes_through_batch_transforms(capsys):
    model = nn.Sequential(nn.Flatten(), nn.Linear(196, 10))
    s = _learner(model, [BatchTransformCB(lambda b: (F.pad(b[0], (1, 1, 1, 1)), b[1]))]).summary()
    assert s.rows[0]['input'] == (6, 1, 14, 14)                 # the padded batch the model really sees
