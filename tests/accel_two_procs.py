"""Run by tests/test_accel.py and nbs/15_accel.ipynb under `torchrun --standalone --nproc_per_node 2`: train a tiny
model with `AccelerateCB` and `CheckpointCB` on synthetic data; each process writes what it saw to OUT/rank{R}.json.
Usage: torchrun --standalone --nproc_per_node 2 tests/accel_two_procs.py OUT"""
import hashlib, json, os, sys
from pathlib import Path
import torch
from torch import nn, optim
import torch.nn.functional as F
from torcheval.metrics import MulticlassAccuracy
from miniai.accel import AccelerateCB
from miniai.checkpoint import CheckpointCB
from miniai.learner import TrainLearner, MetricsCB, Callback
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
    "Count this process's training batches; fingerprint its weights after every step, its buffers after validation."
    def before_fit(self, learn): self.n_batches, self.weights, self.buffers = 0, [], []
    def after_step(self, learn):
        self.n_batches += 1
        self.weights.append(fingerprint(learn.accelerator.unwrap_model(learn.model).named_parameters()))
    def after_epoch(self, learn):
        if not learn.training: self.buffers.append(fingerprint(learn.model.named_buffers()))

if __name__ == '__main__':
    out = Path(sys.argv[1])
    set_seed(1)
    rec = RecordCB()
    learn = tiny_learner([AccelerateCB(), CheckpointCB(out), rec])
    learn.fit(3)
    res = dict(rank=int(os.environ['RANK']), distributed_type=str(learn.accelerator.distributed_type),
               n_batches_one_process=len(learn.dls.train), n_batches=rec.n_batches // 3, weights=rec.weights,
               buffers=rec.buffers, accuracy=learn.metrics.history[-1]['accuracy'], main=learn.is_main_process)
    (out/f'rank{res["rank"]}.json').write_text(json.dumps(res))
