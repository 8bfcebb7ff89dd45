"""Run by tests/test_accel.py under `torchrun --standalone --nproc_per_node 2`: train a tiny model with `AccelerateCB`
and `CheckpointCB` on synthetic data three times: uninterrupted; stopped in the middle of epoch 1; resumed from that
run's checkpoint (from another seed: the checkpoint must restore the data order). Then predict with `get_preds` from a
learner that only loaded the weights. Each process writes what it saw to OUT/rank{R}.json (and rank 0 the predictions
to OUT/preds.pt).
Usage: torchrun --standalone --nproc_per_node 2 tests/accel_two_procs.py OUT"""
import hashlib, json, os, sys
from pathlib import Path
import torch
from torch import nn, optim
import torch.nn.functional as F
from torch.utils.data import Sampler
from torcheval.metrics import MulticlassAccuracy
from miniai.accel import AccelerateCB
from miniai.checkpoint import CheckpointCB, find_in
from miniai.learner import TrainLearner, MetricsCB, Callback, CancelFitException
from miniai.datasets import DataLoaders
from miniai.data import BatchDataset, batch_dl
from miniai.core import set_seed

def tiny_dls(n_train=256, n_valid=100, bs=32):
    "Noisy images whose class is a brighter band of rows: a tiny model gets part of the way in a few epochs."
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (n_train+n_valid,), generator=g)
    x = torch.rand(n_train+n_valid, 1, 28, 28, generator=g)*200
    for i, c in enumerate(y): x[i, 0, 2*c:2*c+4] += 60
    x = x.to(torch.uint8)
    return DataLoaders(batch_dl(BatchDataset(x[:n_train], y[:n_train]), bs, shuffle=True),
                       batch_dl(BatchDataset(x[n_train:], y[n_train:]), bs))

def tiny_learner(cbs=()):
    "A small conv net with batch norm (its running statistics are buffers the processes must agree on) and accuracy."
    model = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8*7*7, 10))
    return TrainLearner(model, tiny_dls(), F.cross_entropy, lr=0.1, opt_func=optim.SGD,
                        cbs=[MetricsCB(accuracy=MulticlassAccuracy()), *cbs])

def fingerprint(tensors):
    "A fingerprint of named tensors, byte for byte."
    h = hashlib.sha1()
    for k, v in tensors: h.update(k.encode()); h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()

class RecordCB(Callback):
    "Fingerprint this process's training batches and its weights after every step, its buffers after validation."
    def before_fit(self, learn): self.batches, self.weights, self.buffers = [], [], []
    def before_batch(self, learn):
        if learn.training: self.batches.append(fingerprint(zip('xy', learn.batch)))
    def after_step(self, learn):
        self.weights.append(fingerprint(learn.accelerator.unwrap_model(learn.model).named_parameters()))
    def after_epoch(self, learn):
        if not learn.training: self.buffers.append(fingerprint(learn.model.named_buffers()))

class StopMidEpoch(Callback):
    "End the fit after training batch 1 of epoch 1, in every process, as a crash would."
    def after_batch(self, learn):
        if learn.training and learn.epoch == 1 and learn.iter == 1: raise CancelFitException()

def samplers(learn): return {path: dict(vars(s)) for path, s in find_in(learn.dls, Sampler).items()}

def same_attrs(a, b): return a.keys() == b.keys() and all(a[k].keys() == b[k].keys() and all(a[k][n] is b[k][n] for n in a[k]) for k in a)

if __name__ == '__main__':
    out = Path(sys.argv[1])
    res = dict(rank=int(os.environ['RANK']))
    for run, seed, cbs in (('full', 1, [CheckpointCB(out/'full')]), ('stopped', 1, [CheckpointCB(out/'stopped'), StopMidEpoch()]),
                           ('resumed', 2, [CheckpointCB(out/'stopped', resume=True)])):
        set_seed(seed)
        rec = RecordCB()
        learn = tiny_learner([AccelerateCB(), *cbs, rec])
        before = samplers(learn)
        learn.fit(3)
        res[run] = dict(batches=rec.batches, weights=rec.weights, buffers=rec.buffers,
                        samplers_unchanged=same_attrs(samplers(learn), before))
    res.update(distributed_type=str(learn.accelerator.distributed_type), main=learn.is_main_process,
               n_batches_one_process=len(learn.dls.train), accuracy=learn.metrics.history[-1]['accuracy'])
    # Predictions by a learner that only loaded the weights: gathered from both processes, in order.
    predictor = tiny_learner([AccelerateCB()]).load(out/'full'/'last.pt', model_only=True)
    preds, targs = predictor.get_preds()
    res.update(preds=fingerprint([('p', preds), ('t', targs)]), n_preds=len(preds),
               accelerator_left=hasattr(predictor, 'accelerator'))
    if res['rank'] == 0: torch.save({'preds': preds, 'targs': targs}, out/'preds.pt')
    (out/f'rank{res["rank"]}.json').write_text(json.dumps(res))
