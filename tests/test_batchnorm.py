"""Tests of miniai.batchnorm: agreement with PyTorch, running statistics and inference on numbers worked out
independently, normalised dimensions, RunningBatchNorm's debiasing and batch-of-one inference, and bad input."""
import io, math
import pytest
import torch
from torch import nn
from miniai.batchnorm import BatchNorm, LayerNorm, InstanceNorm, RunningBatchNorm


def close(a, b, tol=1e-5): return torch.allclose(torch.as_tensor(a).float(), torch.as_tensor(b).float(), atol=tol, rtol=tol)


def test_batchnorm_matches_pytorch_in_training_and_eval():
    torch.manual_seed(0)
    ours, theirs = BatchNorm(4, mom=0.2, eps=1e-3), nn.BatchNorm2d(4, momentum=0.2, eps=1e-3)
    with torch.no_grad():                                  # non-trivial affine parameters, the same in both
        ours.mults.copy_(torch.tensor([0.5, 1., 2., -1.])[:, None, None]); theirs.weight.copy_(ours.mults.flatten())
        ours.adds.copy_(torch.tensor([0., 1., -2., 3.])[:, None, None]);   theirs.bias.copy_(ours.adds.flatten())
    for i in range(4):
        x = torch.randn(5, 4, 3, 3) * (i + 1) - i
        xa, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
        oa, ot = ours(xa), theirs(xt)
        assert close(oa, ot, 1e-4)
        w = torch.randn_like(oa)
        (oa * w).sum().backward(); (ot * w).sum().backward()
        assert close(xa.grad, xt.grad, 1e-4)
        assert close(ours.mults.grad.flatten(), theirs.weight.grad, 1e-4)
        assert close(ours.means.flatten(), theirs.running_mean)
        assert close(ours.vars.flatten(), theirs.running_var, 1e-4)
    ours.eval(); theirs.eval()
    x = torch.randn(3, 4, 3, 3)
    assert close(ours(x), theirs(x), 1e-4)


def test_batchnorm_running_stats_and_inference_by_hand():
    # channel 0 holds 1,2,3,4 and channel 1 holds 0,0,0,8 (batch of 2, 1x2 maps): n = 4 values per channel
    x = torch.tensor([[[[1., 2.]], [[0., 0.]]], [[[3., 4.]], [[0., 8.]]]])
    bn = BatchNorm(2)                                      # mom 0.1: running = 0.9*old + 0.1*batch
    out = bn(x)
    # means 2.5 and 2; biased variances 1.25 and 12; unbiased (x4/3) 5/3 and 16
    assert close(bn.means.flatten(), [0.25, 0.2])
    assert close(bn.vars.flatten(), [0.9 + 0.1 * 5 / 3, 0.9 + 0.1 * 16])
    assert close(out[0, 0, 0], [(1 - 2.5) / math.sqrt(1.25 + 1e-5), (2 - 2.5) / math.sqrt(1.25 + 1e-5)])
    bn.eval()
    y = bn(torch.tensor([[[[1.25]], [[2.2]]]]))           # batch of one at inference
    assert close(y.flatten(), [1 / math.sqrt(0.9 + 0.5 / 3 + 1e-5), 2 / math.sqrt(2.5 + 1e-5)])
    assert close(bn.means.flatten(), [0.25, 0.2])          # inference changes nothing


def test_batchnorm_buffers_saved_and_moved():
    bn = BatchNorm(3)
    bn(torch.randn(4, 3, 2, 2) + 5)
    buf = io.BytesIO(); torch.save(bn.state_dict(), buf); buf.seek(0)
    fresh = BatchNorm(3); fresh.load_state_dict(torch.load(buf))
    assert close(fresh.means, bn.means) and close(fresh.vars, bn.vars)
    assert [n for n, _ in bn.named_parameters()] == ['mults', 'adds']
    bn.double()
    assert bn.means.dtype == torch.float64                 # buffers follow .to()/.double() like parameters


