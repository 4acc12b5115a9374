"""Learning-rate decay and network stability (``book/stability.ipynb``): the chapter's settings.

The chapter trains a convolutional network and a fully connected one with a step schedule
that divides the rate by 10 half-way, and measures how much activations and gradients move
between steps (:mod:`sgdlab.stability`). Only the settings live here so far: the chapter
still runs the loop itself, and the command line does not offer this experiment yet.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Config:
    """The stability chapter's settings; the defaults are the ``quick`` preset's."""

    cnn_arch: str = "cnn"          # the convolutional network (sgdlab.models.ARCHITECTURES)
    cnn_dataset: str = "mnist1d"   # its data set
    cnn_lr: float = 1.0            # its initial learning rate
    mlp_lr: float = 0.3            # the fully connected network's (on the preset's mlp_dataset)
    epochs: int = 6                # the step schedule divides the rate by 10 half-way
    probe: int = 100               # examples in the fixed probe batch
