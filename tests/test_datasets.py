"""Behaviour of `miniai.datasets` that would clutter the lesson: the loader's schema, cache and error paths, the
collate helpers, the image helpers' grid, and the decoded fast path (its cache included)."""
import gzip, os, struct, time
os.environ.setdefault('MPLBACKEND', 'Agg')

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from datasets import ClassLabel, Dataset, Features, Image, Value

import miniai.datasets as mds
from miniai.datasets import (FASHION_MNIST_NAMES, DataLoaders, collate_dict, decode_split, decoded_dls, inplace,
                             load_fashion_mnist, load_idx, read_idx, show_images)

# ---------- helpers: write small MNIST-format IDX folders ----------

def idx_bytes(arr: np.ndarray) -> bytes:
    "The IDX encoding of a uint8 array: magic (0, 0, 8, ndim), big-endian sizes, then the bytes."
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    return bytes([0, 0, 8, arr.ndim]) + struct.pack(f'>{arr.ndim}I', *arr.shape) + arr.tobytes()

def write_idx(fn, arr, gz=True):
    data = idx_bytes(arr)
    if gz: fn.write_bytes(gzip.compress(data))
    else: fn.write_bytes(data)
    return fn

def make_idx_folder(folder, n_train=12, n_test=5, gz=True, seed=0, h=28, w=28):
    "Four IDX files in `folder`; image i of the training set has i in its top-left pixel, so items can be told apart."
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n in (('train', n_train), ('t10k', n_test)):
        ims = rng.integers(0, 256, (n, h, w), dtype=np.uint8)
        ims[:, 0, 0] = np.arange(n)
        lbls = (np.arange(n) + seed) % 10
        sfx = '.gz' if gz else ''
        write_idx(folder/f'{prefix}-images-idx3-ubyte{sfx}', ims, gz)
        write_idx(folder/f'{prefix}-labels-idx1-ubyte{sfx}', lbls.astype(np.uint8), gz)
        arrays[prefix] = (ims, lbls)
    return arrays

@pytest.fixture
def cache(tmp_path, monkeypatch):
    "A private, empty miniai cache folder for one test."
    d = tmp_path/'cache'
    monkeypatch.setenv('MINIAI_CACHE', str(d))
    return d

def cache_entries(cache):
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []

# ---------- the real Fashion-MNIST ----------

def test_fashion_mnist_schema():
    dd = load_fashion_mnist()
    assert list(dd) == ['train', 'test']
    assert (dd['train'].num_rows, dd['test'].num_rows) == (60000, 10000)
    for split in dd.values():
        assert list(split.features) == ['image', 'label']
        assert isinstance(split.features['image'], Image)
        assert isinstance(split.features['label'], ClassLabel)
        assert split.features['label'].names == FASHION_MNIST_NAMES
    assert len(FASHION_MNIST_NAMES) == 10
    first = dd['train'][0]
    assert first['label'] == 9
    assert dd['train'].features['label'].int2str(first['label']) == 'Ankle boot'
    assert first['image'].size == (28, 28) and first['image'].mode == 'L'

# ---------- reading IDX files and the cache ----------

def test_load_idx_reads_any_mnist_format_folder(tmp_path, cache):
    arrays = make_idx_folder(tmp_path/'digits', gz=False)           # uncompressed files, as some mirrors ship them
    dd = load_idx(tmp_path/'digits')
    assert list(dd) == ['train', 'test']
    assert dd['train'].features['label'].names == [str(i) for i in range(10)]
    for split, prefix in (('train', 'train'), ('test', 't10k')):
        ims, lbls = arrays[prefix]
        assert dd[split].num_rows == len(ims)
        assert dd[split]['label'][:] == lbls.tolist()
        for i in (0, len(ims)-1): np.testing.assert_array_equal(np.array(dd[split][i]['image']), ims[i])

def test_path_argument_uses_fashion_names(tmp_path, cache):
    make_idx_folder(tmp_path/'fm')
    dd = load_fashion_mnist(path=tmp_path/'fm')
    assert dd['train'].features['label'].names == FASHION_MNIST_NAMES
    assert dd['train'].num_rows == 12

def test_env_var_folder_is_used(tmp_path, cache, monkeypatch):
    make_idx_folder(tmp_path/'fm', n_train=7)
    monkeypatch.setenv('MINIAI_FASHION_MNIST', str(tmp_path/'fm'))
    assert load_fashion_mnist(hub=False)['train'].num_rows == 7

