"""Accuracy within a time budget on CPU: one of the main job's recipes (`miniai.train.RECIPES`; by default the default
recipe, the batch-norm CNN of 12_batchnorm with 16, 32, 64 and 128 channels, AdamW, one-cycle with max lr 0.01, batch
size 256) trained on Fashion-MNIST. Its accuracy is on the test images, which it also validates on: for a recipe's
fair figure (choosing on held-out training images) use bench/recipes.py.

    python bench/accuracy_budget.py                  # 5 epochs, as miniai_train does
    python bench/accuracy_budget.py --epochs 3
    python bench/accuracy_budget.py --budget 60      # as many whole epochs as fit in about 60 seconds of training
    python bench/accuracy_budget.py --threads 1      # torch CPU threads (default: torch's own choice)
    python bench/accuracy_budget.py --recipe resnet  # another recipe of miniai.train.RECIPES

Prints the metrics of each epoch, the seconds per training epoch (median over the epochs) and the total time. With
--budget, one-cycle needs the number of epochs up front, so a calibration run of a few batches estimates the seconds
per epoch first (on a busy machine that estimate, and so the epoch count, is rough). The same seed gives the same run,
so accuracies can be compared between machines; times are only comparable on the same machine under the same load.
On a machine whose cores are busy with other work, --threads 1 can be many times faster than torch's default of one
thread per core (measured here: 14.5s against 107.5s per epoch on 2 shared cores)."""
import statistics, time

import torch
from fastcore.script import call_parse

from miniai.datasets import load_fashion_mnist
from miniai.learner import Callback, CancelFitException
from miniai.train import train, RECIPES


class EpochTimerCB(Callback):
    "Record the wall-clock seconds of each training and validation pass."
    def before_fit(self, learn): self.train_times, self.valid_times = [], []
    def before_epoch(self, learn): self.start = time.perf_counter()
    def after_epoch(self, learn):
        (self.train_times if learn.training else self.valid_times).append(time.perf_counter() - self.start)


class CalibrateCB(Callback):
    "Time training batches `warm` to `n` (the first ones are slower), then stop the fit."
    def __init__(self, warm=5, n=35): self.warm, self.n = warm, n
    def after_batch(self, learn):
        if not learn.training: return
        if learn.iter + 1 == self.warm: self.start = time.perf_counter()
        if learn.iter + 1 == self.n:
            self.per_batch = (time.perf_counter() - self.start)/(self.n - self.warm)
            raise CancelFitException()


@call_parse
def main(epochs:int=5,      # epochs to train (ignored with --budget)
         budget:float=None, # seconds of training to fit whole epochs into
         bs:int=None,       # training batch size (default: the recipe's)
         lr:float=None,     # one-cycle maximum learning rate (default: the recipe's)
         recipe:str='default', # a recipe of miniai.train.RECIPES
         threads:int=None,  # torch CPU threads (default: torch's choice)
         seed:int=1):       # random seed
    "Accuracy of the main job's recipe after a number of epochs, or within a time budget."
    if threads: torch.set_num_threads(threads)
    if epochs < 1: raise SystemExit('--epochs must be at least 1')
    if budget is not None and budget <= 0: raise SystemExit('--budget must be a positive number of seconds')
    dsd = load_fashion_mnist()
    if budget is not None:
        cal = CalibrateCB()
        learn, _ = train(1, bs, lr, seed, dd=dsd, progress=False, cbs=[cal], recipe=recipe)
        est_epoch = cal.per_batch*len(learn.dls.train)
        epochs = max(1, int(budget//est_epoch))
        print(f'calibration: about {est_epoch:.1f}s per training epoch -> {epochs} epoch(s) in a {budget:g}s budget')
    timer = EpochTimerCB()
    start = time.perf_counter()
    _, acc = train(epochs, bs, lr, seed, dd=dsd, cbs=[timer], recipe=recipe)
    total = time.perf_counter() - start
    print(f'recipe {recipe!r} ({RECIPES[recipe]["help"]}), batch size {bs or RECIPES[recipe]["bs"]}, {torch.get_num_threads()} CPU thread(s)')
    print(f'test accuracy after {epochs} epoch(s): {acc:.4f}')
    print(f'seconds per training epoch (median of {epochs}): {statistics.median(timer.train_times):.1f}; '
          f'validation pass {statistics.median(timer.valid_times):.1f}s; total {total:.1f}s (with data set-up)')
