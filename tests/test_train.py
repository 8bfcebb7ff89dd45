"The main job's recipes: `train` with extra callbacks, the recipe registry, each recipe's learner, augmentation and TTA."
import pytest
import torch
from datasets import DatasetDict
from torch import nn

from miniai.datasets import load_fashion_mnist, decoded_dls
from miniai.learner import RecorderCB, BatchSchedCB, MetricsCB, DeviceCB, NonFiniteGuardCB
from miniai.init import BatchTransformCB
from miniai.train import train, input_stats, get_learner, get_recipe, recipes_help, RECIPES, crop_flip, FlipTTA, cnn_model
import miniai.checkpoint   # noqa: F401  (adds `Learner.get_preds`, which `miniai_eval` uses)


@pytest.fixture(scope='module')
def small():
    dsd = load_fashion_mnist()
    return DatasetDict(train=dsd['train'].select(range(256)), test=dsd['test'].select(range(128)))


def test_train_runs_extra_callbacks_and_returns_the_validation_accuracy(small):
    rec = RecorderCB(lr=lambda cb: cb.pg['lr'])
    learn, acc = train(epochs=1, bs=64, dd=small, nfs=(1, 8, 16, 32, 64), progress=False, cbs=[rec])
    assert len(rec.recs['lr']) == 256//64   # the extra callback ran on every training batch
    # The accuracy train returns, counted again by hand from the model's predictions on the validation images
    mean, std = input_stats(learn.dls)
    model = learn.model.eval()
    with torch.no_grad():
        hits = sum((model((xb - mean)/std).argmax(1) == yb).sum().item() for xb, yb in learn.dls.valid)
    assert acc == pytest.approx(hits/128, abs=1e-6)
    assert acc > 0.25  # ten classes: guessing gives 0.1


def test_train_rejects_zero_epochs_and_unknown_norms(small):
    with pytest.raises(ValueError, match='at least 1'): train(epochs=0, dd=small)
    with pytest.raises(ValueError, match='not one of batch, layer, running, none'): train(epochs=1, dd=small, norm='group')


def test_unknown_recipe_or_setting_gives_an_error_that_lists_what_there_is(small):
    names = ', '.join(RECIPES)
    with pytest.raises(ValueError, match=f"recipe 'fast' is unknown; the recipes are: {names}"): get_recipe('fast')
    with pytest.raises(ValueError, match=f"the recipes are: {names}"): train(epochs=1, dd=small, recipe='fast')
    with pytest.raises(ValueError, match="recipe 'default' has no setting epoch; its settings are: help, "):
        get_recipe('default', epoch=3)


def test_recipe_settings_are_replaced_only_where_given():
    r = get_recipe('resnet', epochs=20, lr=None)
    assert r['epochs'] == 20 and r['lr'] == RECIPES['resnet']['lr'] and r['name'] == 'resnet'
    # the table itself is unchanged:
    assert get_recipe('resnet')['epochs'] == RECIPES['resnet']['epochs']
    for name, recipe in RECIPES.items():   # each says what it costs and what it reaches
        assert 'test' in recipe['help'] and ('s ' in recipe['help'] or 'minute' in recipe['help']), name
    assert recipes_help().splitlines() == [f"{name}: {r['help']}" for name, r in RECIPES.items()]


@pytest.mark.parametrize('name', list(RECIPES))
def test_each_recipes_learner_has_the_recipes_callbacks_and_model(small, name):
    dls = decoded_dls(small, 64)
    learn = get_learner(dls, epochs=2, progress=False, recipe=name)
    kinds = [type(cb) for cb in learn.cbs]
    for kind in (DeviceCB, MetricsCB, BatchSchedCB): assert kinds.count(kind) == 1, (name, kind)
    assert kinds.count(NonFiniteGuardCB) == 1, name   # a NaN or infinite loss stops the fit with a clear error
    augments = [cb for cb in learn.cbs if isinstance(cb, BatchTransformCB) and cb.tfm.__name__ == '_crop_flip']
    assert len(augments) == (1 if RECIPES[name]['pad'] or RECIPES[name]['flip'] else 0)
    assert all(cb.on_train and not cb.on_valid for cb in augments)   # the test images are never augmented
    assert isinstance(learn.model, FlipTTA) == RECIPES[name]['tta']
    assert learn.model.eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    # One-cycle over all the epochs' batches, peaking at the recipe's learning rate
    sched = next(cb for cb in learn.cbs if isinstance(cb, BatchSchedCB)).sched
    learn.opt = learn.opt_func(learn.model.parameters(), learn.lr)
    s = sched(learn.opt)
    assert s.total_steps == 2*len(dls.train) and learn.opt.param_groups[0]['max_lr'] == RECIPES[name]['lr']


def test_crop_flip_keeps_shape_and_only_shifts_and_mirrors():
    torch.manual_seed(0)
    xb, yb = torch.rand(64, 1, 28, 28), torch.arange(64)
    out, y = crop_flip(pad=0)((xb, yb))
    same, mirrored = ((out == x).flatten(1).all(1) for x in (xb, xb.flip(-1)))
    assert (same | mirrored).all() and same.any() and mirrored.any() and (y == yb).all()
    pad = 2
    out, _ = crop_flip(pad=pad)((xb, yb))
    assert out.shape == xb.shape
    padded = torch.nn.functional.pad(xb, (pad,)*4)
    for i in range(len(xb)):   # each output is a 28x28 window of its padded image, or that window mirrored
        windows = [padded[i, :, dy:dy+28, dx:dx+28] for dy in range(2*pad+1) for dx in range(2*pad+1)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows), i


def test_tta_is_the_mean_of_the_two_predictions_and_miniai_eval_gets_it(small):
    torch.manual_seed(0)
    tta, xb = FlipTTA(cnn_model((1, 8, 16, 32, 64))), torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        tta.train(); assert torch.equal(tta(xb), tta.model(xb))   # training: the model unchanged
        tta.eval()
        torch.testing.assert_close(tta(xb), (tta.model(xb) + tta.model(xb.flip(-1)))/2)
    # A TTA recipe's get_preds (what `miniai_eval` reports) is the mean of the inner model's two predictions
    learn = get_learner(decoded_dls(small, 64), epochs=1, progress=False, stats=(0., 1.), nfs=(1, 8, 16, 32, 64), tta=True)
    assert isinstance(learn.model, FlipTTA)
    preds, targs = learn.get_preds()
    inner = learn.model.model.eval()
    with torch.no_grad():
        want = torch.cat([(inner(x) + inner(x.flip(-1)))/2 for x, _ in learn.dls.valid])
    torch.testing.assert_close(preds, want)