@pytest.mark.parametrize('cls,dims', [(LayerNorm, (1, 2, 3)), (InstanceNorm, (2, 3))])
def test_layer_and_instance_norm_normalise_their_dims(cls, dims):
    torch.manual_seed(1)
    x = torch.randn(5, 3, 4, 6) * torch.arange(1., 6.)[:, None, None, None] + 10
    out = cls(3)(x).detach()
    assert close(out.mean(dims), torch.zeros_like(out.mean(dims)), 1e-5)
    assert close(out.std(dims, correction=0), torch.ones_like(out.mean(dims)), 1e-3)
    assert close(cls(3)(x[1:2]), out[1:2], 1e-5)           # no dependence on the rest of the batch
    cls(3).eval()(x)                                       # same computation at inference, no state to need


def test_instance_norm_is_not_batch_or_layer_norm():
    torch.manual_seed(2)
    x = torch.randn(4, 3, 5, 5) * torch.tensor([1., 3., 9.])[:, None, None]
    assert not close(LayerNorm(3)(x), InstanceNorm(3)(x), 1e-2)
    assert close(LayerNorm(3)(x), nn.GroupNorm(1, 3)(x), 1e-4)
    assert close(InstanceNorm(3)(x), nn.GroupNorm(3, 3)(x), 1e-4)


def test_running_batchnorm_one_batch_equals_plain_stats():
    torch.manual_seed(3)
    x = torch.randn(16, 3, 4, 4) * torch.tensor([1., 2., 4.])[:, None, None] + torch.tensor([-2., 0., 3.])[:, None, None]
    rbn = RunningBatchNorm(3)
    out = rbn(x)
    means, vars = rbn.stats()
    assert close(means.flatten(), x.mean((0, 2, 3)), 1e-4)
    assert close(vars.flatten(), x.var((0, 2, 3), correction=0), 1e-3)
    sums, sqrs, count = rbn.totals()
    assert close(sums.flatten(), x.sum((0, 2, 3)), 1e-3) and close(sqrs.flatten(), (x * x).sum((0, 2, 3)), 1e-3)
    assert close(count, 16 * 4 * 4)
    assert close(out, (x - x.mean((0, 2, 3), keepdim=True)) / (x.var((0, 2, 3), keepdim=True, correction=0) + 1e-5).sqrt(), 1e-3)


def test_running_batchnorm_weights_batches_by_count():
    torch.manual_seed(4)
    a, b = torch.randn(6, 2, 3, 3) + 1, torch.randn(2, 2, 3, 3) - 1
    rbn = RunningBatchNorm(2, mom=0.3)
    rbn(a); rbn(b)
    wa, wb = 0.7 * 0.3, 0.3                                # weights of the two batches in the running sums
    sums = wa * a.sum((0, 2, 3)) + wb * b.sum((0, 2, 3))
    sqrs = wa * (a * a).sum((0, 2, 3)) + wb * (b * b).sum((0, 2, 3))
    count = wa * 6 * 9 + wb * 2 * 9
    means, vars = rbn.stats()
    assert close(means.flatten(), sums / count, 1e-5)
    assert close(vars.flatten(), sqrs / count - (sums / count) ** 2, 1e-4)
    assert close(rbn.debias, 1 - 0.7 ** 2)
    assert int(rbn.n_items) == 8


def test_running_batchnorm_variance_floor_until_enough_items():
    rbn = RunningBatchNorm(1, min_items=20, min_var=0.01)
    same = torch.full((4, 1, 2, 2), 3.)
    for i in range(5):
        out = rbn(same)
        assert torch.isfinite(out).all()
        expected = 0.01 if (i + 1) * 4 < 20 else 0.
        assert close(rbn.stats()[1].flatten(), [expected], 1e-6)


def test_running_batchnorm_batch_of_one_at_inference():
    torch.manual_seed(5)
    rbn = RunningBatchNorm(3)
    assert close(rbn.eval()(torch.ones(1, 3, 2, 2)), torch.ones(1, 3, 2, 2), 1e-4)   # nothing seen: identity
    rbn.train()
    for _ in range(5): rbn(torch.randn(2, 3, 4, 4) * 2 + 1)
    rbn.eval()
    x = torch.randn(4, 3, 4, 4)
    one = rbn(x[:1])
    assert one.shape == (1, 3, 4, 4) and torch.isfinite(one).all()
    assert close(one, rbn(x)[:1], 1e-5)
    # RunningBatchNorm also trains on a batch of one (BatchNorm cannot)
    rbn.train(); assert torch.isfinite(rbn(torch.randn(1, 3, 1, 1))).all()
    with pytest.raises(ValueError, match='more than one value per channel'): BatchNorm(3)(torch.randn(1, 3, 1, 1))


