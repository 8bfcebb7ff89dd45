"""The Learner's overhead against a hand-written PyTorch loop.

One epoch (a training pass and a validation pass) of `09_learner`'s small CNN, on the same in-memory data, through the
same DataLoaders (miniai's fast path: whole batches read by index), with the same batch size, three ways:
  loop     a hand-written loop: forward, loss, backward, step, zero_grad; validation loss under no_grad
  bare     TrainLearner + DeviceCB
  full     TrainLearner + DeviceCB + MetricsCB(accuracy) + ProgressCB (console bars drawn, as in a terminal)
The three run interleaved for several rounds (the CPU may be shared, so a slow spell hits all three alike) and the
medians are compared. Goals: bare within 2% of the loop, full within 5%. Wall-clock time and the process's CPU time
are both reported: on a machine shared with other jobs, CPU time (with `--threads 1`) is the steadier of the two.

    python bench/learner_overhead.py [--rounds 6] [--n_train 20000] [--bs 128] [--threads N] [--device cpu]
"""
import contextlib, copy, io, time
from statistics import median

import torch
import torch.nn.functional as F
from torch import nn, optim
from torcheval.metrics import MulticlassAccuracy
from fastcore.script import call_parse

from miniai.conv import conv
from miniai.data import BatchDataset, batch_dl
from miniai.datasets import DataLoaders
from miniai.learner import TrainLearner, DeviceCB, MetricsCB, ProgressCB


def get_cnn():
    "09_learner's CNN: stride-2 convs 28 -> 14 -> 7 -> 4 -> 2 -> 1, then the ten class scores."
    return nn.Sequential(conv(1, 8), conv(8, 16), conv(16, 32), conv(32, 64), conv(64, 10, act=False), nn.Flatten())

def loop_epoch(model, dls, lr, device):
    model.to(device)
    opt = optim.SGD(model.parameters(), lr)
    model.train()
    for xb, yb in dls.train:
        xb, yb = xb.to(device), yb.to(device)
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    with torch.no_grad():
        for xb, yb in dls.valid:
            xb, yb = xb.to(device), yb.to(device)
            loss = F.cross_entropy(model(xb), yb)

def bare_epoch(model, dls, lr, device):
    TrainLearner(model, dls, F.cross_entropy, lr=lr, cbs=[DeviceCB(device)]).fit(1)

def full_epoch(model, dls, lr, device):
    cbs = [DeviceCB(device), MetricsCB(accuracy=MulticlassAccuracy()), ProgressCB(bars=True)]
    with contextlib.redirect_stdout(io.StringIO()):   # the bars and the table, drawn but not cluttering this report
        TrainLearner(model, dls, F.cross_entropy, lr=lr, cbs=cbs).fit(1)

def sync(device):
    if str(device).startswith('cuda'): torch.cuda.synchronize()

@call_parse
def main(rounds:int=6,        # timed rounds (after one warm-up round)
         n_train:int=20000,   # training images
         n_valid:int=5000,    # validation images
         bs:int=128,          # training batch size (validation uses twice this)
         device:str='cpu',    # device to train on
         threads:int=None):   # PyTorch CPU threads (default: PyTorch decides)
    "Time an epoch of the Learner against a hand-written loop, interleaved, and print the ratios."
    if threads: torch.set_num_threads(threads)
    torch.manual_seed(0)
    # Random images and labels: the cost of a batch does not depend on the pixel values.
    x, y = torch.randint(0, 256, (n_train + n_valid, 1, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (n_train + n_valid,))
    dls = DataLoaders(batch_dl(BatchDataset(x[:n_train], y[:n_train]), bs, shuffle=True),
                      batch_dl(BatchDataset(x[n_train:], y[n_train:]), bs*2))
    init = get_cnn()
    ways = {'loop': loop_epoch, 'bare': bare_epoch, 'full': full_epoch}
    times = {k: [] for k in ways}   # wall-clock seconds
    cpu = {k: [] for k in ways}     # process CPU seconds

    print(f'{n_train} training + {n_valid} validation images, batch size {bs}, device {device}, '
          f'{torch.get_num_threads()} threads, {rounds} rounds (+1 warm-up)')
    for r in range(rounds + 1):
        order = list(ways)[r % len(ways):] + list(ways)[:r % len(ways)]   # rotate who goes first
        for name in order:
            model = copy.deepcopy(init)
            sync(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            ways[name](model, dls, 0.1, device)
            sync(device)
            if r > 0:   # round 0 warms up
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
        if r > 0: print(f'round {r}: ' + '  '.join(f'{k} {times[k][-1]:.2f}s (cpu {cpu[k][-1]:.2f}s)' for k in ways),
                        flush=True)

    for label, ts in (('wall-clock', times), ('CPU time', cpu)):
        med = {k: median(v) for k, v in ts.items()}
        # The median of per-round ratios too: robust to a slow spell that hits one whole round.
        per_round = {k: median(a / b for a, b in zip(ts[k], ts['loop'])) for k in ('bare', 'full')}
        print(f"\n{label}, median epoch: loop {med['loop']:.3f}s  bare {med['bare']:.3f}s  full {med['full']:.3f}s")
        best = {k: min(v) for k, v in ts.items()}   # noise only adds time: the fastest run is the least disturbed
        for k, goal in (('bare', 1.02), ('full', 1.05)):
            print(f'  {k}/loop: {med[k]/med["loop"]:.3f} (ratio of medians), {per_round[k]:.3f} (median of per-round '
                  f'ratios), {best[k]/best["loop"]:.3f} (ratio of fastest runs); goal <= {goal}')
