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
"""

from __future__ import annotations

import dataclasses
import os

import torch

PRESET_VARIABLE = "SGDLAB_PRESET"
DEVICE_VARIABLE = "SGDLAB_DEVICE"


@dataclasses.dataclass(frozen=True)
class Preset:
    """The scale of the book's experiments (see the module docstring)."""

    name: str
    description: str
    mlp_dataset: str      # data set for the fully connected experiments
    mlp_arch: str         # architecture for them (see sgdlab.models)
    cnn_dataset: str      # data set for the convolutional experiments
    cnn_arch: str
    epochs: int           # a typical training length, in epochs, for one run
    batch_size: int       # the default mini-batch size (the papers use 100)
    seeds: int            # how many seeds a chapter averages over
    download: bool        # may data sets be downloaded (never in the quick preset)
    # "A Walk with SGD" (book/walk.ipynb, `python -m sgdlab run walk`)
    walk_batch_size: int              # mini-batch size of the walk (the paper: 100)
    walk_weight_decay: float          # L2 weight decay of the walk's SGD (the paper's code: 1e-4)
    walk_epochs: tuple                # epochs whose every step is interpolated, counted from 1
    walk_cnn_epochs: tuple            # the same for the convolutional network
    walk_cnn_steps: int | None        # record only the first steps of each epoch (None: all)
    walk_cnn_eval_examples: int | None  # evaluate the loss on the first examples only (None: all)
    # Curvature and batch size (book/curvature.ipynb): section 4 of "A Walk with SGD"
    curvature_arch: str
    curvature_dataset: str
    curvature_lr: float               # one learning rate for every batch size, as in the paper
    curvature_batch_sizes: tuple      # mini-batch sizes compared (the whole set is added)
    curvature_steps: int              # updates per run (equal iterations for every batch size)
    curvature_batches: int            # sampled mini-batches per alignment estimate (the paper: 50)
    curvature_hessian_examples: int | None  # Hessian over the first examples only (None: the whole set)
    # After SGD stops improving (book/trajectory.ipynb)
    trajectory_lrs: tuple             # fixed learning rates compared
    trajectory_batch_size: int
    trajectory_weight_decay: float    # gives SGD a stationary regime (a loss that stops improving)
    trajectory_epochs: int            # epochs until the loss is flat, then as many recorded
    trajectory_every: int             # updates between snapshots
    # Learning-rate decay and network stability (book/stability.ipynb)
    stability_cnn_arch: str
    stability_cnn_dataset: str
    stability_cnn_lr: float
    stability_mlp_lr: float
    stability_epochs: int             # the step schedule divides the rate by 10 half-way
    stability_probe: int              # examples in the fixed probe batch
    # The static book (sgdlab.widgets.static_sweep): each widget's figures rendered ahead of time.
    # The book is built with quick; on a GPU the live widgets serve, and the sweeps would cost minutes.
    static_sweeps: bool


PRESETS = {
    "quick": Preset(
        name="quick",
        description="laptop CPU, bundled data, small models: minutes per notebook",
        mlp_dataset="digits", mlp_arch="mlp",
        cnn_dataset="mnist1d", cnn_arch="cnn",
        epochs=20, batch_size=100, seeds=5, download=False,
        walk_batch_size=10, walk_weight_decay=0.0, walk_epochs=(1, 5, 10), walk_cnn_epochs=(1, 3),
        walk_cnn_steps=None, walk_cnn_eval_examples=None,
        curvature_arch="mlp", curvature_dataset="digits", curvature_lr=0.5, curvature_batch_sizes=(10, 100, 1000),
        curvature_steps=500, curvature_batches=50, curvature_hessian_examples=None,
        trajectory_lrs=(0.05, 0.2), trajectory_batch_size=10, trajectory_weight_decay=1e-3, trajectory_epochs=20,
        trajectory_every=27,
        stability_cnn_arch="cnn", stability_cnn_dataset="mnist1d", stability_cnn_lr=1.0, stability_mlp_lr=0.3,
        stability_epochs=6, stability_probe=100, static_sweeps=True,
    ),
    "gpu": Preset(
        name="gpu",
        description="a Colab GPU, MNIST and CIFAR-10, the papers' models: under 10 minutes per notebook",
        mlp_dataset="mnist", mlp_arch="mlp-paper",
        cnn_dataset="cifar10", cnn_arch="vgg11",
        epochs=10, batch_size=100, seeds=3, download=True,
        walk_batch_size=100, walk_weight_decay=1e-4, walk_epochs=(1, 2, 5, 10), walk_cnn_epochs=(1, 2),
        walk_cnn_steps=40, walk_cnn_eval_examples=10_000,
        curvature_arch="vgg11", curvature_dataset="cifar10", curvature_lr=0.1, curvature_batch_sizes=(100, 1000, 10_000),
        curvature_steps=2000, curvature_batches=20, curvature_hessian_examples=5000,
        trajectory_lrs=(0.02, 0.05, 0.1), trajectory_batch_size=100, trajectory_weight_decay=1e-4, trajectory_epochs=20,
        trajectory_every=50,
        stability_cnn_arch="resnet18", stability_cnn_dataset="cifar10", stability_cnn_lr=0.1, stability_mlp_lr=0.1,
        stability_epochs=2, stability_probe=128, static_sweeps=False,
    ),
    "paper": Preset(
        name="paper",
        description="the papers' protocols on a GPU, from the command line: hours, resumable",
        mlp_dataset="mnist", mlp_arch="mlp-paper",
        cnn_dataset="cifar10", cnn_arch="vgg11",
        epochs=200, batch_size=100, seeds=3, download=True,
        walk_batch_size=100, walk_weight_decay=1e-4, walk_epochs=(1, 10, 25, 100), walk_cnn_epochs=(1, 10, 25, 100),
        walk_cnn_steps=None, walk_cnn_eval_examples=None,
        curvature_arch="vgg11", curvature_dataset="cifar10", curvature_lr=0.1, curvature_batch_sizes=(100, 1000, 10_000),
        curvature_steps=4500, curvature_batches=50, curvature_hessian_examples=None,
        trajectory_lrs=(0.02, 0.05, 0.1), trajectory_batch_size=100, trajectory_weight_decay=1e-4, trajectory_epochs=100,
        trajectory_every=50,
        stability_cnn_arch="resnet18", stability_cnn_dataset="cifar10", stability_cnn_lr=0.1, stability_mlp_lr=0.1,
        stability_epochs=30, stability_probe=256, static_sweeps=False,
    ),
}


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


def default_device() -> torch.device:
    """CUDA when present, else the CPU; ``SGDLAB_DEVICE`` (e.g. ``cpu``) overrides."""
    wanted = os.environ.get(DEVICE_VARIABLE)
    if wanted:
        return check_device(wanted, DEVICE_VARIABLE)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_device(wanted, name: str = "device") -> torch.device:
    """``wanted`` (a name such as ``"cpu"`` or ``"cuda:0"``, or a ``torch.device``) as a device present here."""
    try:
        device = torch.device(wanted)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"{name}={wanted!r} is not a device name ({error}); use e.g. 'cpu' or 'cuda'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name}={wanted!r} but CUDA is not available here; use 'cpu'")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"{name}={wanted!r} but this machine has {torch.cuda.device_count()} CUDA devices")
    return device


def describe(preset: Preset | None = None) -> str:
    """One line a notebook prints first: which preset and which device it runs on."""
    preset = preset or get_preset()
    device = default_device()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    return f"sgdlab preset '{preset.name}' ({preset.description}); device {device} ({where}); torch {torch.__version__}"