def test_running_batchnorm_gradients_reach_input_and_params_only():
    rbn = RunningBatchNorm(2)
    x = torch.randn(4, 2, 3, 3, requires_grad=True)
    rbn(x).pow(2).sum().backward()
    assert x.grad is not None and rbn.mults.grad is not None
    assert not rbn.sums.requires_grad and rbn.sums.grad_fn is None   # stored history carries no graph
    rbn(torch.randn(4, 2, 3, 3, requires_grad=True)).sum().backward()  # a second step does not backprop into the first


@pytest.mark.parametrize('cls', [BatchNorm, LayerNorm, InstanceNorm, RunningBatchNorm])
def test_bad_shapes_give_clear_errors(cls):
    layer = cls(8)
    with pytest.raises(ValueError, match=r'expects a batch of shape \(batch, 8, height, width\), got \(2, 4, 5, 5\)'):
        layer(torch.randn(2, 4, 5, 5))
    with pytest.raises(ValueError, match=r'got \(2, 8\)'):
        layer(torch.randn(2, 8))


# ---------- group norm from scratch, and which layers cancel a bias ----------
from functools import partial
from miniai.batchnorm import GroupNorm
from miniai.conv import conv


@pytest.mark.parametrize('groups', [1, 2, 3, 6])
def test_group_norm_matches_pytorch(groups):
    torch.manual_seed(groups)
    x = torch.randn(4, 6, 3, 5) * torch.arange(1., 7.)[:, None, None] - 3
    ours, theirs = GroupNorm(groups, 6, eps=1e-3), nn.GroupNorm(groups, 6, eps=1e-3)
    with torch.no_grad():
        theirs.weight.uniform_(0.5, 2); theirs.bias.normal_()
        ours.mults.copy_(theirs.weight[:, None, None]); ours.adds.copy_(theirs.bias[:, None, None])
    xa, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
    oa, ot = ours(xa), theirs(xt)
    assert close(oa, ot, 1e-4)
    w = torch.randn_like(oa)
    (oa * w).sum().backward(); (ot * w).sum().backward()
    assert close(xa.grad, xt.grad, 1e-4) and close(ours.adds.grad.flatten(), theirs.bias.grad, 1e-4)
    assert close(ours(x[1:2]), oa[1:2].detach(), 1e-5)      # no dependence on the rest of the batch


def test_group_norm_ends_are_layer_and_instance_norm():
    x = torch.randn(3, 4, 5, 5) * 2 + 1
    assert close(GroupNorm(1, 4)(x), LayerNorm(4)(x), 1e-5)
    assert close(GroupNorm(4, 4)(x), InstanceNorm(4)(x), 1e-5)
    assert not close(GroupNorm(2, 4)(x), LayerNorm(4)(x), 1e-2)


def test_group_norm_bad_input():
    with pytest.raises(ValueError, match='divides 6'): GroupNorm(4, 6)
    with pytest.raises(ValueError, match='divides 6'): GroupNorm(0, 6)
    with pytest.raises(ValueError, match=r'GroupNorm\(nf=6\) expects'): GroupNorm(2, 6)(torch.randn(2, 4, 3, 3))


@pytest.mark.parametrize('norm,cancels', [(BatchNorm, True), (RunningBatchNorm, True), (InstanceNorm, True),
                                          (LayerNorm, False), (partial(GroupNorm, 4), False), (partial(GroupNorm, 8), True)])
def test_which_norms_cancel_a_bias(norm, cancels):
    assert (conv(3, 8, norm=norm)[0].bias is None) == cancels
    # the claim itself: with a bias forced in, shifting it per channel changes the output only where it is not
    # cancelled (fresh layers, so a running batch norm's statistics are those of this batch)
    import copy
    torch.manual_seed(0)
    c = conv(3, 8, norm=norm, act=None, bias=True)
    shifted = copy.deepcopy(c)
    with torch.no_grad(): shifted[0].bias += torch.linspace(-2, 2, 8)
    x = torch.randn(4, 3, 6, 6)
    changed = (shifted(x) - c(x)).abs().max().item()
    assert (changed < 1e-3) == cancels
