"""Behaviour of `miniai.datasets` (the Hugging Face lesson's helpers) that would clutter the lesson: the collate
helpers, `inplace` (both pickle), the image grid, `DataLoaders.from_dd` and `decoded_dls` (also with workers started
by `spawn`). Data sources and the cache are in test_data.py."""
import os
os.environ.setdefault('MPLBACKEND', 'Agg')
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from datasets import Dataset

from miniai.datasets import DataLoaders, collate_dict, decoded_dls, inplace, load_fashion_mnist, show_images

# ---------- collate helpers ----------

def small_ds(n=6):
    return Dataset.from_dict({'image': [np.full((2, 2), i, dtype=np.float32) for i in range(n)],
                              'label': list(range(n))})

def test_collate_dict_returns_a_tuple_in_feature_order():
    ds = small_ds()
    b = collate_dict(ds)([ds.with_format('torch')[i] for i in range(3)])
    assert isinstance(b, tuple) and len(b) == 2
    assert b[0].shape == (3, 2, 2) and b[1].tolist() == [0, 1, 2]
    swapped = ds.select_columns(['label', 'image'])
    assert collate_dict(swapped)([{'image': 1, 'label': 2}])[0].tolist() == [2]
    one = collate_dict(ds.select_columns(['label']))([{'label': 4}, {'label': 5}])
    assert isinstance(one, tuple) and len(one) == 1 and one[0].tolist() == [4, 5]

def test_collate_dict_in_a_dataloader():
    ds = small_ds().with_format('torch')
    batches = list(DataLoader(ds, batch_size=4, collate_fn=collate_dict(ds)))
    assert all(isinstance(b, tuple) for b in batches)
    assert [b[1].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5]]

def test_collate_dict_pickles():
    ds = small_ds()
    items = [ds.with_format('torch')[i] for i in range(3)]
    for d in (ds, ds.select_columns(['label'])):
        sent = pickle.loads(pickle.dumps(collate_dict(d)))
        for got, want in zip(sent(items), collate_dict(d)(items), strict=True): assert torch.equal(got, want)

def test_inplace():
    def add_one(b):
        "Add one to `b['a']`."
        b['a'] += 1
    f = inplace(add_one)
    d = {'a': 1}
    assert f(d) is d and d == {'a': 2}
    assert add_one(d) is None
    assert f.__name__ == 'add_one' and f.__doc__ == "Add one to `b['a']`."

def add_two(b):
    "Add two to `b['a']` (module level, so pickle can find it by name)."
    b['a'] += 2

@inplace
def add_three(b): b['a'] += 3

def test_inplace_pickles():
    sent = pickle.loads(pickle.dumps(inplace(add_two)))              # `inplace` and `add_two`, by their names
    d = {'a': 1}
    assert sent(d) is d and d == {'a': 3} and sent.__name__ == 'add_two'
    assert pickle.loads(pickle.dumps(add_three)) is add_three        # a decorated function: by its own name
    assert add_three({'a': 0}) == {'a': 3}
    def local(b): pass
    with pytest.raises((pickle.PicklingError, AttributeError), match='local'):   # nothing could find it by name
        pickle.dumps(inplace(local))

# ---------- images ----------

def test_show_images_draws_and_hides_axes():
    import matplotlib.pyplot as plt
    ims = torch.rand(5, 1, 6, 6)
    show_images(ims, titles=list('abcde'), imsize=1)
    fig = plt.gcf()
    assert len(fig.axes) == 6                                          # a 2x3 grid
    assert [len(ax.images) for ax in fig.axes] == [1]*5 + [0]
    assert [ax.axison for ax in fig.axes] == [False]*6                 # frames off on images, unused axes hidden
    assert [ax.get_title() for ax in fig.axes[:5]] == list('abcde')
    show_images(ims, ncols=5, imsize=1)
    assert len(plt.gcf().axes) == 5
    with pytest.raises(ValueError, match='5 images but 2 titles'): show_images(ims, titles=['a', 'b'])
    plt.close('all')

# ---------- DataLoaders ----------

def to_tensor_tfm(b): b['image'] = [torch.from_numpy(np.array(o, dtype=np.float32)/255)[None] for o in b['image']]

def test_from_dd(tmp_path, cache, idx_folder):
    arrays = idx_folder(tmp_path/'fm', n_train=12, n_test=5)
    dd = load_fashion_mnist(path=tmp_path/'fm').with_transform(inplace(to_tensor_tfm))
    dls = DataLoaders.from_dd(dd, 4)
    assert dls.train.batch_size == 4 and dls.valid.batch_size == 8
    xb, yb = next(iter(dls.valid))
    assert xb.shape == (5, 1, 28, 28)
    torch.testing.assert_close(xb[:, 0], torch.from_numpy(arrays['t10k'][0]).float()/255, rtol=0, atol=0)
    assert yb.tolist() == arrays['t10k'][1].tolist()
    b = next(iter(DataLoaders.from_dd(dd, 4, as_tuple=False).valid))
    assert set(b) == {'image', 'label'}

