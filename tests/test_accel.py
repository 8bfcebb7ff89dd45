"Mixed precision leaves nothing behind and its scaler goes on through a checkpoint (that it trains as well as float32 is checked in 18_accel); AccelerateCB in one process changes nothing (get_preds included), and in two processes (torchrun, gloo) splits the batches, keeps the copies identical, gathers exact metrics and predictions, writes one checkpoint, resumes to the same data order, and gives the samplers back."
import json, os, subprocess, sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from miniai.accel import AccelerateCB, MixedPrecision, take_steps, _standard_dl
from miniai.checkpoint import CheckpointCB, read_checkpoint
from miniai.core import set_seed
from miniai.learner import Callback, DeviceCB, MetricsCB, TrainLearner

sys.path.insert(0, str(Path(__file__).parent))
from accel_two_procs import tiny_learner

CHILD_ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1', 'MPLBACKEND': 'Agg'}


def quiet_learner(cbs=()):
    "`tiny_learner` with its MetricsCB (the first callback) printing nothing."
    learn = tiny_learner(cbs)
    learn.cbs[0].log_to(lambda row: None)
    return learn


# Whether mixed precision trains as well as float32 (the main job's recipe, same seed, accuracy within two points) is
# checked where it is taught, in 18_accel, which nbdev_test runs: where the CPU has no bfloat16 units that comparison
# costs a minute, too much to pay twice.


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


def test_scaler_state_goes_on_through_a_checkpoint(tmp_path):
    "float16 on the CPU has a scaler. Started at a scale that grows every 2 steps, its state moves every epoch; saved after epoch 0 and loaded into a new learner, one more epoch ends with the uninterrupted run's scaler state and weights."
    start = {'scale': 1024., 'growth_factor': 2., 'backoff_factor': 0.5, 'growth_interval': 2, '_growth_tracker': 0}
    def run(epochs, cbs=()):
        set_seed(1)
        mp = MixedPrecision(torch.float16)
        mp.load_state_dict(start)
        learn = quiet_learner([mp, *cbs])
        learn.fit(epochs)
        return learn, mp
    full, mp_full = run(2)
    run(1, [CheckpointCB(tmp_path)])
    saved = read_checkpoint(tmp_path/'last.pt')['cbs']['MixedPrecision']
    assert saved['scale'] != start['scale'] and mp_full.state_dict() != saved   # it moved in each epoch
    set_seed(5)   # another start: the checkpoint brings back everything
    learn = quiet_learner([fresh := MixedPrecision(torch.float16)])
    learn.load(tmp_path/'last.pt')
    learn.fit(2)   # after `load`: on with the saved run, to 2 epochs in all
    assert fresh.state_dict() == mp_full.state_dict()
    assert weights(learn).keys() == weights(full).keys() and all(torch.equal(v, weights(full)[k]) for k, v in weights(learn).items())


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


def test_get_preds_with_accelerate():
    "In one process `get_preds` with AccelerateCB gives the plain predictions and leaves no accelerator, wrapper or step behind; a learner that never trained (no optimizer) predicts too."
    set_seed(1)
    learn = quiet_learner()
    learn.fit(1)
    expected = learn.get_preds()
    learn.cbs.append(AccelerateCB())
    preds = learn.get_preds()
    for a, b in zip(preds, expected): assert torch.equal(a, b)
    assert not hasattr(learn, 'accelerator') and type(learn.model) is torch.nn.Sequential and 'backward' not in vars(learn)
    fresh = quiet_learner([AccelerateCB()])
    fresh.model.load_state_dict(learn.model.state_dict())
    assert torch.equal(fresh.get_preds()[0], expected[0]) and not hasattr(fresh, 'opt')


