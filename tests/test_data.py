"""Behaviour of `miniai.data` that would clutter the lesson: the loader's schema, sources and error paths, the cache
(hits proved by the converter or decoder not being called), the hub fallback, and the decoded fast path's pieces."""
import gzip, os

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Image, Value
from datasets.exceptions import DatasetNotFoundError

import miniai.data as md
from miniai.data import (FASHION_MNIST_NAMES, BatchDataset, batch_dl, cached, content_key, decode_split, from_hub,
                         load_fashion_mnist, load_idx, read_idx, write_idx)

def cache_entries(cache, kind=''):
    return sorted(p.name for p in cache.iterdir() if p.name.startswith(kind)) if cache.exists() else []

def count_calls(monkeypatch, name):
    "Wrap `miniai.data.<name>` so each call is counted; returns the list of calls."
    calls, f = [], getattr(md, name)
    monkeypatch.setattr(md, name, lambda *args, **kwargs: calls.append(args) or f(*args, **kwargs))
    return calls

# ---------- the real Fashion-MNIST ----------

def test_fashion_mnist_schema_and_info():
    dd = load_fashion_mnist()
    assert list(dd) == ['train', 'test']
    assert (dd['train'].num_rows, dd['test'].num_rows) == (60000, 10000)
    for split in dd.values():
        assert list(split.features) == ['image', 'label']
        assert isinstance(split.features['image'], Image)
        assert isinstance(split.features['label'], ClassLabel)
        assert split.features['label'].names == FASHION_MNIST_NAMES
        assert {k: v.num_examples for k, v in split.info.splits.items()} == {'train': 60000, 'test': 10000}
        assert 'Fashion-MNIST' in split.info.description and split.info.license == 'MIT'
    first = dd['train'][0]
    assert first['label'] == 9
    assert dd['train'].features['label'].int2str(first['label']) == 'Ankle boot'
    assert first['image'].size == (28, 28) and first['image'].mode == 'L'

# ---------- reading and writing IDX files ----------

@pytest.mark.parametrize('name', ['a-idx3-ubyte', 'a-idx3-ubyte.gz'])
def test_write_then_read_idx(tmp_path, name):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    got = read_idx(write_idx(tmp_path/name, arr))
    np.testing.assert_array_equal(got, arr)
    got[0, 0, 0] = 7                                                   # writable: torch.from_numpy needs no copy
    assert (gzip.decompress if name.endswith('.gz') else bytes)((tmp_path/name).read_bytes())[:4] == bytes([0, 0, 8, 3])
    with pytest.raises(ValueError, match='unsigned bytes'): write_idx(tmp_path/'b-idx1-ubyte', np.arange(3))

def test_load_idx_reads_any_mnist_format_folder(tmp_path, cache, idx_folder):
    arrays = idx_folder(tmp_path/'digits', gz=False)                  # uncompressed files, as some mirrors ship them
    dd = load_idx(tmp_path/'digits')
    assert list(dd) == ['train', 'test']
    assert dd['train'].features['label'].names == [str(i) for i in range(10)]
    for split, prefix in (('train', 'train'), ('test', 't10k')):
        ims, lbls = arrays[prefix]
        assert dd[split].num_rows == len(ims)
        assert dd[split]['label'][:] == lbls.tolist()
        for i in (0, len(ims)-1): np.testing.assert_array_equal(np.array(dd[split][i]['image']), ims[i])

def test_path_argument_uses_fashion_names(tmp_path, cache, idx_folder):
    idx_folder(tmp_path/'fm')
    dd = load_fashion_mnist(path=tmp_path/'fm')
    assert dd['train'].features['label'].names == FASHION_MNIST_NAMES
    assert dd['train'].num_rows == 12 and dd['train'].info.splits['test'].num_examples == 5

def test_env_var_folder_comes_before_debian(tmp_path, cache, idx_folder, monkeypatch):
    idx_folder(tmp_path/'fm', n_train=7)
    monkeypatch.setenv('MINIAI_FASHION_MNIST', str(tmp_path/'fm'))
    assert load_fashion_mnist(hub=False)['train'].num_rows == 7

