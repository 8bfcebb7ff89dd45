"""Mixed precision on the CPU: the epoch time of the main job's model with and without `MixedPrecision`.

`train` (16_train's recipe: batch-norm CNN, AdamW, one-cycle) on a Fashion-MNIST subset, in float32 and with
`MixedPrecision()` (bfloat16 autocast on the CPU), the two interleaved for several rounds, who goes first alternating,
so that a slow spell of a shared machine hits both. Reports each training pass's time (wall-clock and CPU), the
median per mode, their ratio (mixed / float32: below 1 is faster) and the validation accuracies. bfloat16 is fast
only on a CPU with bfloat16 units (avx512_bf16, AMX); elsewhere PyTorch emulates it and the ratio is above 1. The
script prints which this CPU has.

    python bench/mixed_precision.py [--rounds 3] [--epochs 2] [--n_train 30000] [--threads 1]
"""
import contextlib, io, time
from pathlib import Path
from statistics import mean, median

import torch
from datasets import DatasetDict
from fastcore.script import call_parse

from miniai.accel import MixedPrecision
from miniai.data import load_fashion_mnist
from miniai.learner import Callback
from miniai.train import train


class TrainPassTimer(Callback):
    "Record the wall-clock and the process's CPU seconds of every training pass."
    def before_fit(self, learn): self.secs, self.cpu = [], []
    def before_epoch(self, learn): self.t0, self.c0 = time.perf_counter(), time.process_time()
    def after_epoch(self, learn):
        if not learn.training: return
        self.secs.append(time.perf_counter() - self.t0)
        self.cpu.append(time.process_time() - self.c0)


def bf16_flags():
    "The CPU's bfloat16 feature flags, from /proc/cpuinfo (Linux)."
    info = Path('/proc/cpuinfo')
    return sorted({f for f in info.read_text().split() if 'bf16' in f}) if info.exists() else []


@call_parse
def main(rounds:int=3,        # rounds of (float32, mixed), interleaved
         epochs:int=2,        # epochs per run
         n_train:int=30_000,  # training images (the first N)
         n_valid:int=10_000,  # validation images (the first N of the test split)
         bs:int=256,          # batch size
         threads:int=None):   # torch CPU threads (default: torch decides)
    "Time the main job's model on the CPU in float32 and with MixedPrecision, interleaved; print the ratio and accuracies."
    if threads: torch.set_num_threads(threads)
    dsd = load_fashion_mnist()
    sub = DatasetDict(train=dsd['train'].select(range(n_train)), test=dsd['test'].select(range(n_valid)))
    print(f'{n_train} training + {n_valid} validation images, {epochs} epochs, batch size {bs}, '
          f'{torch.get_num_threads()} threads; bfloat16 units: {bf16_flags() or "none found"}')
    modes = {'float32': list, 'mixed': lambda: [MixedPrecision()]}
    secs, cpu, accs = {m: [] for m in modes}, {m: [] for m in modes}, {m: [] for m in modes}
    for r in range(rounds):
        for name in (list(modes) if r % 2 == 0 else list(modes)[::-1]):
            timer = TrainPassTimer()
            with contextlib.redirect_stdout(io.StringIO()):   # the metrics' own rows: this report prints its own
                _, acc = train(epochs, bs=bs, dd=sub, progress=False, cbs=[timer, *modes[name]()])
            secs[name] += timer.secs
            cpu[name] += timer.cpu
            accs[name].append(acc)
            print(f'round {r+1} {name:8} accuracy {acc:.4f}  training passes: {", ".join(f"{s:.2f}s" for s in timer.secs)}',
                  flush=True)
    print()
    # With one thread, CPU time is the steadier measure on a machine other jobs share: waiting for a core is not counted.
    for label, ts in (('wall-clock', secs), ('CPU time', cpu)):
        med = {m: median(v) for m, v in ts.items()}
        print(f"median training pass, {label}: float32 {med['float32']:.2f}s, mixed {med['mixed']:.2f}s; "
              f"ratio mixed/float32 {med['mixed']/med['float32']:.2f} (below 1: mixed precision is faster)")
    print(f"mean accuracy: float32 {mean(accs['float32']):.4f}, mixed {mean(accs['mixed']):.4f} "
          f"({100*(mean(accs['mixed'])-mean(accs['float32'])):+.2f} points)")