def test_cache_is_fast_and_rebuilds_when_a_source_changes(tmp_path, cache):
    folder = tmp_path/'fm'
    make_idx_folder(folder)
    dd1 = load_idx(folder, FASHION_MNIST_NAMES)
    assert len(cache_entries(cache)) == 1
    t = time.perf_counter()
    dd2 = load_idx(folder, FASHION_MNIST_NAMES)
    assert time.perf_counter() - t < 1
    assert len(cache_entries(cache)) == 1                              # reused, not rebuilt
    assert dd2['train']['label'][:] == dd1['train']['label'][:]
    # Replace the training labels: the cache must notice and convert again.
    new_labels = np.full(12, 3, dtype=np.uint8)
    fn = write_idx(folder/'train-labels-idx1-ubyte.gz', new_labels)
    st = fn.stat(); os.utime(fn, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    dd3 = load_idx(folder, FASHION_MNIST_NAMES)
    assert dd3['train']['label'][:] == [3]*12
    assert len(cache_entries(cache)) == 2

# ---------- errors ----------

def test_nothing_found_names_every_way(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(mds, 'DEBIAN_FASHION_MNIST', tmp_path/'not-installed')
    monkeypatch.delenv('MINIAI_FASHION_MNIST', raising=False)
    with pytest.raises(FileNotFoundError) as e: load_fashion_mnist(hub=False)
    msg = str(e.value)
    for part in ('apt-get install dataset-fashion-mnist', 'MINIAI_FASHION_MNIST', "path=", 'hub',
                 str(tmp_path/'not-installed')):
        assert part in msg, part
    assert cache_entries(cache) == []

def test_offline_hub_gives_the_same_error(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(mds, 'DEBIAN_FASHION_MNIST', tmp_path/'not-installed')
    monkeypatch.setenv('MINIAI_FASHION_MNIST', str(tmp_path/'empty-env-folder'))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    with pytest.raises(FileNotFoundError, match='apt-get install dataset-fashion-mnist') as e: load_fashion_mnist()
    assert str(tmp_path/'empty-env-folder') in str(e.value)

def test_given_path_without_the_files(tmp_path, cache):
    (tmp_path/'empty').mkdir()
    make_idx_folder(tmp_path/'partial')
    (tmp_path/'partial'/'t10k-labels-idx1-ubyte.gz').unlink()
    for folder in (tmp_path/'empty', tmp_path/'partial', tmp_path/'missing'):
        with pytest.raises(FileNotFoundError, match='IDX') as e: load_fashion_mnist(path=folder)
        assert str(folder) in str(e.value)
    assert cache_entries(cache) == []

@pytest.mark.parametrize('damage, message', [
    ('cut_gzip',    'could not be read as gzip'),
    ('not_gzip',    'could not be read as gzip'),
    ('not_idx',     'not an IDX file'),
    ('short_data',  'truncated'),
    ('short_header','truncated'),
    ('mismatch',    'do not pair up'),
])
def test_damaged_file_gives_clear_error_and_no_cache(tmp_path, cache, damage, message):
    folder = tmp_path/'fm'
    arrays = make_idx_folder(folder)
    fn = folder/'train-images-idx3-ubyte.gz'
    good = idx_bytes(arrays['train'][0])
    if damage == 'cut_gzip':     fn.write_bytes(gzip.compress(good)[:200])
    if damage == 'not_gzip':     fn.write_bytes(b'<html>404 not found</html>')
    if damage == 'not_idx':      fn.write_bytes(gzip.compress(b'hello, this is not IDX'))
    if damage == 'short_data':   fn.write_bytes(gzip.compress(good[:-100]))
    if damage == 'short_header': fn.write_bytes(gzip.compress(good[:9]))
    if damage == 'mismatch':     write_idx(fn, arrays['train'][0][:5])
    with pytest.raises(ValueError, match=message): load_fashion_mnist(path=folder)
    assert cache_entries(cache) == []                                  # nothing half-written left behind
    with pytest.raises(ValueError, match=message): load_fashion_mnist(path=folder)   # and it fails the same again

def test_read_idx_returns_a_writable_array(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    got = read_idx(write_idx(tmp_path/'a-idx3-ubyte', arr, gz=False))
    np.testing.assert_array_equal(got, arr)
    got[0, 0, 0] = 7                                                   # torch.from_numpy needs no copy and no warning

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

def test_inplace():
    def add_one(b):
        "Add one to `b['a']`."
        b['a'] += 1
    f = inplace(add_one)
    d = {'a': 1}
    assert f(d) is d and d == {'a': 2}
    assert add_one(d) is None
    assert f.__name__ == 'add_one' and f.__doc__ == "Add one to `b['a']`."

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

def test_from_dd(tmp_path, cache):
    arrays = make_idx_folder(tmp_path/'fm', n_train=12, n_test=5)
    dd = load_fashion_mnist(path=tmp_path/'fm').with_transform(inplace(to_tensor_tfm))
    dls = DataLoaders.from_dd(dd, 4)
    assert dls.train.batch_size == 4 and dls.valid.batch_size == 8
    xb, yb = next(iter(dls.valid))
    assert xb.shape == (5, 1, 28, 28)
    torch.testing.assert_close(xb[:, 0], torch.from_numpy(arrays['t10k'][0]).float()/255, rtol=0, atol=0)
    assert yb.tolist() == arrays['t10k'][1].tolist()
    b = next(iter(DataLoaders.from_dd(dd, 4, as_tuple=False).valid))
    assert set(b) == {'image', 'label'}

# ---------- the decoded fast path ----------

def test_decoded_dls_batches(tmp_path, cache):
    arrays = make_idx_folder(tmp_path/'fm', n_train=12, n_test=5)
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
    flat = decoded_dls(dd, 5, flat=True)
    assert next(iter(flat.valid))[0].shape == (5, 784)

def test_decoded_dls_same_as_per_item_path(tmp_path, cache):
    make_idx_folder(tmp_path/'fm', n_train=12, n_test=9)
    dd = load_fashion_mnist(path=tmp_path/'fm')
    slow = DataLoaders.from_dd(dd.with_transform(inplace(to_tensor_tfm)), 2)
    fast = decoded_dls(dd.with_transform(inplace(to_tensor_tfm)), 2)   # the transform is ignored: stored pixels are read
    for (fx, fy), (sx, sy) in zip(fast.valid, slow.valid, strict=True):
        assert torch.equal(fx, sx) and torch.equal(fy, sy)

def test_decoded_cache_is_used_and_keyed(tmp_path, cache, monkeypatch):
    make_idx_folder(tmp_path/'a', seed=0)
    make_idx_folder(tmp_path/'b', seed=1)
    da, db = load_idx(tmp_path/'a'), load_idx(tmp_path/'b')
    xa, ya = decode_split(da['train'])
    files = list((cache/'decoded').glob('*.pt'))
    assert len(files) == 1 and not list((cache/'decoded').glob('*.tmp*'))
    # A second decode reads the file: decoding itself is not called again.
    def no_decoding(*args, **kwargs): raise AssertionError('decoded again instead of reading the cache')
    monkeypatch.setattr(mds, '_decode_images', no_decoding)
    xa2, ya2 = decode_split(da['train'])
    assert torch.equal(xa2, xa) and torch.equal(ya2, ya)
    monkeypatch.undo()
    monkeypatch.setenv('MINIAI_CACHE', str(cache))
    # Other data, or the same data in another order, gets its own entry.
    xb, yb = decode_split(db['train'])
    assert not torch.equal(yb, ya)
    shuffled = da['train'].shuffle(seed=3)
    xs, ys = decode_split(shuffled)
    assert ys.tolist() == shuffled['label'][:] and ys.tolist() != ya.tolist()
    assert len(list((cache/'decoded').glob('*.pt'))) == 3

def test_decoded_cache_damaged_file_is_rebuilt(tmp_path, cache):
    make_idx_folder(tmp_path/'a')
    ds = load_idx(tmp_path/'a')['test']
    x, y = decode_split(ds)
    (fn,) = (cache/'decoded').glob('*.pt')
    fn.write_bytes(fn.read_bytes()[:100])
    x2, y2 = decode_split(ds)
    assert torch.equal(x2, x) and torch.equal(y2, y)

IMAGE_FEATURES = Features({'image': Image(), 'label': Value('int64')})

def test_in_memory_dataset_is_decoded_but_not_cached(cache):
    ds = Dataset.from_dict({'image': [np.full((4, 3), i, dtype=np.uint8) for i in range(3)], 'label': [0, 1, 2]},
                           features=IMAGE_FEATURES)
    x, y = decode_split(ds)
    assert x.shape == (3, 1, 4, 3) and x[2].unique().tolist() == [2] and y.tolist() == [0, 1, 2]
    assert not (cache/'decoded').exists()

def test_decode_split_colour_images_channels_first(cache):
    ims = [np.random.default_rng(i).integers(0, 256, (4, 5, 3), dtype=np.uint8) for i in range(2)]
    ds = Dataset.from_dict({'image': ims, 'label': [0, 1]}, features=IMAGE_FEATURES)
    x, _ = decode_split(ds)
    assert x.shape == (2, 3, 4, 5)
    assert torch.equal(x[1], torch.from_numpy(ims[1]).permute(2, 0, 1))