def test_fashion_mnist_folder_is_the_one_load_reads(tmp_path, cache, idx_folder, monkeypatch):
    "The folder a lesson reads its IDX files from is the folder `load_fashion_mnist` converts: the variable's, else Debian's."
    monkeypatch.setattr(md, 'DEBIAN_FASHION_MNIST', tmp_path/'debian')
    monkeypatch.delenv('MINIAI_FASHION_MNIST', raising=False)
    assert md.fashion_mnist_folder() is None
    idx_folder(tmp_path/'debian', n_train=9)
    assert md.fashion_mnist_folder() == tmp_path/'debian'
    monkeypatch.setenv('MINIAI_FASHION_MNIST', str(tmp_path/'half'))
    (tmp_path/'half').mkdir()
    (tmp_path/'half'/'train-images-idx3-ubyte.gz').write_bytes(b'')   # one file of four: not a dataset
    assert md.fashion_mnist_folder() == tmp_path/'debian'
    idx_folder(tmp_path/'mine', n_train=7)
    monkeypatch.setenv('MINIAI_FASHION_MNIST', str(tmp_path/'mine'))
    assert md.fashion_mnist_folder() == tmp_path/'mine'
    assert load_fashion_mnist(hub=False)['train'].num_rows == 7

# ---------- the cache ----------

