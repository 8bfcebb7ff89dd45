"""The main job on a GPU: float32 against `MixedPrecision`, GPU waits per batch, and the Learner against a hand-written loop.

Needs only this repository and miniai's own requirements (not Accelerate). Three measurements:
  1. the main job's learner (`get_learner` from 16_train: batch-norm CNN, AdamW, one-cycle) trained in float32 and with
     `MixedPrecision()` (float16 and a gradient scaler on CUDA), interleaved for `rounds` rounds: each training pass's
     time, the medians, their ratio (mixed / float32: below 1 is faster) and the validation accuracies;
  2. the GPU waits of one epoch of a fit with DeviceCB, MetricsCB and ProgressCB, counted with
     `torch.cuda.set_sync_debug_mode('warn')` (each synchronising call warns), per batch and by source line;
  3. one epoch (a training and a validation pass) of that fit against the hand-written loop of
     bench/learner_overhead.py, interleaved.

Data: Fashion-MNIST if miniai can load it; `--synthetic` makes random images of the same size (60,000 + 10,000 by
default) whose class is a brighter band of rows, so no data files are needed and accuracies still mean something.

    python bench/cuda_main.py --synthetic                      # on a machine with a GPU
    python bench/cuda_main.py --synthetic --device cpu --n_train 2000 --n_valid 500 --epochs 1 --rounds 1   # a dry run
"""
import contextlib, copy, io, linecache, sys, time, warnings
from collections import Counter
from pathlib import Path
from statistics import median

import torch
import torch.nn.functional as F
from torch import nn, optim
from torcheval.metrics import MulticlassAccuracy
from fastcore.script import call_parse, store_true

from miniai.accel import MixedPrecision
from miniai.core import set_seed
from miniai.data import BatchDataset, batch_dl
from miniai.datasets import DataLoaders, decoded_dls, load_fashion_mnist
from miniai.init import get_model, init_weights
from miniai.learner import Callback, DeviceCB, MetricsCB, ProgressCB, TrainLearner
from miniai.train import get_learner

sys.path.insert(0, str(Path(__file__).parent))
from learner_overhead import loop_epoch   # the hand-written loop the Learner is measured against


def synthetic_dls(n_train, n_valid, bs, seed=0):
    "Random 28x28 uint8 images whose class c brightens rows 2c..2c+3, with their labels, as decoded DataLoaders."
    g = torch.Generator().manual_seed(seed)
    n = n_train + n_valid
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.randint(0, 200, (n, 1, 28, 28), generator=g, dtype=torch.int16)
    rows = torch.arange(28)
    band = (rows[None] >= 2*y[:, None]) & (rows[None] < 2*y[:, None] + 4)   # (n, 28): the rows to brighten
    x = (x + 15*band[:, None, :, None]).clamp(max=255).to(torch.uint8)
    return DataLoaders(batch_dl(BatchDataset(x[:n_train], y[:n_train]), bs, shuffle=True),
                       batch_dl(BatchDataset(x[n_train:], y[n_train:]), 2*bs))

def fashion_dls(n_train, n_valid, bs):
    "The first `n_train` training and `n_valid` test images of Fashion-MNIST, as decoded DataLoaders."
    dsd = load_fashion_mnist()
    dsd['train'], dsd['test'] = dsd['train'].select(range(n_train)), dsd['test'].select(range(n_valid))
    return decoded_dls(dsd, bs)


def sync(device):
    if torch.device(device).type == 'cuda': torch.cuda.synchronize()

class PassTimer(Callback):
    "The seconds of every training pass, waiting for the device at both ends."
    def __init__(self, device): self.device = device
    def before_fit(self, learn): self.secs = []
    def before_epoch(self, learn):
        sync(self.device)
        self.t0 = time.perf_counter()
    def after_epoch(self, learn):
        sync(self.device)
        if learn.training: self.secs.append(time.perf_counter() - self.t0)


def compare_precisions(dls, device, epochs, rounds, seed):
    "Measurement 1: float32 against MixedPrecision, interleaved."
    modes = {'float32': list, 'mixed': lambda: [MixedPrecision()]}
    secs, accs = {m: [] for m in modes}, {m: [] for m in modes}
    for r in range(rounds):
        for name in (list(modes) if r % 2 == 0 else list(modes)[::-1]):
            set_seed(seed)
            timer = PassTimer(device)
            learn = get_learner(dls, epochs, device=device, progress=False, cbs=[timer, *modes[name]()])
            with contextlib.redirect_stdout(io.StringIO()): learn.fit(epochs)
            secs[name] += timer.secs[1:] if len(timer.secs) > 1 else timer.secs   # the first pass warms up the GPU
            accs[name].append(learn.metrics.history[-1]['accuracy'])
            print(f'  round {r+1} {name:8} accuracy {accs[name][-1]:.4f}  training passes: '
                  + ', '.join(f'{s:.2f}s' for s in timer.secs), flush=True)
    med = {m: median(v) for m, v in secs.items()}
    print(f"  median training pass: float32 {med['float32']:.3f}s, mixed {med['mixed']:.3f}s; "
          f"ratio mixed/float32 {med['mixed']/med['float32']:.2f}")
    print(f"  accuracy after {epochs} epochs: float32 {', '.join(f'{a:.4f}' for a in accs['float32'])}; "
          f"mixed {', '.join(f'{a:.4f}' for a in accs['mixed'])}")


