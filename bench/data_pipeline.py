"""Fashion-MNIST through a DataLoader: the one-off costs of the data path, then items per second three ways, side by side.

One-off costs, each in a fresh temporary cache so nothing is already there:
  converting the IDX files (`load_fashion_mnist`, which also stores the decoded pixels), decoding the training split's
  PNGs (`decode_split` on data that came with no pixels, as hub data does), and `decoded_dls` from a warm cache.
Items per second over the training set's loader in steady state (a fresh iterator per repeat, its first batches not
timed), the three loaders timed in turn in each repeat so that a busy spell on the machine hits all of them:
  (a) per-item PNG decoding: `with_transform` + `DataLoaders.from_dd`, num_workers=0 (the baseline)
  (b) the same with num_workers=2
  (c) `decoded_dls`: images decoded once into one tensor, whole batches read by index
Prints the median of each and the ratios (c)/(a) and (b)/(a). Usage: python bench/data_pipeline.py [--repeats 5]
"""
import os, statistics, tempfile, time
from unittest.mock import patch

import numpy as np
import torch
from fastcore.script import call_parse

from miniai.data import CACHE_ENV, decode_split, load_fashion_mnist
from miniai.datasets import DataLoaders, decoded_dls, inplace

WARMUP = 2          # batches not timed: the iterator's start (forking workers for (b))

@inplace
def to_tensor(b):
    "PIL images to float tensors (1, h, w) in [0, 1]: what the lessons do with torchvision's `to_tensor`."
    b['image'] = [torch.from_numpy(np.array(o, dtype=np.float32) / 255)[None] for o in b['image']]

def items_per_sec(dl, n_batches=None):
    "Items per second from `dl` after `WARMUP` batches, over `n_batches` batches (or the rest of an epoch)."
    it = iter(dl)
    for _ in range(WARMUP): next(it)
    n, t = 0, time.perf_counter()
    for i, (xb, yb) in enumerate(it):
        n += len(yb)
        if n_batches is not None and i+1 >= n_batches: break
    return n / (time.perf_counter() - t)

def timed(f):
    t = time.perf_counter(); res = f()
    return res, time.perf_counter() - t

def one_off_costs():
    "Seconds for a cold IDX conversion, a cold PNG decode of the training split, and `decoded_dls` from a warm cache."
    with tempfile.TemporaryDirectory() as conv_cache, tempfile.TemporaryDirectory() as decode_cache:
        with patch.dict(os.environ, {CACHE_ENV: conv_cache}):
            dd, convert = timed(load_fashion_mnist)
            _, warm_dls = timed(lambda: decoded_dls(dd, 256))
        with patch.dict(os.environ, {CACHE_ENV: decode_cache}):     # no stored pixels here: the PNGs are decoded
            _, decode = timed(lambda: decode_split(dd['train']))
    return convert, decode, warm_dls

@call_parse
def main(repeats:int=5,          # interleaved repeats of the three loaders
         bs:int=256,             # batch size
         slow_batches:int=40):   # batches timed per repeat for the per-item loaders (a) and (b)
    print(f'torch {torch.__version__}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, '
          f'load average at start {os.getloadavg()[0]:.1f}')
    convert, decode, warm_dls = one_off_costs()
    print(f'one-off: converting the IDX files (70,000 images, pixels stored too) {convert:.1f}s; '
          f'decoding the 60,000 training PNGs {decode:.1f}s; decoded_dls from a warm cache {warm_dls:.2f}s')

    dd = load_fashion_mnist()
    tdd = dd.with_transform(to_tensor)
    loaders = {
        '(a) per-item, 0 workers': (DataLoaders.from_dd(tdd, bs).train, slow_batches),
        '(b) per-item, 2 workers': (DataLoaders.from_dd(tdd, bs, num_workers=2).train, slow_batches),
        '(c) decoded_dls':         (decoded_dls(dd, bs).train, None),        # a whole epoch: it is quick
    }
    results = {k: [] for k in loaders}
    for r in range(repeats):
        for name, (dl, nb) in loaders.items(): results[name].append(items_per_sec(dl, nb))
        print(f'repeat {r+1}/{repeats}: ' + ', '.join(f'{v[-1]:,.0f}' for v in results.values()) + ' items/s')
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f'\nmedian items/s over {repeats} interleaved repeats (batch size {bs}):')
    for k, v in med.items(): print(f'  {k:26s} {v:12,.0f}')
    a, b, c = med.values()
    print(f'ratio (c)/(a) decoded vs per-item: {c/a:.1f}x')
    print(f'ratio (b)/(a) 2 workers vs 0:      {b/a:.2f}x')
    print(f'load average at end {os.getloadavg()[0]:.1f} (a shared CPU lowers every figure; compare the ratios)')