# ---------- decoded_dls ----------

def test_decoded_dls_batches(tmp_path, cache, idx_folder):
    arrays = idx_folder(tmp_path/'fm', n_train=12, n_test=5)
    dd = load_fashion_mnist(path=tmp_path/'fm')
    dls = decoded_dls(dd, 5)
    vb = list(dls.valid)
    assert len(vb) == 1 and vb[0][0].shape == (5, 1, 28, 28)           # valid batch size doubled: all 5 in one
    assert vb[0][0].dtype == torch.float32 and vb[0][1].dtype == torch.int64
    torch.testing.assert_close(vb[0][0][:, 0], torch.from_numpy(arrays['t10k'][0]).float()/255, rtol=0, atol=0)
    assert vb[0][1].tolist() == arrays['t10k'][1].tolist()
    torch.manual_seed(1)
    tb = list(dls.train)
    assert [len(y) for _, y in tb] == [5, 5, 2]                        # the last, short batch is kept
    ids = torch.cat([(x[:, 0, 0, 0]*255).round().long() for x, _ in tb])
    assert sorted(ids.tolist()) == list(range(12)) and ids.tolist() != list(range(12))   # each item once, shuffled
    assert next(iter(decoded_dls(dd, 5, flat=True).valid))[0].shape == (5, 784)

def test_workers_under_spawn_get_the_same_batches(tmp_path, cache, idx_folder):
    "Workers started by `spawn` (macOS's and Windows' way) receive everything by pickle; their batches are those of no workers."
    idx_folder(tmp_path/'fm', n_train=12, n_test=5)
    dd = load_fashion_mnist(path=tmp_path/'fm')
    tdd = dd.with_transform(inplace(to_tensor_tfm))                   # a worker imports this test module to find it
    spawn = dict(num_workers=2, multiprocessing_context='spawn', timeout=120)
    for make in (lambda **kw: DataLoaders.from_dd(tdd, 4, **kw), lambda **kw: decoded_dls(dd, 4, **kw)):
        plain, workers = make(), make(**spawn)
        for dl in (workers.train, workers.valid):
            assert dl.num_workers == 2 and dl.multiprocessing_context.get_start_method() == 'spawn'
        torch.manual_seed(0)
        want = list(plain.train)
        torch.manual_seed(0)
        got = list(workers.train)
        assert len(got) == len(want) == 3
        for (gx, gy), (wx, wy) in zip(got, want, strict=True):
            assert torch.equal(gx, wx) and torch.equal(gy, wy)
        ids = torch.cat([(x[:, 0, 0, 0]*255).round().long() for x, _ in got])
        assert sorted(ids.tolist()) == list(range(12)) and ids.tolist() != list(range(12))   # shuffled, each item once

def test_decoded_dls_same_as_per_item_path(tmp_path, cache, idx_folder):
    idx_folder(tmp_path/'fm', n_train=12, n_test=9)
    dd = load_fashion_mnist(path=tmp_path/'fm')
    slow = DataLoaders.from_dd(dd.with_transform(inplace(to_tensor_tfm)), 2)
    fast = decoded_dls(dd.with_transform(inplace(to_tensor_tfm)), 2)   # the transform is ignored: stored pixels are read
    for (fx, fy), (sx, sy) in zip(fast.valid, slow.valid, strict=True):
        assert torch.equal(fx, sx) and torch.equal(fy, sy)


@pytest.mark.parametrize('cuda', [True, False])
def test_dataloaders_pin_memory_only_when_cuda_is_available(tmp_path, cache, idx_folder, monkeypatch, cuda):
    "Batches bound for a GPU come from pinned memory (so `to_device`'s non_blocking copies run without waiting); a caller's choice wins."
    from miniai.training import get_dls
    from miniai.data import BatchDataset, batch_dl
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
    idx_folder(tmp_path/'fm')
    dd = load_fashion_mnist(path=tmp_path/'fm')
    x, y = torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64)
    made = [*get_dls(dd['train'], dd['test'], 2), batch_dl(BatchDataset(x, y), 2)]
    for dls in (DataLoaders.from_dd(dd, 2), decoded_dls(dd, 2)): made += [dls.train, dls.valid]
    assert [dl.pin_memory for dl in made] == [cuda]*len(made)
    assert not decoded_dls(dd, 2, pin_memory=False).train.pin_memory
    assert not get_dls(dd['train'], dd['test'], 2, pin_memory=False)[1].pin_memory
