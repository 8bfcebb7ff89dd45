"Mixed precision trains as well as float32 and leaves nothing behind; AccelerateCB in one process changes nothing, and in two processes (torchrun, gloo) splits the batches, keeps the copies identical, gathers exact metrics and writes one checkpoint."
import json, os, subprocess, sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from datasets import DatasetDict

from miniai.accel import AccelerateCB, MixedPrecision, take_steps
from miniai.checkpoint import CheckpointCB, read_checkpoint
from miniai.core import set_seed
from miniai.data import load_fashion_mnist
from miniai.learner import Callback, DeviceCB, MetricsCB, TrainLearner
from miniai.train import train

sys.path.insert(0, str(Path(__file__).parent))
from accel_two_procs import tiny_learner

CHILD_ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1', 'MPLBACKEND': 'Agg'}


def quiet_learner(cbs=()):
    "`tiny_learner` with its MetricsCB (the first callback) printing nothing."
    learn = tiny_learner(cbs)
    learn.cbs[0].log_to(lambda row: None)
    return learn


def test_mixed_precision_within_a_point_of_float32():
    "The main job's model, 30,000 training images, 2 epochs, the 10,000 test images: bfloat16 autocast against float32."
    dsd = load_fashion_mnist()
    sub = DatasetDict(train=dsd['train'].select(range(30_000)), test=dsd['test'])
    _, acc32 = train(2, dd=sub, progress=False)
    _, acc16 = train(2, dd=sub, progress=False, cbs=[MixedPrecision()])
    assert acc32 > 0.85, acc32   # both really trained
    assert abs(acc16 - acc32) < 0.01, (acc16, acc32)


class Raise(Callback):
    "Raise `exc` after the prediction of the second training batch."
    def __init__(self, exc): self.exc = exc
    def after_predict(self, learn):
        if learn.training and learn.iter == 1: raise self.exc


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_half_precision_forward_and_nothing_left_behind(dtype):
    "Predictions in the half type, loss and weights in float32; an error mid-batch leaves autocast and gives the steps back."
    seen = {}
    class Dtypes(Callback):
        def after_loss(self, learn): seen['dtypes'] = learn.preds.dtype, learn.loss.dtype
    mp = MixedPrecision(dtype)
    learn = quiet_learner([mp, Dtypes()])
    learn.fit(1)
    assert seen['dtypes'] == (dtype, torch.float32)
    assert {p.dtype for p in learn.model.parameters()} == {torch.float32}
    assert mp.scaler.is_enabled() == (dtype == torch.float16)
    with pytest.raises(RuntimeError, match='boom'): learn.fit(1, cbs=Raise(RuntimeError('boom')))
    assert not torch.is_autocast_enabled('cpu')
    assert 'backward' not in vars(learn) and 'step' not in vars(learn)


def test_scaler_state_goes_through_a_checkpoint(tmp_path):
    "float16 on the CPU has a scaler: its state is saved by CheckpointCB and restored into a new callback by `load`."
    mp = MixedPrecision(torch.float16)
    set_seed(1)
    quiet_learner([mp, CheckpointCB(tmp_path)]).fit(2)
    saved = read_checkpoint(tmp_path/'last.pt')['cbs']['MixedPrecision']
    assert saved == mp.state_dict() and saved['scale'] > 1
    fresh = MixedPrecision(torch.float16)
    learn = quiet_learner([fresh])
    learn.load(tmp_path/'last.pt')
    assert fresh.state_dict() == saved
    learn.fit(1, train=False)   # the fit makes the scaler from the loaded state
    assert fresh.scaler.get_scale() == saved['scale']


def test_two_callbacks_cannot_take_the_same_step():
    learn = quiet_learner()
    take_steps(learn, 'first', backward=lambda: None)
    with pytest.raises(RuntimeError, match='both want to run `learn.backward'): take_steps(learn, 'second', backward=print)
    learn = quiet_learner([AccelerateCB(), MixedPrecision(torch.float16)])
    with pytest.raises(RuntimeError, match="AccelerateCB\\(mixed_precision='fp16'\\)"): learn.fit(1)
    assert type(learn.model) is torch.nn.Sequential and 'backward' not in vars(learn)


