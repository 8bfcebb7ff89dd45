"""Fixtures shared by the test files."""
from functools import partial

import numpy as np
import pytest
import torch

from miniai.data import write_idx
from miniai.learner import CancelFitException, run_cbs

# ---------- data: small MNIST-format folders and a private cache (tests/test_data.py, test_datasets.py, test_train.py) ----------

def make_idx_folder(folder, n_train=12, n_test=5, gz=True, seed=0, h=28, w=28) -> dict:
    "Four IDX files in `folder`; image i of each split has i in its top-left pixel, so items can be told apart."
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n in (('train', n_train), ('t10k', n_test)):
        ims = rng.integers(0, 256, (n, h, w), dtype=np.uint8)
        ims[:, 0, 0] = np.arange(n)
        lbls = ((np.arange(n) + seed) % 10).astype(np.uint8)
        sfx = '.gz' if gz else ''
        write_idx(folder/f'{prefix}-images-idx3-ubyte{sfx}', ims)
        write_idx(folder/f'{prefix}-labels-idx1-ubyte{sfx}', lbls)
        arrays[prefix] = (ims, lbls)
    return arrays

@pytest.fixture
def idx_folder():
    "`make_idx_folder(folder, n_train=12, n_test=5, gz=True, seed=0, h=28, w=28)`: write a tiny IDX dataset, return its arrays."
    return make_idx_folder

@pytest.fixture
def cache(tmp_path, monkeypatch):
    "A private, empty miniai cache folder for one test (`$MINIAI_CACHE` points at it)."
    d = tmp_path/'cache'
    monkeypatch.setenv('MINIAI_CACHE', str(d))
    return d

# ---------- training: tiny data, a tiny model, and the lesson's smaller Learner (test_learner.py, test_activations.py, ...) ----------

def make_tiny_dls(n_train=8, n_valid=4, bs=4, x_shape=(3,), n_classes=None, shuffle=False, seed=0):
    """Random inputs of `x_shape` in `DataLoaders`. Targets: `x @ w` for a fixed `w` (regression) or, with `n_classes`,
    the argmax of a fixed linear map of `x`, so that a linear model can learn them."""
    from torch.utils.data import DataLoader, TensorDataset
    from miniai.datasets import DataLoaders
    g = torch.Generator().manual_seed(seed)
    n_in = int(np.prod(x_shape))
    w = torch.randn(n_in, n_classes or 1, generator=g)
    def ds(n):
        x = torch.randn(n, *x_shape, generator=g)
        y = x.flatten(1) @ w
        return TensorDataset(x, y.argmax(1) if n_classes else y)
    return DataLoaders(DataLoader(ds(n_train), bs, shuffle=shuffle), DataLoader(ds(n_valid), bs))

@pytest.fixture
def tiny_dls():
    "`make_tiny_dls(n_train=8, n_valid=4, bs=4, x_shape=(3,), n_classes=None, shuffle=False, seed=0)`: tiny `DataLoaders`."
    return make_tiny_dls

class LessonLearner:
    "A Learner as lesson 15 first writes one: fit, epoch and batch events only, no cleanup events, steps found by `__getattr__`."
    def __init__(self, model, dls, loss_func, lr, cbs, opt_func=torch.optim.SGD):
        self.model, self.dls, self.loss_func, self.lr, self.cbs, self.opt_func = model, dls, loss_func, lr, cbs, opt_func
    def __getattr__(self, name):
        if name in ('predict', 'get_loss', 'backward', 'step', 'zero_grad'): return partial(self.callback, name)
        raise AttributeError(name)
    def callback(self, nm): run_cbs(self.cbs, nm, self)
    def fit(self, n_epochs):
        self.epochs, self.opt = range(n_epochs), self.opt_func(self.model.parameters(), self.lr)
        try:
            self.callback('before_fit')
            for self.epoch in self.epochs:
                for self.training in (True, False):
                    self.model.train(self.training)
                    self.dl = self.dls.train if self.training else self.dls.valid
                    self.callback('before_epoch')
                    with torch.set_grad_enabled(self.training):
                        for self.iter, self.batch in enumerate(self.dl):
                            self.callback('before_batch')
                            self.predict(); self.get_loss()
                            if self.training: self.backward(); self.step(); self.zero_grad()
                            self.callback('after_batch')
                    self.callback('after_epoch')
            self.callback('after_fit')
        except CancelFitException: pass

@pytest.fixture
def lesson_learner():
    "`LessonLearner(model, dls, loss_func, lr, cbs)`: the lesson's smaller Learner; the training steps come from `TrainCB`."
    return LessonLearner