def test_cache_hit_does_not_convert_and_a_changed_source_does(tmp_path, cache, idx_folder, monkeypatch):
    folder = tmp_path/'fm'
    idx_folder(folder)
    converted = count_calls(monkeypatch, '_convert_idx')
    dd1 = load_idx(folder, FASHION_MNIST_NAMES)
    dd2 = load_idx(folder, FASHION_MNIST_NAMES)
    assert len(converted) == 1                                         # the second load read the cache
    assert dd2['train']['label'][:] == dd1['train']['label'][:]
    assert len(cache_entries(cache, 'idx-')) == 1
    # Replace the training labels (with a later modification time): the cache must notice and convert again.
    fn = write_idx(folder/'train-labels-idx1-ubyte.gz', np.full(12, 3, dtype=np.uint8))
    st = fn.stat(); os.utime(fn, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert load_idx(folder, FASHION_MNIST_NAMES)['train']['label'][:] == [3]*12
    assert len(converted) == 2 and len(cache_entries(cache, 'idx-')) == 2

def test_cached_failed_save_leaves_nothing_and_damaged_entry_is_remade(cache):
    made = []
    def make(): made.append(1); return 'value'
    def save(v, p): p.write_text(v)
    def load(p):
        if p.read_text() != 'value': raise ValueError('damaged')
        return p.read_text()
    def failing_save(v, p): p.write_text('half'); raise OSError('disk full')
    with pytest.raises(OSError, match='disk full'): cached('t', [1], make, failing_save, load)
    assert cache_entries(cache) == []                                  # nothing half-written left behind
    assert cached('t', [1], make, save, load) == 'value'
    (entry,) = cache.iterdir()
    entry.write_text('garbage')
    assert cached('t', [1], make, save, load) == 'value' and len(made) == 3   # damaged: made again
    assert cached('t', [1], make, save, load) == 'value' and len(made) == 3   # and then read
    assert cached('t', [2], make, save, load) == 'value' and len(made) == 4   # another key, another entry
    assert len(cache_entries(cache)) == 2

def test_cached_keeps_the_entry_another_process_wrote_first(cache):
    def save_while_another_process_finishes(v, p):
        p.mkdir(); (p/'mine').write_text(v)
        theirs = p.with_name(p.name.split('.tmp')[0].lstrip('.'))      # the entry itself: their rename lands first
        theirs.mkdir(); (theirs/'theirs').write_text('theirs')
    got = cached('t', [1], lambda: 'mine', save_while_another_process_finishes, lambda p: sorted(q.name for q in p.iterdir()))
    assert got == ['theirs'] and len(cache_entries(cache)) == 1        # theirs is used, ours removed

# ---------- errors ----------

def test_nothing_found_names_every_way(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(md, 'DEBIAN_FASHION_MNIST', tmp_path/'not-installed')
    monkeypatch.delenv('MINIAI_FASHION_MNIST', raising=False)
    with pytest.raises(FileNotFoundError) as e: load_fashion_mnist(hub=False)
    for part in ('apt-get install dataset-fashion-mnist', 'MINIAI_FASHION_MNIST', "path=", 'hub',
                 str(tmp_path/'not-installed')):
        assert part in str(e.value), part
    assert cache_entries(cache) == []

def offline(name): raise ConnectionError(f"Couldn't reach '{name}' on the Hub (OfflineModeIsEnabled)")
def not_on_hub(name): raise DatasetNotFoundError(f"Dataset '{name}' doesn't exist on the Hub")
def disk_full(name): raise OSError(28, 'No space left on device')
def bad_cache(name): raise ValueError('the cached download is damaged')

@pytest.mark.parametrize('load', [offline, not_on_hub])
def test_offline_or_missing_hub_gives_the_not_found_error(tmp_path, cache, monkeypatch, load):
    monkeypatch.setattr(md, 'DEBIAN_FASHION_MNIST', tmp_path/'not-installed')
    monkeypatch.setenv('MINIAI_FASHION_MNIST', str(tmp_path/'empty-env-folder'))
    monkeypatch.setattr(md, 'load_dataset', load)
    assert from_hub('x') is None
    with pytest.raises(FileNotFoundError, match='apt-get install dataset-fashion-mnist') as e: load_fashion_mnist()
    assert str(tmp_path/'empty-env-folder') in str(e.value)

@pytest.mark.parametrize('load, error, message', [(disk_full, OSError, 'No space left'),
                                                  (bad_cache, ValueError, 'damaged')])
def test_other_hub_errors_are_raised(tmp_path, cache, monkeypatch, load, error, message):
    monkeypatch.setattr(md, 'DEBIAN_FASHION_MNIST', tmp_path/'not-installed')
    monkeypatch.delenv('MINIAI_FASHION_MNIST', raising=False)
    monkeypatch.setattr(md, 'load_dataset', load)
    with pytest.raises(error, match=message): from_hub('x')
    with pytest.raises(error, match=message): load_fashion_mnist()
    assert from_hub('x', load=lambda name: f'got {name}') == 'got x'

def test_given_path_without_the_files(tmp_path, cache, idx_folder):
    (tmp_path/'empty').mkdir()
    idx_folder(tmp_path/'partial')
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
def test_damaged_file_gives_clear_error_and_no_cache(tmp_path, cache, idx_folder, damage, message):
    folder = tmp_path/'fm'
    arrays = idx_folder(folder)
    fn = folder/'train-images-idx3-ubyte.gz'
    good = gzip.decompress(fn.read_bytes())
    if damage == 'cut_gzip':     fn.write_bytes(gzip.compress(good)[:200])
    if damage == 'not_gzip':     fn.write_bytes(b'<html>404 not found</html>')
    if damage == 'not_idx':      fn.write_bytes(gzip.compress(b'hello, this is not IDX'))
    if damage == 'short_data':   fn.write_bytes(gzip.compress(good[:-100]))
    if damage == 'short_header': fn.write_bytes(gzip.compress(good[:9]))
    if damage == 'mismatch':     write_idx(fn, arrays['train'][0][:5])
    with pytest.raises(ValueError, match=message): load_fashion_mnist(path=folder)
    assert cache_entries(cache) == []                                  # nothing half-written left behind
    with pytest.raises(ValueError, match=message): load_fashion_mnist(path=folder)   # and it fails the same again

# ---------- decoding once ----------

IMAGE_FEATURES = Features({'image': Image(), 'label': Value('int64')})

def image_ds(n=6, seed=0, shape=(4, 3)):
    ims = [np.random.default_rng(seed+i).integers(0, 256, shape, dtype=np.uint8) for i in range(n)]
    return Dataset.from_dict({'image': ims, 'label': list(range(n))}, features=IMAGE_FEATURES), ims

def test_content_key_follows_rows_not_objects():
    ds, _ = image_ds()
    key = content_key(ds, ['image', 'label'])
    assert content_key(ds.with_transform(lambda b: b), ['image', 'label']) == key
    assert content_key(image_ds()[0], ['image', 'label']) == key        # the same data built again
    assert content_key(ds.select(range(6)), ['image', 'label']) == key
    others = [ds.select(range(3)), ds.select(range(3, 6)), ds.shuffle(seed=0), image_ds(seed=1)[0],
              ds.cast_column('label', Value('int32'))]
    keys = [content_key(o, ['image', 'label']) for o in others]
    assert key not in keys and len(set(keys)) == len(keys)

def test_decode_split_is_cached_by_content(tmp_path, cache, idx_folder, monkeypatch):
    idx_folder(tmp_path/'a', seed=0)
    ds = load_idx(tmp_path/'a')['train']
    decoded = count_calls(monkeypatch, '_decode_images')
    # Splits loaded from the cache (not converted now) are decoded once, then read back.
    other = ds.shuffle(seed=3)
    xs, ys = decode_split(other)
    xs2, ys2 = decode_split(other.with_transform(lambda b: b))
    assert len(decoded) == 1 and torch.equal(xs2, xs) and torch.equal(ys2, ys)
    assert ys.tolist() == other['label'][:]
    # Same stored rows in another order, or another contiguous range, get their own entries.
    for part in (ds.select(range(0, 6)), ds.select(range(6, 12))):
        x, y = decode_split(part)
        assert y.tolist() == part['label'][:] and (x[:, 0, 0, 0]).tolist() == np.array(part['image'])[:, 0, 0].tolist()
    assert len(decoded) == 3

def test_load_idx_stores_the_pixels_so_nothing_is_decoded(tmp_path, cache, idx_folder, monkeypatch):
    arrays = idx_folder(tmp_path/'a', n_train=12, n_test=5)
    decoded = count_calls(monkeypatch, '_decode_images')
    dd = load_idx(tmp_path/'a')
    for split, prefix in (('train', 'train'), ('test', 't10k')):
        x, y = decode_split(dd[split])
        assert x.dtype == torch.uint8 and torch.equal(x[:, 0], torch.from_numpy(arrays[prefix][0]))
        assert torch.equal(y, torch.from_numpy(arrays[prefix][1]).long())
    assert decoded == [] and len(cache_entries(cache, 'decoded-')) == 2

def test_damaged_decoded_entry_is_rebuilt(tmp_path, cache, idx_folder):
    idx_folder(tmp_path/'a')
    ds = load_idx(tmp_path/'a')['test']
    x, y = decode_split(ds)
    for fn in cache.glob('decoded-*'): fn.write_bytes(fn.read_bytes()[:100])
    x2, y2 = decode_split(ds)
    assert torch.equal(x2, x) and torch.equal(y2, y)

def test_in_memory_dataset_is_decoded(cache):
    ds = Dataset.from_dict({'image': [np.full((4, 3), i, dtype=np.uint8) for i in range(3)], 'label': [0, 1, 2]},
                           features=IMAGE_FEATURES)
    x, y = decode_split(ds)
    assert x.shape == (3, 1, 4, 3) and x[2].unique().tolist() == [2] and y.tolist() == [0, 1, 2]

def test_decode_split_colour_images_channels_first(cache):
    ds, ims = image_ds(n=2, shape=(4, 5, 3))
    x, _ = decode_split(ds)
    assert x.shape == (2, 3, 4, 5)
    assert torch.equal(x[1], torch.from_numpy(ims[1]).permute(2, 0, 1))

def test_decode_split_bad_input(cache):
    ds, _ = image_ds()
    with pytest.raises(ValueError, match='image and a label'): decode_split(ds.select_columns(['label']))
    floats = Dataset.from_dict({'image': [np.zeros((2, 2), np.float32)], 'label': [0]})
    with pytest.raises(ValueError, match='8-bit'): decode_split(floats)
    assert cache_entries(cache) == []

# ---------- whole batches at once ----------

def test_batch_dl_reads_whole_batches():
    x = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
    y = torch.arange(10)
    ds = BatchDataset(x, y)
    batches = list(batch_dl(ds, 4))
    assert [b[1].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]   # in order, last batch kept
    assert batches[0][0].dtype == torch.float32 and torch.equal(batches[0][0][:, 0, 0, 0], torch.arange(4)/255)
    torch.manual_seed(0)
    shuffled = torch.cat([yb for _, yb in batch_dl(ds, 4, shuffle=True)])
    assert sorted(shuffled.tolist()) == list(range(10)) and shuffled.tolist() != list(range(10))
    assert next(iter(batch_dl(BatchDataset(x, y, flat=True), 3)))[0].shape == (3, 4)

def test_real_offline_hub_is_not_here(tmp_path, monkeypatch):
    "The real `load_dataset` with the hub off (what HF_HUB_OFFLINE=1 sets at import) raises what `from_hub` skips."
    import datasets.config, huggingface_hub.constants
    monkeypatch.setattr(datasets.config, 'HF_HUB_OFFLINE', True)
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)
    hub_off = lambda name: datasets.load_dataset(name, cache_dir=str(tmp_path/'hf-cache'))
    with pytest.raises(ConnectionError): hub_off(md.HUB_FASHION_MNIST)
    assert from_hub(md.HUB_FASHION_MNIST, load=hub_off) is None
