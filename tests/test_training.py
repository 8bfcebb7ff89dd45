"Tests of miniai.training: accuracy, Dataset, get_dls and fit, including bad input and edge cases."
import pytest, torch
import torch.nn.functional as F
from torch import nn, optim
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler

from miniai.training import accuracy, report, Dataset, fit, get_dls


# accuracy and report

def test_accuracy_known_inputs():
    out = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert accuracy(out, torch.tensor([1, 0, 1, 0])).item() == 1.0
    assert accuracy(out, torch.tensor([0, 1, 0, 1])).item() == 0.0
    assert accuracy(out, torch.tensor([1, 0, 0, 1])).item() == pytest.approx(0.5)


def test_accuracy_is_a_float_tensor():
    acc = accuracy(torch.eye(3), torch.tensor([0, 1, 1]))
    assert acc.dtype == torch.float32 and acc.item() == pytest.approx(2/3)


def test_report_prints_loss_and_accuracy(capsys):
    report(torch.tensor(1.23456), torch.eye(4), torch.tensor([0, 1, 2, 0]))
    assert capsys.readouterr().out.strip() == 'loss 1.23, accuracy 0.75'


# Dataset

def test_dataset_len_and_getitem():
    x, y = torch.arange(20.).reshape(10, 2), torch.arange(10)
    ds = Dataset(x, y)
    assert len(ds) == 10
    xi, yi = ds[3]
    assert torch.equal(xi, x[3]) and yi.item() == 3
    xb, yb = ds[2:5]
    assert torch.equal(xb, x[2:5]) and torch.equal(yb, y[2:5])
    xb, yb = ds[[7, 0, 7]]
    assert torch.equal(yb, torch.tensor([7, 0, 7]))


def test_dataset_mismatched_lengths_is_a_clear_error():
    with pytest.raises(ValueError, match='x has 5 items but y has 4'):
        Dataset(torch.zeros(5, 2), torch.zeros(4))


def test_dataset_works_with_pytorch_dataloader():
    ds = Dataset(torch.arange(10.), torch.arange(10))
    xb, yb = next(iter(DataLoader(ds, batch_size=4)))
    assert torch.equal(yb, torch.arange(4)) and torch.equal(xb, torch.arange(4.))


# get_dls

def _index_ds(n):
    "A dataset whose inputs and targets are the item indices, so batches show which items they hold."
    return Dataset(torch.arange(n), torch.arange(n))


def test_get_dls_batch_sizes_and_samplers():
    train_dl, valid_dl = get_dls(_index_ds(100), _index_ds(30), 8)
    assert train_dl.batch_size == 8 and valid_dl.batch_size == 16
    assert isinstance(train_dl.sampler, RandomSampler)
    assert isinstance(valid_dl.sampler, SequentialSampler)
    assert [len(yb) for _, yb in valid_dl] == [16, 14]


def test_get_dls_covers_everything_once_and_shuffles_train():
    torch.manual_seed(0)
    train_dl, valid_dl = get_dls(_index_ds(100), _index_ds(30), 8)
    first = torch.cat([xb for xb, _ in train_dl])
    second = torch.cat([xb for xb, _ in train_dl])
    assert sorted(first.tolist()) == list(range(100))        # each training item exactly once per epoch
    assert first.tolist() != list(range(100))                # ... in a shuffled order
    assert first.tolist() != second.tolist()                 # ... that changes from epoch to epoch
    assert torch.cat([xb for xb, _ in valid_dl]).tolist() == list(range(30))   # validation in order


def test_get_dls_passes_kwargs_to_both():
    train_dl, valid_dl = get_dls(_index_ds(10), _index_ds(10), 4, drop_last=True)
    assert train_dl.drop_last and valid_dl.drop_last
    assert len(valid_dl) == 1


# fit

def _synthetic(n, seed):
    "Two Gaussian blobs in 2D, one per class: a problem a linear model learns quickly."
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 2, generator=g) * 0.5 + (y[:, None] * 2 - 1) * torch.tensor([1.5, -1.0])
    return Dataset(x, y)


def _valid_loss(model, ds):
    with torch.no_grad(): return F.cross_entropy(model(ds.x), ds.y).item()


def test_fit_reduces_loss_and_returns_floats(capsys):
    torch.manual_seed(0)
    train_ds, valid_ds = _synthetic(256, 1), _synthetic(100, 2)
    train_dl, valid_dl = get_dls(train_ds, valid_ds, 32)
    model = nn.Linear(2, 2)
    loss_before = _valid_loss(model, valid_ds)
    loss, acc = fit(3, model, F.cross_entropy, optim.SGD(model.parameters(), lr=0.3), train_dl, valid_dl)
    assert type(loss) is float and type(acc) is float
    assert loss < loss_before / 2
    assert acc > 0.9
    # the returned numbers are those of the whole validation set (batches weighted by their size)
    assert loss == pytest.approx(_valid_loss(model, valid_ds), abs=1e-5)
    with torch.no_grad(): assert acc == pytest.approx(accuracy(model(valid_ds.x), valid_ds.y).item(), abs=1e-6)
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 3 and printed[0].startswith('epoch 0')


class _ModeRecorder(nn.Module):
    "A linear layer that records, at each call, whether it was in training mode and whether grads were on."
    def __init__(self):
        super().__init__()
        self.lin, self.calls = nn.Linear(2, 2), []
    def forward(self, x):
        self.calls.append((self.training, torch.is_grad_enabled()))
        return self.lin(x)


def test_fit_uses_train_and_eval_modes_and_no_grad_for_validation():
    train_dl, valid_dl = get_dls(_synthetic(64, 1), _synthetic(32, 2), 16)   # 4 train batches, 1 valid batch
    model = _ModeRecorder()
    model.eval()   # fit must switch to training mode itself
    fit(2, model, F.cross_entropy, optim.SGD(model.parameters(), lr=0.1), train_dl, valid_dl)
    epoch = [(True, True)]*4 + [(False, False)]
    assert model.calls == epoch * 2
    assert not model.training


@pytest.mark.parametrize('empty', ['train', 'valid'])
def test_fit_empty_dataloader_is_a_clear_error(empty):
    full_dl = DataLoader(_synthetic(32, 1), batch_size=8)
    empty_dl = DataLoader(Dataset(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)), batch_size=8)
    train_dl, valid_dl = (empty_dl, full_dl) if empty == 'train' else (full_dl, empty_dl)
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match=f'{empty} DataLoader yielded no batches'):
        fit(1, model, F.cross_entropy, optim.SGD(model.parameters(), lr=0.1), train_dl, valid_dl)


def test_fit_needs_at_least_one_epoch():
    dl = DataLoader(_synthetic(8, 1), batch_size=8)
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match='epochs must be at least 1'):
        fit(0, model, F.cross_entropy, optim.SGD(model.parameters(), lr=0.1), dl, dl)


def test_fit_is_deterministic_with_a_seed():
    def run():
        torch.manual_seed(3)
        train_dl, valid_dl = get_dls(_synthetic(128, 1), _synthetic(64, 2), 16)
        model = nn.Linear(2, 2)
        return fit(2, model, F.cross_entropy, optim.SGD(model.parameters(), lr=0.2), train_dl, valid_dl)
    assert run() == run()
