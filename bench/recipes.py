"""The main job's recipes side by side (`miniai.train.RECIPES`): test accuracy over several seeds, and training time.

Each run trains as `miniai_train --recipe NAME` does: on the first 50,000 training images, validating after every
epoch on the last 10,000 (held out), keeping the weights of the epoch with the best validation accuracy (`best.pt`);
then it measures those weights once on the 10,000 test images, as `miniai_eval` does. Nothing is chosen on the test
split. The time is the fit's (training and the per-epoch validation passes), as wall-clock seconds and as the CPU
seconds of the whole process (all threads): on a machine shared with other work the wall time is inflated, and the CPU
time of a one-thread run estimates the wall time of a quiet machine.

    python bench/recipes.py                                  # every recipe, seeds 1, 2 and 3, 2 threads
    python bench/recipes.py --recipes resnet --epochs 20 --seeds 1
    python bench/recipes.py --threads 1                      # on a busy machine: CPU time stays honest

Prints a line per run, then a table: per recipe the test accuracy's mean and spread (lowest to highest) over the
seeds, the validation accuracy of the kept epoch, and the median fit time."""
import copy, statistics, time

import torch
from datasets import DatasetDict
from fastcore.script import call_parse
from torcheval.metrics import MulticlassAccuracy

from miniai.learner import Callback, MetricsCB
from miniai.datasets import decoded_dls
from miniai.train import RECIPES, get_recipe, train
from miniai.commands import load_data
import miniai.checkpoint   # noqa: F401  (adds `Learner.get_preds`)


class KeepBestCB(Callback):
    "After each validation pass, keep a copy of the weights if its accuracy is the best so far (as `best.pt`); time the fit."
    order = MetricsCB.order + 1
    def before_fit(self, learn):
        self.best, self.best_epoch, self.state = -1., None, None
        self.wall, self.cpu = time.perf_counter(), time.process_time()
    def after_epoch(self, learn):
        if learn.training: return
        acc = learn.metrics.metrics['accuracy'].compute().item()
        if acc > self.best: self.best, self.best_epoch, self.state = acc, learn.epoch, copy.deepcopy(learn.model.state_dict())
    def after_fit(self, learn): self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def run(recipe, seed, dsd, epochs=None, **changes):
    "Train `recipe` (its settings changed by `changes`) with `seed`; return the kept epoch's validation accuracy, its test accuracy, and the fit's time."
    keep = KeepBestCB()
    learn, _ = train(epochs, seed=seed, dd=DatasetDict(train=dsd['train'], valid=dsd['valid']), progress=False,
                     cbs=[keep], recipe=recipe, **changes)
    learn.model.load_state_dict(keep.state)
    test_dl = decoded_dls(DatasetDict(train=dsd['train'], test=dsd['test']), get_recipe(recipe)['bs']).valid
    preds, targs = learn.get_preds(test_dl)
    test = MulticlassAccuracy().update(preds, targs).compute().item()
    return dict(recipe=recipe, seed=seed, epochs=learn.n_epochs, best_epoch=keep.best_epoch+1, valid=keep.best,
                test=test, wall=keep.wall, cpu=keep.cpu)


@call_parse
def main(recipes:str=None,  # comma-separated recipe names (default: all of them)
         seeds:str='1,2,3', # comma-separated seeds
         epochs:int=None,   # epochs (default: each recipe's own)
         threads:int=2):    # torch CPU threads
    "Each recipe's test accuracy over the seeds (mean and spread) and its training time, side by side."
    torch.set_num_threads(threads)
    names = recipes.split(',') if recipes else list(RECIPES)
    for nm in names: get_recipe(nm)   # an unknown name fails before anything trains
    seeds = [int(s) for s in seeds.split(',')]
    dsd = load_data({'data': None, 'n_holdout': 10_000, 'n_train': None, 'n_valid': None})   # as miniai_train
    print(f"{len(dsd['train'])} training, {len(dsd['valid'])} validation, {len(dsd['test'])} test images; "
          f"{threads} thread(s)", flush=True)
    results = []
    for nm in names:
        for seed in seeds:
            r = run(nm, seed, dsd, epochs)
            results.append(r)
            print(f"{nm} seed {seed}: {r['epochs']} epochs, kept epoch {r['best_epoch']} (validation {r['valid']:.4f}), "
                  f"test {r['test']:.4f}; fit {r['wall']:.0f}s wall, {r['cpu']:.0f}s CPU", flush=True)
    print(f"\n{'recipe':<10}{'epochs':>7}{'test mean':>11}{'test spread':>17}{'valid mean':>12}{'wall s':>8}{'CPU s':>8}")
    for nm in names:
        rs = [r for r in results if r['recipe'] == nm]
        tests = [r['test'] for r in rs]
        print(f"{nm:<10}{rs[0]['epochs']:>7}{statistics.mean(tests):>11.4f}{f'{min(tests):.4f}-{max(tests):.4f}':>17}"
              f"{statistics.mean(r['valid'] for r in rs):>12.4f}{statistics.median(r['wall'] for r in rs):>8.0f}"
              f"{statistics.median(r['cpu'] for r in rs):>8.0f}")
