#!/usr/bin/env bash
# Installs everything miniai needs on a bare Debian machine with Python 3.11 (run as root, or with sudo).
# Safe to re-run: each step is quick when its work is already done.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

# Fashion-MNIST comes from Debian's package: no Hugging Face hub needed.
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
fi

# torch first and pinned, so no later requirement makes pip fetch a multi-GB CUDA build.
python -m pip install -q --disable-pip-version-check "torch==2.13.0"
python -m pip install -q --disable-pip-version-check -e ".[dev]"
python -m pip check