def test_shuffle_state_found_under_two_processes(tmp_path):
    "A DataLoader split for two processes keeps its sampler's generator three levels down: the checkpoint holds its state."
    from accelerate.data_loader import prepare_data_loader
    from miniai.checkpoint import rng_states, set_rng_states
    from miniai.datasets import DataLoaders
    dl = quiet_learner().dls.train
    shard = prepare_data_loader(_standard_dl(dl), num_processes=2, process_index=0, put_on_device=False)
    dls = DataLoaders(shard, None)
    states = rng_states(dls)
    assert list(states['generators']) == ['train.base_dataloader.batch_sampler.batch_sampler.sampler.generator']
    order = [b[1].tolist() for b in shard]
    set_rng_states(states, dls)
    assert [b[1].tolist() for b in shard] == order


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
    "torchrun starts two CPU processes (gloo): half the batches each, identical weights after every step, exact gathered accuracy, one writer; a run stopped mid-epoch resumes (from another seed) to the same data order and weights; get_preds gathers every prediction; the user's samplers are given back."
    script = Path(__file__).parent/'accel_two_procs.py'
    proc = subprocess.run(['torchrun', '--standalone', '--nproc_per_node', '2', str(script), str(tmp_path)],
                          capture_output=True, text=True, env=CHILD_ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = [json.loads((tmp_path/f'rank{r}.json').read_text()) for r in (0, 1)]
    assert r0['distributed_type'] == r1['distributed_type'] == 'DistributedType.MULTI_CPU'
    assert [r0['main'], r1['main']] == [True, False]
    n = r0['n_batches_one_process']//2   # 8 batches: 4 each, every epoch
    full0, full1 = r0['full'], r1['full']
    assert len(full0['batches']) == len(full1['batches']) == len(full0['weights']) == 3*n
    assert not set(full0['batches']) & set(full1['batches'])   # each process its own batches
    assert full0['weights'] == full1['weights'] and len(set(full0['weights'])) == 3*n   # every step changed the weights
    assert full0['buffers'] == full1['buffers']
    assert r0['accuracy'] == r1['accuracy']
    for r in (r0, r1):
        # Stopped after 2 batches of epoch 1, then resumed from the epoch-0 checkpoint: epochs 1 and 2 again, the same
        # batches in the same order and the same weights after every step as the run that was never stopped.
        assert r['stopped']['batches'] == r['full']['batches'][:n+2]
        assert r['resumed']['batches'] == r['full']['batches'][n:]
        assert r['resumed']['weights'] == r['full']['weights'][n:]
        assert all(r[run]['samplers_unchanged'] for run in ('full', 'stopped', 'resumed'))
        assert r['n_preds'] == 100 and r['preds'] == r0['preds'] and not r['accelerator_left']
    gens = read_checkpoint(tmp_path/'stopped'/'last.pt')['rng']['generators']
    assert list(gens) == ['train.base_dataloader.batch_sampler.batch_sampler.sampler.generator']
    # Only the main process printed, and only it wrote: one checkpoint (last.pt, with best.pt its copy) per run.
    assert proc.stdout.count("'epoch': 2, 'train': 'eval'") == 2   # the full and the resumed runs
    assert sorted(p.name for p in tmp_path.iterdir()) == ['full', 'preds.pt', 'rank0.json', 'rank1.json', 'stopped']
    assert sorted(p.name for p in (tmp_path/'full').iterdir()) == ['best.pt', 'last.pt']
    # The checkpoint loads into a plain single-process learner, which gets exactly the gathered accuracy, and predicts
    # what the two processes gathered.
    single = quiet_learner()
    single.load(tmp_path/'full'/'last.pt', model_only=True)
    single.fit(1, train=False)
    assert single.cbs[0].history[-1]['accuracy'] == r0['accuracy']
    preds, targs = single.get_preds()
    gathered = torch.load(tmp_path/'preds.pt')
    assert torch.equal(gathered['targs'], targs) and torch.allclose(gathered['preds'], preds, atol=1e-5)


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


# ---------- a learner's own steps are kept (issue 22, items 8 and 17); Accelerate gathers only what is needed (item 14) ----------

class ClippingLearner(TrainLearner):
    "A learner whose own `step` clips the gradients first, and records their norm as it sees them; its own `backward` counts."
    def backward(self):
        self.backwards += 1
        super().backward()
    def step(self):
        self.norms.append(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=1e-3).item())
        self.opt.step()

def clipping_learner(cbs):
    plain = quiet_learner()
    learn = ClippingLearner(plain.model, plain.dls, F.cross_entropy, lr=0.1, opt_func=torch.optim.SGD, cbs=[*plain.cbs, *cbs])
    learn.norms, learn.backwards = [], 0
    return learn

