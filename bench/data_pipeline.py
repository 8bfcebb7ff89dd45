"""Fashion-MNIST items per second through a DataLoader, three ways, run side by side:

  (a) per-item PNG decoding: `with_transform` + `DataLoaders.from_dd`, num_workers=0 (the baseline)
  (b) the same with num_workers=2
  (c) `decoded_dls`: every image decoded once into one tensor, whole batches read by index

Each repeat times the three in turn (interleaved, so a busy spell on the machine hits all of them), over the
training set's loader in steady state: a fresh iterator per repeat, its first batches (worker start-up) not timed.
Prints the median items/s of each and the ratios (c)/(a) and (b)/(a). Usage: python bench/data_pipeline.py [repeats]
"""
import os, statistics, sys, time
import numpy as np
import torch
from miniai.datasets import DataLoaders, decode_split, decoded_dls, inplace, load_fashion_mnist
import miniai.datasets as mds

BS = 256
WARMUP = 2          # batches not timed: the iterator's start (forking workers for (b))
SLOW_BATCHES = 40   # timed batches for the per-item loaders (10,240 items)

@inplace
def to_tensor(b):
    "PIL images to float tensors (1, h, w) in [0, 1]: what the lessons do with torchvision's `to_tensor`."
    b['image'] = [torch.from_numpy(np.array(o, dtype=np.float32) / 255)[None] for o in b['image']]

def items_per_sec(dl, n_batches=None):
    it = iter(dl)
    for _ in range(WARMUP): next(it)
    n, t = 0, time.perf_counter()
    for i, (xb, yb) in enumerate(it):
        n += len(yb)
        if n_batches is not None and i+1 >= n_batches: break
    return n / (time.perf_counter() - t)

def main(repeats=5):
    print(f'torch {torch.__version__}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, '
          f'load average at start {os.getloadavg()[0]:.1f}')
    dd = load_fashion_mnist()
    tdd = dd.with_transform(to_tensor)

    t = time.perf_counter(); mds._decode_images(dd['train'], 'image')
    decode_once = time.perf_counter() - t
    decode_split(dd['train']); decode_split(dd['test'])          # make sure the cache exists
    t = time.perf_counter(); fast = decoded_dls(dd, BS)
    setup_cached = time.perf_counter() - t
    print(f'(c) one-off cost: decoding the 60,000 training images {decode_once:.1f}s; '
          f'decoded_dls from the cache {setup_cached:.2f}s')

    loaders = {
        '(a) per-item, 0 workers': (DataLoaders.from_dd(tdd, BS).train, SLOW_BATCHES),
        '(b) per-item, 2 workers': (DataLoaders.from_dd(tdd, BS, num_workers=2).train, SLOW_BATCHES),
        '(c) decoded_dls':         (fast.train, None),                  # a whole epoch: it is quick
    }
    results = {k: [] for k in loaders}
    for r in range(repeats):
        for name, (dl, nb) in loaders.items(): results[name].append(items_per_sec(dl, nb))
        print(f'repeat {r+1}/{repeats}: ' + ', '.join(f'{v[-1]:,.0f}' for v in results.values()) + ' items/s')
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f'\nmedian items/s over {repeats} interleaved repeats (batch size {BS}):')
    for k, v in med.items(): print(f'  {k:26s} {v:12,.0f}')
    a, b, c = med.values()
    print(f'ratio (c)/(a) decoded vs per-item: {c/a:.1f}x')
    print(f'ratio (b)/(a) 2 workers vs 0:      {b/a:.2f}x')
    print(f'load average at end {os.getloadavg()[0]:.1f} (a shared CPU lowers every figure; compare the ratios)')

if __name__ == '__main__':
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
