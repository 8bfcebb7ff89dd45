"""Tests of miniai.augment: the augmentations' properties (flip, crop, erase, copy), test-time augmentation against
the mean of two hand-made predictions, captured predictions against predictions by hand, and show_image_batch
taking no step."""
import random
import pytest
import torch
import torch.nn.functional as F
from torch import nn
import matplotlib
matplotlib.use('Agg')
from miniai.datasets import DataLoaders
from miniai.learner import TrainLearner
from miniai.init import BatchTransformCB
from miniai.augment import (summary, hflip, rand_flip, rand_crop, tfm_batch, rand_erase, RandErase, rand_copy, RandCopy,
                            CapturePreds, capture_preds, show_image_batch, tta_preds)
import miniai.resnet


def batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 2, 10, 12, generator=g)


def test_summary_is_resnets():
    assert summary is miniai.resnet.summary


def test_flip_twice_is_identity_and_rand_flip_picks_per_image():
    x = batch()
    assert torch.equal(hflip(hflip(x)), x)
    assert torch.equal(hflip(x)[..., 0], x[..., -1])
    torch.manual_seed(0)
    f = rand_flip(x)
    kinds = [torch.equal(f[i], x[i]) for i in range(len(x))]
    assert all(torch.equal(f[i], x[i]) or torch.equal(f[i], hflip(x[i])) for i in range(len(x)))
    assert torch.equal(rand_flip(x, p=1.), hflip(x)) and torch.equal(rand_flip(x, p=0.), x)
    torch.manual_seed(0)
    many = rand_flip(batch(64))
    flipped = sum(not torch.equal(a, b) for a, b in zip(many, batch(64)))
    assert 10 < flipped < 54                               # each image drawn on its own


def test_crop_keeps_shape_and_pixels_and_is_a_window():
    x = batch()
    assert torch.equal(rand_crop(x, pad=0), x)
    torch.manual_seed(1)
    c = rand_crop(x, pad=2)
    assert c.shape == x.shape
    p = F.pad(x, (2, 2, 2, 2))
    for k in range(len(x)):
        assert any(torch.equal(c[k], p[k, :, i:i+10, j:j+12]) for i in range(5) for j in range(5))


def changed_within_box(orig, new, bh, bw):
    for o, n in zip(orig, new):
        rs, cs = torch.nonzero((o != n).any(0), as_tuple=True)
        if len(rs) and (rs.max() - rs.min() >= bh or cs.max() - cs.min() >= bw): return False
    return True


def test_rand_erase_changes_only_boxes_with_batch_statistics():
    random.seed(0); torch.manual_seed(0)
    x = torch.randn(32, 1, 20, 20)
    erased = []
    for _ in range(10):
        e = rand_erase(x, pct=0.2, max_num=1)
        assert e.shape == x.shape and changed_within_box(x, e, 4, 4)
        erased.append(e[e != x])
    px = torch.cat(erased)
    assert len(px) > 0 and px.min() >= x.min() and px.max() <= x.max()
    assert abs(px.mean() - x.mean()) < 0.15 and 0.8 < px.std() / x.std() < 1.1
    many = rand_erase(x, pct=0.2, max_num=4)                 # at most 4 boxes of 4x4 per image
    assert ((many != x).flatten(1).sum(1) <= 4 * 16).all()
    x0 = x.clone(); RandErase(0.2, 4)(x); assert torch.equal(x, x0)   # the input is left alone


def test_rand_copy_changes_only_boxes_with_the_images_own_pixels():
    random.seed(1); torch.manual_seed(1)
    x = torch.randn(16, 3, 15, 20)
    for _ in range(10):
        c = rand_copy(x, pct=0.2, max_num=1)
        assert c.shape == x.shape and changed_within_box(x, c, 3, 4)
        for ci, xi in zip(c, x):
            for ch in range(3): assert set(ci[ch].flatten().tolist()) <= set(xi[ch].flatten().tolist())
    changed = (RandCopy(0.2, 4)(x) != x).any(1).flatten(1).sum(1)
    assert (changed <= 4 * 12).all()


def tiny_learner():
    torch.manual_seed(0)
    xs, ys = torch.randn(20, 1, 6, 6), torch.randint(0, 3, (20,))
    valid = [(xs[i:i+8], ys[i:i+8]) for i in range(0, 20, 8)]
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    learn = TrainLearner(model, DataLoaders(valid, valid), F.cross_entropy, lr=0.1,
                         cbs=[BatchTransformCB(lambda b: (b[0] * 2, b[1]))])
    return learn, xs, ys


def test_capture_preds_matches_predictions_by_hand():
    learn, xs, ys = tiny_learner()
    preds, targs, inps = learn.capture_preds(inps=True)
    with torch.no_grad(): expect = learn.model.eval()(xs * 2)
    assert torch.allclose(preds, expect, atol=1e-6) and torch.equal(targs, ys) and torch.equal(inps, xs * 2)
    assert len(learn.capture_preds()) == 2
    cp = CapturePreds(inps=False)
    learn.fit(1, train=False, cbs=cp)
    assert torch.allclose(cp.all_preds, expect, atol=1e-6) and cp.all_inps is None


def test_tta_is_mean_of_the_two_predictions():
    learn, xs, ys = tiny_learner()
    tta, targs = learn.tta_preds()
    with torch.no_grad():
        m = learn.model.eval()
        expect = (m(xs * 2) + m(hflip(xs * 2))) / 2
    assert torch.allclose(tta, expect, atol=1e-6) and torch.equal(targs, ys)


def test_tta_refuses_a_shuffling_validation_loader():
    learn, xs, ys = tiny_learner()
    class Shuffled:
        def __iter__(self):
            perm = torch.randperm(20)
            return iter([(xs[perm[i:i+10]], ys[perm[i:i+10]]) for i in (0, 10)])
        def __len__(self): return 2
    learn.dls = DataLoaders(Shuffled(), Shuffled())
    torch.manual_seed(0)
    with pytest.raises(ValueError, match='must not shuffle'): learn.tta_preds()


def test_tfm_batch():
    x, y = batch(), torch.arange(6)
    tx, ty = tfm_batch((x, y), tfm_x=hflip)
    assert torch.equal(tx, hflip(x)) and torch.equal(ty, y)


def test_show_image_batch_shows_the_transformed_batch_without_a_step():
    learn, xs, ys = tiny_learner()
    before = [p.clone() for p in learn.model.parameters()]
    learn.show_image_batch(max_n=4, cbs=BatchTransformCB(lambda b: (b[0] + 100, b[1])))
    assert all(torch.equal(a, b) for a, b in zip(before, learn.model.parameters()))
    assert torch.allclose(learn.batch[0], xs[:8] * 2 + 100)