def weights(learn): return {k: v.clone() for k, v in learn.model.state_dict().items()}

def test_accelerate_in_one_process_changes_nothing():
    "Same seed, same weights, same metrics; bfloat16 MixedPrecision composes with it; the learner gets its own objects back."
    runs = []
    for cbs in ([], [AccelerateCB()], [MixedPrecision()], [AccelerateCB(), MixedPrecision()]):
        set_seed(1)
        learn = quiet_learner(cbs)
        model, dls = learn.model, learn.dls
        learn.fit(2)
        assert learn.model is model and learn.dls is dls and isinstance(learn.opt, torch.optim.SGD)
        runs.append((weights(learn), learn.cbs[0].history))
    for (w1, h1), (w2, h2) in (runs[:2], runs[2:]):
        assert h1 == h2
        for k in w1: assert torch.equal(w1[k], w2[k]), k
    assert learn.is_main_process


def test_accelerate_bad_setups_fail_clearly(monkeypatch):
    "A DeviceCB on another device than Accelerate's, or no accelerate installed: one clear error, the learner unchanged."
    learn = quiet_learner([AccelerateCB(), DeviceCB('meta')])
    model, dls = learn.model, learn.dls
    with pytest.raises(ValueError, match='remove the DeviceCB'): learn.fit(1)
    assert learn.model is model and learn.dls is dls and 'backward' not in vars(learn)
    monkeypatch.setitem(sys.modules, 'accelerate', None)   # `import accelerate` now fails, as where it is not installed
    learn = quiet_learner([AccelerateCB()])
    model, dls = learn.model, learn.dls
    with pytest.raises(ImportError, match=r'pip install "miniai\[accel\]"'): learn.fit(1)
    assert learn.model is model and learn.dls is dls and 'backward' not in vars(learn)


def test_two_processes_with_torchrun(tmp_path):
    "torchrun starts two CPU processes (gloo): half the batches each, identical weights after every step, exact gathered accuracy, one writer."
    script = Path(__file__).parent/'accel_two_procs.py'
    proc = subprocess.run(['torchrun', '--standalone', '--nproc_per_node', '2', str(script), str(tmp_path)],
                          capture_output=True, text=True, env=CHILD_ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = [json.loads((tmp_path/f'rank{r}.json').read_text()) for r in (0, 1)]
    assert r0['distributed_type'] == r1['distributed_type'] == 'DistributedType.MULTI_CPU'
    assert [r0['main'], r1['main']] == [True, False]
    assert r0['n_batches'] == r1['n_batches'] == r0['n_batches_one_process']//2   # 8 batches: 4 each, every epoch
    assert len(r0['weights']) == 3*r0['n_batches'] and r0['weights'] == r1['weights']
    assert len(set(r0['weights'])) == len(r0['weights'])   # every step changed the weights
    assert r0['buffers'] == r1['buffers']
    assert r0['accuracy'] == r1['accuracy']
    # Only the main process printed, and only it wrote: one checkpoint (last.pt, with best.pt its copy).
    assert proc.stdout.count("'epoch': 2, 'train': 'eval'") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ['best.pt', 'last.pt', 'rank0.json', 'rank1.json']
    # The checkpoint loads into a plain single-process learner, which gets exactly the gathered accuracy.
    single = quiet_learner()
    single.load(tmp_path/'last.pt')
    single.fit(1, train=False)
    assert single.cbs[0].history[-1]['accuracy'] == r0['accuracy']


def test_mixed_precision_under_the_lesson_learner(tiny_dls, lesson_learner):
    "Without `after_loss` or cleanup events, MixedPrecision still leaves autocast after every batch."
    from miniai.learner import TrainCB, MetricsCB
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    dtypes = []
    class Seen(Callback):
        order = MixedPrecision.order + 1
        def after_batch(self, learn): dtypes.append(learn.preds.dtype)
    lesson_learner(model, tiny_dls(64, 32, 8, n_classes=2), F.cross_entropy, 0.1, [TrainCB(), MixedPrecision(), MetricsCB(), Seen()]).fit(1)
    assert dtypes == [torch.bfloat16] * 12                     # 8 training + 4 validation batches, each under autocast
    assert not torch.is_autocast_enabled('cpu')                 # and autocast was left every time
