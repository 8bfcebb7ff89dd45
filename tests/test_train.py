"The main job's recipe: `train` with extra callbacks; the accuracy it returns is the model's on the validation images."
import pytest
import torch
from datasets import DatasetDict

from miniai.datasets import load_fashion_mnist
from miniai.learner import RecorderCB
from miniai.train import train, input_stats


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
