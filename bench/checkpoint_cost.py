"""What checkpointing costs: the seconds `CheckpointCB` spends saving after each epoch (last.pt, and best.pt when the
accuracy improved), as a share of the epoch's seconds (training and validation passes), for the main job's recipe
(`miniai.train.train`) on Fashion-MNIST. Goal: under 2%.

    python bench/checkpoint_cost.py                  # 2 epochs on all the data
    python bench/checkpoint_cost.py --epochs 3 --n_train 10000 --threads 1

Both times are taken in the same run, epoch by epoch: the save is timed inside the callback, the epoch around its two
passes, so the two share the machine's load at that moment. The epoch time includes the save."""
import statistics, tempfile, time

import torch
from fastcore.script import call_parse

from miniai.checkpoint import CheckpointCB
from miniai.learner import Callback
from miniai.train import train
from miniai.commands import load_data


class TimedCheckpointCB(CheckpointCB):
    "A `CheckpointCB` that records how long each of its saves takes."
    def before_fit(self, learn):
        super().before_fit(learn)
        self.save_times = []
    def after_epoch(self, learn):
        if learn.training: return
        start = time.perf_counter()
        super().after_epoch(learn)
        self.save_times.append(time.perf_counter() - start)


class FullEpochTimerCB(Callback):
    "Record the seconds from the start of each training pass to the end of the validation pass after it (saves included)."
    order = TimedCheckpointCB.order + 1
    def before_fit(self, learn): self.times = []
    def before_epoch(self, learn):
        if learn.training: self.start = time.perf_counter()
    def after_epoch(self, learn):
        if not learn.training: self.times.append(time.perf_counter() - self.start)


@call_parse
def main(epochs:int=2,       # epochs to train
         n_train:int=None,   # use only the first N training images (default: all 50,000 that miniai_train trains on)
         threads:int=None,   # torch CPU threads (default: torch's choice)
         seed:int=1):        # random seed
    "Time CheckpointCB's save after each epoch against the epoch's time."
    if threads: torch.set_num_threads(threads)
    dsd = load_data({'data': None, 'n_train': n_train, 'n_valid': None, 'n_holdout': 10_000})   # as miniai_train
    with tempfile.TemporaryDirectory() as folder:
        ckpt, timer = TimedCheckpointCB(folder), FullEpochTimerCB()
        train(epochs, seed=seed, dd=dsd, progress=False, cbs=[ckpt, timer])
        size = sum(f.stat().st_size for f in ckpt.path.iterdir())/1e6
    print(f"{len(dsd['train'])} training images, {torch.get_num_threads()} CPU thread(s); checkpoint files {size:.2f} MB in all")
    for e, (s, t) in enumerate(zip(ckpt.save_times, timer.times)):
        print(f'epoch {e+1}: epoch {t:.1f}s, save {1000*s:.1f} ms, share {100*s/t:.3f}%')
    shares = [s/t for s, t in zip(ckpt.save_times, timer.times)]
    print(f'median share of the epoch spent saving: {100*statistics.median(shares):.3f}% (goal: under 2%)')
