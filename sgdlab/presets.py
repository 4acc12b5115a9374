"""Named scales for every experiment in the book, and the choice of device.

A *preset* says how big an experiment is: which data set and model stand for "a small
network" and "a convolutional network", and how long to train. The book runs on three:

========  ============================  ================================  ====================
preset    where                         data and models                   budget
========  ============================  ================================  ====================
quick     any CPU (book build, CI)      digits, mnist1d; small MLP / CNN  <= 90 s a notebook
gpu       Colab T4 and up               MNIST, CIFAR-10; paper MLP, VGG   <= 10 min a notebook
paper     a GPU, from the command line  as in the papers                  hours, resumable
========  ============================  ================================  ====================

The environment variable ``SGDLAB_PRESET`` picks one (default ``quick``);
``SGDLAB_DEVICE`` overrides the device, which is otherwise CUDA when present, else the CPU.
Presets are plain data: a chapter reads the fields it needs and never branches on the name.
Each long experiment's settings are its ``Config`` (:mod:`sgdlab.experiments`), whose defaults
are the ``quick`` scale; ``gpu`` overrides what differs from ``quick``, and ``paper`` what
differs from ``gpu`` (``dataclasses.replace``), so each value is written once.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import replace

import torch

from .devices import DEVICE_VARIABLE, check_device, default_device
from .experiments.curvature import Config as CurvatureConfig
from .experiments.stability import Config as StabilityConfig
from .experiments.trajectory import Config as TrajectoryConfig
from .experiments.walk import Config as WalkConfig

PRESET_VARIABLE = "SGDLAB_PRESET"
__all__ = ["DEVICE_VARIABLE", "PRESETS", "PRESET_VARIABLE", "Preset", "check_device", "default_device", "describe",
           "get_preset"]


@dataclasses.dataclass(frozen=True)
class Preset:
    """The scale of the book's experiments (see the module docstring); the defaults are ``quick``'s."""

    name: str
    description: str
    mlp_dataset: str = "digits"   # data set for the fully connected experiments
    mlp_arch: str = "mlp"         # architecture for them (see sgdlab.models)
    cnn_dataset: str = "mnist1d"  # data set for the convolutional experiments
    cnn_arch: str = "cnn"
    epochs: int = 20              # a typical training length, in epochs, for one run
    batch_size: int = 100         # the default mini-batch size (the papers use 100)
    seeds: int = 5                # how many seeds a chapter averages over
    download: bool = False        # may data sets be downloaded (never in the quick preset)
    # "A Walk with SGD" (book/walk.ipynb, `python -m sgdlab run walk`): the fully connected network's walk ...
    walk: WalkConfig = WalkConfig()
    # ... and the convolutional network's (the chapter's second walk)
    # (trained to a useful accuracy first: a census of an untrained network says little)
    walk_cnn: WalkConfig = WalkConfig(arch="cnn", dataset="mnist1d", epochs=(10, 20), batch_size=100, lr=0.5,
                                      eval_examples=1000)
    walk_lrs: tuple[float, ...] = (0.1, 0.3, 1.0)   # GD beside SGD (batch walk.batch_size) at these rates, 40 steps each
    walk_grid_lrs: tuple[float, ...] = (0.1, 0.3, 1.0)    # the appendix census grid: learning rates ...
    walk_grid_batch_sizes: tuple = (10, 50, 200)        # ... times batch sizes, one epoch each, on walk.arch
    walk_grid_examples: int | None = 500                # the grid's loss over the first examples only (None: all)
    # Curvature and batch size (book/curvature.ipynb, `python -m sgdlab run curvature`): section 4 of the paper
    curvature: CurvatureConfig = CurvatureConfig()
    # After SGD stops improving (book/trajectory.ipynb, `python -m sgdlab run trajectory`)
    trajectory: TrajectoryConfig = TrajectoryConfig()
    trajectory_lrs: tuple[float, ...] = (0.05, 0.2)  # the chapter compares these rates (the last is trajectory.lr)
    # Learning-rate decay and network stability (book/stability.ipynb)
    stability: StabilityConfig = StabilityConfig()
    # The static book (sgdlab.widgets.static_sweep): each widget's figures rendered ahead of time.
    # The book is built with quick; on a GPU the live widgets serve, and the sweeps would cost minutes.
    static_sweeps: bool = True


QUICK = Preset(name="quick", description="laptop CPU, bundled data, small models: minutes per notebook")

GPU = replace(
    QUICK, name="gpu", description="a Colab GPU, MNIST and CIFAR-10, the papers' models: under 10 minutes per notebook",
    mlp_dataset="mnist", mlp_arch="mlp-paper", cnn_dataset="cifar10", cnn_arch="vgg11", epochs=10, seeds=3,
    download=True, static_sweeps=False,
    walk=replace(QUICK.walk, arch="mlp-paper", dataset="mnist", epochs=(1, 2, 5, 10), batch_size=100,
                 weight_decay=1e-4),
    walk_cnn=replace(QUICK.walk_cnn, arch="vgg11", dataset="cifar10", epochs=(1, 2), steps=40, eval_examples=10_000,
                     lr=0.1, weight_decay=1e-4),
    walk_lrs=(0.03, 0.1, 0.3), walk_grid_batch_sizes=(100, 500, 1000), walk_grid_examples=5000,
    curvature=replace(QUICK.curvature, arch="vgg11", dataset="cifar10", lr=0.1, batch_sizes=(100, 1000, 10_000),
                      steps=2000, batches=20, hessian_examples=5000, seeds=2, control_steps=2000),
    trajectory=replace(QUICK.trajectory, arch="mlp-paper", dataset="mnist", lr=0.1, batch_size=100, weight_decay=1e-4,
                       every=50),
    trajectory_lrs=(0.02, 0.05, 0.1),
    stability=replace(QUICK.stability, cnn_arch="resnet18", cnn_dataset="cifar10", cnn_lr=0.1, mlp_arch="mlp-paper",
                      mlp_dataset="mnist", mlp_lr=0.1, epochs=2, probe=128, seeds=1),
)

PAPER = replace(
    GPU, name="paper", description="the papers' protocols on a GPU, from the command line: hours, resumable",
    epochs=200,
    walk=replace(GPU.walk, epochs=(1, 10, 25, 100)),
    walk_cnn=replace(GPU.walk_cnn, epochs=(1, 10, 25, 100), steps=None, eval_examples=None),
    curvature=replace(GPU.curvature, steps=4500, batches=50, hessian_examples=None),
    trajectory=replace(GPU.trajectory, epochs=100),
    stability=replace(GPU.stability, epochs=30, probe=256),
)

PRESETS = {preset.name: preset for preset in (QUICK, GPU, PAPER)}


def get_preset(name: str | None = None) -> Preset:
    """The preset called ``name``, or the one ``SGDLAB_PRESET`` names (default ``quick``).

    >>> get_preset("quick").name
    'quick'
    >>> get_preset("fast")
    Traceback (most recent call last):
    ...
    ValueError: preset 'fast' is not known; choose one of: quick, gpu, paper (set it with the environment variable SGDLAB_PRESET)
    """
    if name is None:
        name = os.environ.get(PRESET_VARIABLE, "quick")
    if name not in PRESETS:
        raise ValueError(
            f"preset {name!r} is not known; choose one of: {', '.join(PRESETS)} "
            f"(set it with the environment variable {PRESET_VARIABLE})"
        )
    return PRESETS[name]


def describe(preset: Preset | None = None) -> str:
    """One line a notebook prints first: which preset and which device it runs on."""
    preset = preset or get_preset()
    device = default_device()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    return f"sgdlab preset '{preset.name}' ({preset.description}); device {device} ({where}); torch {torch.__version__}"
