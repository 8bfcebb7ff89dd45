"The `miniai_train` command: it trains, prints the accuracy and exits 0; bad input gives a clear error."
import os, shutil, subprocess

import pytest

from test_datasets import make_idx_folder


def run_cli(*args, tmp_path):
    env = {**os.environ, 'MINIAI_CACHE': str(tmp_path/'cache'), 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1'}
    exe = shutil.which('miniai_train')
    assert exe, "the console script miniai_train is not installed: run `pip install -e .`"
    return subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=300)


def test_cli_trains_and_exits_zero(tmp_path):
    make_idx_folder(tmp_path/'data', n_train=64, n_test=32)
    res = run_cli('--epochs', '1', '--bs', '16', '--data', str(tmp_path/'data'), tmp_path=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    last = res.stdout.strip().splitlines()[-1]
    assert last.startswith('validation accuracy after 1 epochs: ')
    acc = float(last.split(': ')[1].split()[0])
    assert 0 <= acc <= 1


def test_cli_missing_data_folder(tmp_path):
    res = run_cli('--data', str(tmp_path/'nowhere'), tmp_path=tmp_path)
    assert res.returncode != 0
    assert 'does not hold the four Fashion-MNIST IDX files' in res.stderr


def test_train_rejects_zero_epochs():
    from miniai.train import train
    with pytest.raises(ValueError, match='at least 1'): train(epochs=0, dsd=object())
