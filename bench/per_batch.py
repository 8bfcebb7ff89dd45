"""What the Learner itself costs per batch, with the work made almost free.

One `nn.Linear(32, 10)` trained on batches of 64 read whole by index (miniai's `BatchDataset` + `batch_dl`), one
thread: the model's own work is a few microseconds, so what a framework adds per batch shows plainly. One run is one
epoch: `--n_train` training batches and `--n_valid` validation batches (validation costs the same few microseconds).
The ways, each timed on a fresh copy of the same starting weights:
  loop       a hand-written loop: each batch to the device, forward, loss, backward, step, zero_grad; validation
             under no_grad
  bare       TrainLearner + DeviceCB
  metrics    + MetricsCB(accuracy)
  progress   + ProgressCB (console bars drawn into a buffer, as in a terminal) + NonFiniteGuardCB: what a user runs
  main_loop  a hand-written loop that does the main job's work: the loop above, plus the input normalisation, a
             one-cycle schedule stepped each training batch, and each batch's loss kept (on the device)
  main_job   the main job's callbacks: `get_learner`'s set (DeviceCB, the input normalisation, MetricsCB, the
             one-cycle BatchSchedCB, ProgressCB, NonFiniteGuardCB: added here if the recipe lacks it) + RunLogCB +
             CheckpointCB writing to a temporary folder; the model and optimizer (SGD) are the others', so only the
             callbacks differ. It is compared with main_loop as well as with loop
Two modes, both interleaved (each round runs every way, the first way rotating), so that a slow spell of a shared
machine hits all alike:
  fresh      each timed run in a new Python process (one warm-up fit first): medians over `--rounds` rounds
  one        all runs in this process: the fastest of `--rounds` rounds (noise only adds time), steadier under load
Printed: microseconds per batch (training and validation batches together), wall-clock and this process's CPU time
(the steadier of the two on a loaded machine), and the difference from the loop (main_job: also from main_loop).
Goals (issue 22): progress (metrics + progress + the guard) <= 25 us over the loop, main_job <= 25 us over main_loop;
(issue 16) bare <= 10 us over the loop.

    python bench/per_batch.py [--mode both|fresh|one] [--rounds 9] [--n_train 400] [--n_valid 100]
"""
import contextlib, copy, io, json, subprocess, sys, tempfile, time
from statistics import median

import torch
import torch.nn.functional as F
from torch import nn, optim
from torcheval.metrics import MulticlassAccuracy
from fastcore.script import call_parse

from miniai.data import BatchDataset, batch_dl
from miniai.datasets import DataLoaders
from torch.optim import lr_scheduler
from miniai.learner import TrainLearner, DeviceCB, MetricsCB, ProgressCB, NonFiniteGuardCB
from learner_overhead import loop_epoch   # the hand-written loop both benches measure against (bench/ is on sys.path)

WAYS = ('loop', 'bare', 'metrics', 'progress', 'main_loop', 'main_job')
BS = 64


def get_dls(n_train, n_valid):
    "Random 'images' of 1x4x8 uint8 pixels (32 inputs once flat) with labels, read 64 at a time by index."
    g = torch.Generator().manual_seed(0)
    n = (n_train + n_valid) * BS
    x, y = torch.randint(0, 256, (n, 1, 4, 8), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g)
    cut = n_train * BS
    return DataLoaders(batch_dl(BatchDataset(x[:cut], y[:cut], flat=True), BS, shuffle=True),
                       batch_dl(BatchDataset(x[cut:], y[cut:], flat=True), BS))

def get_model():
    torch.manual_seed(0)
    return nn.Linear(32, 10)


MEAN, STD = 0.5, 0.289   # the bench's random pixels: uniform over 0..255, read on the [0, 1] scale

def main_loop_epoch(model, dls, lr, device):
    "`loop_epoch` doing the main job's work: inputs normalised, one-cycle stepped each training batch, every loss kept."
    model.to(device)
    opt = optim.SGD(model.parameters(), lr)
    sched = lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=len(dls.train))
    losses = []
    model.train()
    for xb, yb in dls.train:
        xb, yb = xb.to(device), yb.to(device)
        loss = F.cross_entropy(model((xb - MEAN) / STD), yb)
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(loss.detach())
    model.eval()
    with torch.no_grad():
        for xb, yb in dls.valid:
            xb, yb = xb.to(device), yb.to(device)
            losses.append(F.cross_entropy(model((xb - MEAN) / STD), yb))
    return losses

def learner_fit(model, dls, cbs, lr=0.1):
    with contextlib.redirect_stdout(io.StringIO()):   # the table and bars are drawn, into a buffer
        TrainLearner(model, dls, F.cross_entropy, lr=lr, cbs=cbs).fit(1)

