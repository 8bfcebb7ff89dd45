"""The Learner's overhead against a hand-written PyTorch loop.

One epoch (a training pass and a validation pass) of the same small CNN, on the same in-memory data, through the same
DataLoader, with the same batch size, three ways:
  loop     a hand-written loop: forward, loss, backward, step, zero_grad; validation loss under no_grad
  bare     TrainLearner + DeviceCB
  full     TrainLearner + DeviceCB + MetricsCB(accuracy) + ProgressCB
The three run interleaved for several rounds (the CPU may be shared, so a slow spell hits all three alike) and the
medians are compared. Goals: bare within 2% of the loop, full within 5%.

Wall-clock time and the process's CPU time are both reported: on a machine shared with other jobs, CPU time (with
`--threads 1`) is the steadier of the two.

    python bench/learner_overhead.py [--rounds 6] [--n-train 20000] [--bs 128] [--threads N] [--device cpu]
"""
import argparse, contextlib, copy, io, time
from unittest import mock
from statistics import median

import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset
from torcheval.metrics import MulticlassAccuracy

from miniai import learner
from miniai.learner import TrainLearner, DeviceCB, MetricsCB, ProgressCB


def batch_dl(x, y, bs, shuffle):
    "Whole batches read by index (a BatchSampler used as the sampler): the fast in-memory path."
    ds = TensorDataset(x, y)
    sampler = (RandomSampler if shuffle else SequentialSampler)(ds)
    return DataLoader(ds, sampler=BatchSampler(sampler, bs, drop_last=False), batch_size=None)

class DLS:
    def __init__(self, train, valid): self.train, self.valid = train, valid

def make_model():
    def conv(ni, nf): return nn.Sequential(nn.Conv2d(ni, nf, 3, stride=2, padding=1), nn.ReLU())
    return nn.Sequential(conv(1, 8), conv(8, 16), conv(16, 32), conv(32, 64),   # 28 -> 14 -> 7 -> 4 -> 2
                         nn.Conv2d(64, 10, 2), nn.Flatten())


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
    cbs = [DeviceCB(device), MetricsCB(accuracy=MulticlassAccuracy()), ProgressCB()]
    # Draw the console progress bars as in a terminal (the costlier case), into a buffer so they don't clutter this
    # report.
    with contextlib.redirect_stdout(io.StringIO()), mock.patch.object(learner, '_show_bars', lambda: True):
        TrainLearner(model, dls, F.cross_entropy, lr=lr, cbs=cbs).fit(1)

def sync(device):
    if str(device).startswith('cuda'): torch.cuda.synchronize()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--rounds', type=int, default=6)
    p.add_argument('--n-train', type=int, default=20000)
    p.add_argument('--n-valid', type=int, default=5000)
    p.add_argument('--bs', type=int, default=128)
    p.add_argument('--device', default='cpu')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch decides)')
    args = p.parse_args()
    if args.threads: torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    # Random images and labels: the cost of a batch does not depend on the pixel values.
    x, y = torch.rand(args.n_train + args.n_valid, 1, 28, 28), torch.randint(0, 10, (args.n_train + args.n_valid,))
    dls = DLS(batch_dl(x[:args.n_train], y[:args.n_train], args.bs, True),
              batch_dl(x[args.n_train:], y[args.n_train:], args.bs * 2, False))
    init = make_model()
    ways = {'loop': loop_epoch, 'bare': bare_epoch, 'full': full_epoch}
    times = {k: [] for k in ways}   # wall-clock seconds
    cpu = {k: [] for k in ways}     # process CPU seconds

    print(f'{args.n_train} training + {args.n_valid} validation images, batch size {args.bs}, device {args.device}, '
          f'{torch.get_num_threads()} threads, {args.rounds} rounds (+1 warm-up)')
    for r in range(args.rounds + 1):
        order = list(ways)[r % len(ways):] + list(ways)[:r % len(ways)]   # rotate who goes first
        for name in order:
            model = copy.deepcopy(init)
            sync(args.device)
            start, start_cpu = time.perf_counter(), time.process_time()
            ways[name](model, dls, 0.1, args.device)
            sync(args.device)
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

if __name__ == '__main__': main()
