"""Accuracy within a time budget on CPU: the best model of 12_batchnorm (a batch-norm CNN with 16, 32, 64 and 128
channels) trained on Fashion-MNIST with a one-cycle schedule (AdamW, max lr 0.01, batch size 256), as the notebook does.

    python bench/accuracy_budget.py                  # 5 epochs, as in the notebook
    python bench/accuracy_budget.py --epochs 3
    python bench/accuracy_budget.py --budget 60      # as many whole epochs as fit in about 60 seconds of training
    python bench/accuracy_budget.py --threads 1      # torch CPU threads (default: torch's own choice)

Prints the validation accuracy after each epoch, the seconds per training epoch (median over the epochs) and the
total time. With --budget, one-cycle needs the number of epochs up front, so a calibration run of a few batches
estimates the seconds per epoch first (on a busy machine that estimate, and so the epoch count, is rough). The same
seed gives the same run, so accuracies can be compared between machines; times are only comparable on the same
machine under the same load. On a machine whose cores are busy with other work, --threads 1 can be many times faster
than torch's default of one thread per core (measured here: 14.5s against 107.5s per epoch on 2 shared cores)."""
import argparse, statistics, time
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.optim import lr_scheduler
from torcheval.metrics import MulticlassAccuracy

from miniai.datasets import load_fashion_mnist, decoded_dls
from miniai.learner import Callback, TrainLearner, MetricsCB, DeviceCB, BatchSchedCB, CancelFitException
from miniai.activations import set_seed
from miniai.init import get_model, init_weights, BatchTransformCB

NFS = (1, 16, 32, 64, 128)


class EpochTimerCB(Callback):
    "Record the wall-clock seconds of each training and validation epoch."
    def before_fit(self, learn): self.train_times, self.valid_times = [], []
    def before_epoch(self, learn): self.start = time.perf_counter()
    def after_epoch(self, learn):
        (self.train_times if learn.training else self.valid_times).append(time.perf_counter() - self.start)


class StopAfterCB(Callback):
    "Stop the fit after `n` training batches (for calibration)."
    def __init__(self, n): self.n = n
    def after_batch(self, learn):
        if learn.training and learn.iter + 1 >= self.n: raise CancelFitException()


def make_learner(dls, epochs, max_lr, xmean, xstd, cbs=()):
    model = get_model(nfs=NFS, norm=nn.BatchNorm2d)
    model.apply(init_weights)
    sched = partial(lr_scheduler.OneCycleLR, max_lr=max_lr, total_steps=epochs * len(dls.train))
    normalise = BatchTransformCB(lambda b: ((b[0] - xmean) / xstd, b[1]))
    return TrainLearner(model, dls, F.cross_entropy, lr=max_lr, opt_func=optim.AdamW,
                        cbs=[DeviceCB(), normalise, BatchSchedCB(sched), *cbs])


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--epochs', type=int, default=5, help='epochs to train (ignored with --budget)')
    p.add_argument('--budget', type=float, default=None, help='seconds of training to fit whole epochs into')
    p.add_argument('--bs', type=int, default=256)
    p.add_argument('--lr', type=float, default=1e-2, help='one-cycle maximum learning rate')
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--seed', type=int, default=1)
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    if a.epochs < 1: p.error('--epochs must be at least 1')
    if a.budget is not None and a.budget <= 0: p.error('--budget must be a positive number of seconds')

    dls = decoded_dls(load_fashion_mnist(), a.bs)
    set_seed(a.seed)
    xb, _ = next(iter(dls.train))                  # a seeded batch, so the normalisation is the same every run
    xmean, xstd = xb.mean().item(), xb.std().item()
    epochs = a.epochs
    if a.budget is not None:
        n_cal = 30
        set_seed(a.seed)
        cal = make_learner(dls, 1, a.lr, xmean, xstd, cbs=[StopAfterCB(5)])
        cal.fit(1, valid=False)                                            # warm-up
        cal = make_learner(dls, 1, a.lr, xmean, xstd, cbs=[StopAfterCB(n_cal)])
        t = time.perf_counter(); cal.fit(1, valid=False); per_batch = (time.perf_counter() - t) / n_cal
        est_epoch = per_batch * len(dls.train)
        epochs = max(1, int(a.budget // est_epoch))
        print(f'calibration: about {est_epoch:.1f}s per training epoch -> {epochs} epoch(s) in a {a.budget:g}s budget')

    set_seed(a.seed)
    metrics, timer = MetricsCB(accuracy=MulticlassAccuracy()), EpochTimerCB()
    metrics._log = lambda d: print(d) if d['train'] == 'eval' else None    # one line per epoch: the validation one
    learn = make_learner(dls, epochs, a.lr, xmean, xstd, cbs=[metrics, timer])
    t = time.perf_counter()
    learn.fit(epochs)
    total = time.perf_counter() - t
    acc = metrics.metrics['accuracy'].compute().item()
    print(f'model: get_model(nfs={NFS}, norm=nn.BatchNorm2d), one-cycle AdamW max lr {a.lr:g}, batch size {a.bs}, '
          f'{torch.get_num_threads()} CPU thread(s)')
    print(f'validation accuracy after {epochs} epoch(s): {acc:.4f}')
    print(f'seconds per training epoch (median of {epochs}): {statistics.median(timer.train_times):.1f}; '
          f'validation pass {statistics.median(timer.valid_times):.1f}s; total {total:.1f}s')


if __name__ == '__main__':
    main()