def main_job_fit(model, dls, lr=0.1):
    "The main job's callbacks around the bench's model and optimizer."
    from miniai.train import get_learner
    from miniai.checkpoint import CheckpointCB
    from miniai.commands import RunLogCB
    with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stdout(io.StringIO()):
        learn = get_learner(dls, 1, lr=lr, device='cpu', progress=True, stats=(MEAN, STD),
                            cbs=[RunLogCB(folder), CheckpointCB(folder, monitor='accuracy', mode='max')])
        if not any(isinstance(cb, NonFiniteGuardCB) for cb in learn.cbs): learn.cbs.append(NonFiniteGuardCB())
        for cb in learn.cbs:
            if isinstance(cb, ProgressCB): cb.bars = True   # as in a terminal, like the `progress` way
        learn.model, learn.opt_func = model, optim.SGD
        learn.fit(1)

def run_way(way, dls):
    "One timed fit of `way` on a fresh copy of the starting weights: (wall-clock seconds, CPU seconds of this process)."
    model = get_model()
    fits = {'loop': lambda: loop_epoch(model, dls, 0.1, 'cpu'),
            'bare': lambda: learner_fit(model, dls, [DeviceCB('cpu')]),
            'metrics': lambda: learner_fit(model, dls, [DeviceCB('cpu'), MetricsCB(accuracy=MulticlassAccuracy())]),
            'progress': lambda: learner_fit(model, dls, [DeviceCB('cpu'), MetricsCB(accuracy=MulticlassAccuracy()),
                                                         ProgressCB(bars=True), NonFiniteGuardCB()]),
            'main_loop': lambda: main_loop_epoch(model, dls, 0.1, 'cpu'),
            'main_job': lambda: main_job_fit(model, dls)}
    start, start_cpu = time.perf_counter(), time.process_time()
    fits[way]()
    return time.perf_counter() - start, time.process_time() - start_cpu


def rotated(r): return WAYS[r % len(WAYS):] + WAYS[:r % len(WAYS)]

def report(title, secs, n_batches):
    "Print microseconds per batch, wall-clock and CPU, and each way's difference from the loop; `secs`: way -> (wall, cpu)."
    us = {w: [s / n_batches * 1e6 for s in secs[w]] for w in WAYS}
    print(f'\n{title}')
    print(f"  {'':10} {'wall us/batch':>14} {'over the loop':>14} {'CPU us/batch':>14} {'over the loop':>14}")
    for w in WAYS:
        cols = []
        for i in (0, 1):
            cols += [f'{us[w][i]:.1f}', '-' if w == 'loop' else f"{us[w][i] - us['loop'][i]:+.1f}"]
        print(f'  {w:10} ' + ' '.join(f'{c:>14}' for c in cols))
    print(f"  {'main_job over main_loop':25} wall {us['main_job'][0] - us['main_loop'][0]:+.1f} us/batch, "
          f"CPU {us['main_job'][1] - us['main_loop'][1]:+.1f} us/batch")
    return us

def one_process(dls, rounds, n_batches):
    for w in WAYS: run_way(w, dls)   # warm-up: imports, allocations, the first-call costs
    times = {w: [] for w in WAYS}
    for r in range(rounds):
        for w in rotated(r): times[w].append(run_way(w, dls))
    fastest = {w: [min(s[i] for s in t) for i in (0, 1)] for w, t in times.items()}
    return report(f'one process, interleaved, fastest of {rounds} rounds:', fastest, n_batches)

def fresh_processes(rounds, n_train, n_valid):
    times = {w: [] for w in WAYS}
    for r in range(rounds):
        for w in rotated(r):
            out = subprocess.run([sys.executable, __file__, '--child', w, '--n_train', str(n_train), '--n_valid', str(n_valid)],
                                 capture_output=True, text=True, check=True).stdout
            times[w].append(json.loads(out.splitlines()[-1])['secs'])
    medians = {w: [median(s[i] for s in t) for i in (0, 1)] for w, t in times.items()}
    return report(f'fresh processes, interleaved, medians of {rounds} rounds:', medians, n_train + n_valid)


@call_parse
def main(mode:str='both',   # fresh, one or both
         rounds:int=9,      # interleaved rounds
         n_train:int=400,   # training batches of 64 per run
         n_valid:int=100,   # validation batches of 64 per run
         child:str=None):   # internal: time one run of this way and print it as JSON
    "Time the Learner's own cost per batch against a hand-written loop."
    torch.set_num_threads(1)
    dls = get_dls(n_train, n_valid)
    if child:
        run_way(child, dls)   # warm-up
        return print(json.dumps({'secs': run_way(child, dls)}))
    print(f'nn.Linear(32, 10), batches of {BS}, {n_train} training + {n_valid} validation batches per run, 1 thread, '
          f'torch {torch.__version__}')
    if mode in ('fresh', 'both'): fresh_processes(rounds, n_train, n_valid)
    if mode in ('one', 'both'): one_process(dls, rounds, n_train + n_valid)
