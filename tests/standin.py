"""Tiny stand-ins for the paper's data sets and widths, so that the command line runs every
architecture of the paper preset in seconds, without downloading anything.

``install()`` replaces, in the experiments (:mod:`sgdlab.experiments`), MNIST and CIFAR-10 by random tensors of their
shapes (``STANDIN_EXAMPLES`` training examples, default 40; CIFAR images of side
``STANDIN_SIDE``, default 32, which the ResNets may shrink) and VGG-11 by its 1/16-width version. ``python tests/standin.py ARGS`` is ``python -m sgdlab ARGS`` with them installed.
"""

import os
import sys

import torch

from sgdlab.cli import main
from sgdlab.data import Dataset, load_dataset
from sgdlab.experiments import EXPERIMENTS, common

SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}  # the side of CIFAR's images: STANDIN_SIDE
TINY = {"vgg11": dict(width=1 / 16)}
_load, _make = load_dataset, EXPERIMENTS["walk"].make_model


def standin_dataset(name, **options):
    if name not in SHAPES:
        return _load(name, **options)
    n = int(os.environ.get("STANDIN_EXAMPLES", "40"))
    generator = torch.Generator().manual_seed(0)
    side = int(os.environ.get("STANDIN_SIDE", "32"))
    shape = SHAPES[name] if name == "mnist" else (3, side, side)
    x = torch.randn(n + 20, *shape, generator=generator)
    y = torch.arange(n + 20) % 10
    return Dataset(name, x[:n], y[:n], x[n:], y[n:], 10)


def tiny_model(arch, data, **options):
    return _make(arch, data, **TINY.get(arch, {}), **options)


def install(monkeypatch=None):
    """Put the stand-ins in every experiment (through ``monkeypatch`` when given, so a test undoes it)."""
    places = [(common, "load_dataset", standin_dataset)]  # every experiment loads its data there
    places += [(module, "make_model", tiny_model) for module in EXPERIMENTS.values()]
    for module, name, standin in places:
        monkeypatch.setattr(module, name, standin) if monkeypatch else setattr(module, name, standin)


if __name__ == "__main__":
    install()
    sys.exit(main(sys.argv[1:]))