@pytest.mark.parametrize('cbs', [lambda: [MixedPrecision(torch.float16)], lambda: [AccelerateCB()]], ids=['float16', 'accelerate'])
def test_a_learners_own_step_is_kept(cbs):
    "A subclass's own `backward` and `step` (here: clip the gradients) run for every batch; the step sees the true (unscaled) gradients."
    set_seed(1)
    learn = clipping_learner(cbs())
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    learn.fit(1)
    n = len(learn.dls.train)
    assert len(learn.norms) == learn.backwards == n
    # Unscaled gradients of a cross-entropy: of order 1 (the float16 scaler multiplies them by 65536 at first)
    assert 0 < max(learn.norms) < 100, learn.norms
    # Clipped to 1e-3 with lr 0.1: no weight moved by more than 1e-4 per step
    moved = max((learn.model.state_dict()[k] - v).abs().max().item() for k, v in before.items() if v.dtype.is_floating_point and 'running' not in k)
    assert moved <= 1.01e-4*n
    assert 'backward' not in vars(learn) and 'step' not in vars(learn)


def test_the_courses_mixed_precision_brings_the_training_steps():
    "`Learner(model, dls, loss_func, cbs=[MixedPrecision()])`, as in the course, trains; with `TrainCB` or a `TrainLearner` the steps run once."
    from miniai.learner import Learner, TrainCB
    def run(make):
        set_seed(1)
        plain = quiet_learner()
        learn = make(plain)
        learn.fit(1)
        return weights(learn), learn.cbs[0].history
    course = run(lambda p: Learner(p.model, p.dls, F.cross_entropy, lr=0.1, cbs=[p.cbs[0], MixedPrecision()]))
    with_traincb = run(lambda p: Learner(p.model, p.dls, F.cross_entropy, lr=0.1, cbs=[p.cbs[0], TrainCB(), MixedPrecision()]))
    train_learner = run(lambda p: TrainLearner(p.model, p.dls, F.cross_entropy, lr=0.1, cbs=[p.cbs[0], MixedPrecision()]))
    for w, h in (with_traincb, train_learner):   # steps taken twice would give other weights
        assert h == course[1] and all(torch.equal(v, course[0][k]) for k, v in w.items())
    assert isinstance(MixedPrecision(), TrainCB)
    assert course[1][-1]['accuracy'] > 0.1 or course[1][0]['loss'] > course[1][-1]['loss']   # it trained


class GatherSpy:
    "Stands in for `Accelerator.gather_for_metrics` in one process, pretending there are two: records what is gathered."
    def __init__(self): self.calls = []
    def __call__(self, data):
        self.calls.append([tuple(t.shape) for t in torch.utils._pytree.tree_leaves(data)])
        return data

@pytest.mark.parametrize('metrics, expected', [('accuracy', 'preds'), ('none', 'loss'), ('no MetricsCB', None)])
def test_accelerate_gathers_only_what_the_metrics_need(metrics, expected, monkeypatch):
    "Predictions and targets (never the inputs) where metrics need them; one number per item where only the mean loss is kept; nothing without metrics."
    from accelerate import Accelerator
    set_seed(1)
    learn = quiet_learner([cb := AccelerateCB()])
    if metrics == 'none': learn.cbs[0] = MetricsCB(); learn.cbs[0].log_to(lambda row: None)
    if metrics == 'no MetricsCB': learn.cbs.pop(0)
    cb.acc, spy = Accelerator(cpu=True), GatherSpy()
    cb.acc.gather_for_metrics = spy
    monkeypatch.setattr(Accelerator, 'num_processes', property(lambda self: 2))   # as if there were two
    seen = []
    learn.fit(1, cbs=[type('Count', (Callback,), {'after_loss': lambda s, l: seen.append(l.iter)})()])
    assert len(spy.calls) == (len(seen) if expected else 0)
    if expected == 'preds': assert all(len(c) == 2 and c[0][1:] == (10,) and len(c[1]) == 1 for c in spy.calls), spy.calls[:2]
    if expected == 'loss': assert all(len(c) == 1 and len(c[0]) == 1 for c in spy.calls), spy.calls[:2]
