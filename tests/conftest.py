"""Fixtures shared by the test files."""
import numpy as np
import pytest

from miniai.data import write_idx

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