def three_cb_learner(model, dls, device, lr=0.05):
    "A fit with DeviceCB, MetricsCB (accuracy) and ProgressCB, bars drawn (into a buffer the caller supplies)."
    return TrainLearner(model, dls, F.cross_entropy, lr=lr, opt_func=optim.SGD,
                        cbs=[DeviceCB(device), MetricsCB(accuracy=MulticlassAccuracy()), ProgressCB(bars=True)])

def count_syncs(dls, device):
    "Measurement 2: the synchronising calls of one epoch, by source line."
    if torch.device(device).type != 'cuda': return print('  skipped: GPU waits are counted on CUDA only')
    learn = three_cb_learner(get_model(nfs=(1, 16, 32, 64, 128), norm=nn.BatchNorm2d).apply(init_weights), dls, device)
    with contextlib.redirect_stdout(io.StringIO()):
        learn.fit(1)   # warm up: the metrics move to the device in this fit
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            torch.cuda.set_sync_debug_mode('warn')
            try: learn.fit(1)
            finally: torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in caught if 'synchroniz' in str(w.message).lower()]
    n_batches = len(dls.train) + len(dls.valid)
    print(f'  {len(syncs)} waits in one epoch of {len(dls.train)} training + {len(dls.valid)} validation batches: '
          f'{len(syncs)/n_batches:.2f} per batch')
    for (fn, line), n in Counter((w.filename, w.lineno) for w in syncs).most_common(8):
        print(f'    {n:6}  {Path(fn).name}:{line}  {linecache.getline(fn, line).strip()}')


def learner_epoch(model, dls, lr, device):
    "One epoch of the three-callback fit."
    learn = three_cb_learner(model, dls, device, lr)
    with contextlib.redirect_stdout(io.StringIO()): learn.fit(1)

def compare_loop(dls, device, rounds):
    "Measurement 3: one epoch of the three-callback fit against the hand-written loop, interleaved."
    init = get_model(nfs=(1, 16, 32, 64, 128), norm=nn.BatchNorm2d).apply(init_weights).to(device)
    ways, secs = {'loop': loop_epoch, 'learner': learner_epoch}, {'loop': [], 'learner': []}
    for r in range(rounds + 1):   # round 0 warms up
        for name in (list(ways) if r % 2 == 0 else list(ways)[::-1]):
            model = copy.deepcopy(init)
            sync(device)
            t0 = time.perf_counter()
            ways[name](model, dls, 0.05, device)
            sync(device)
            if r: secs[name].append(time.perf_counter() - t0)
            if r: print(f'  round {r} {name:8} {secs[name][-1]:.3f}s', flush=True)
    med = {k: median(v) for k, v in secs.items()}
    print(f"  median epoch: loop {med['loop']:.3f}s, learner {med['learner']:.3f}s; ratio learner/loop {med['learner']/med['loop']:.3f}")


@call_parse
def main(device:str='cuda',        # the device to train on (cpu for a dry run)
         synthetic:store_true=False, # random images of Fashion-MNIST's size instead of Fashion-MNIST
         n_train:int=60_000,       # training images
         n_valid:int=10_000,       # validation images
         epochs:int=3,             # epochs per run in measurement 1
         rounds:int=2,             # interleaved rounds of each measurement
         bs:int=256,               # batch size (validation: twice this)
         seed:int=1):              # random seed of each run
    "Run the main job on `device` in float32 and with MixedPrecision, count the GPU waits per batch, and time the Learner against a loop."
    if torch.device(device).type == 'cuda' and not torch.cuda.is_available(): raise SystemExit('No CUDA device here: pass --device cpu for a dry run.')
    dls = synthetic_dls(n_train, n_valid, bs) if synthetic else fashion_dls(n_train, n_valid, bs)
    name = torch.cuda.get_device_name(device) if torch.device(device).type == 'cuda' else f'CPU, {torch.get_num_threads()} threads'
    print(f"{'synthetic' if synthetic else 'Fashion-MNIST'}: {n_train} training + {n_valid} validation images, "
          f"batch size {bs}, on {device} ({name}); torch {torch.__version__}")
    print('\n1. float32 against MixedPrecision:')
    compare_precisions(dls, device, epochs, rounds, seed)
    print('\n2. GPU waits of a fit with DeviceCB, MetricsCB and ProgressCB:')
    count_syncs(dls, device)
    print('\n3. one epoch: the Learner (DeviceCB, MetricsCB, ProgressCB) against a hand-written loop:')
    compare_loop(dls, device, rounds)
