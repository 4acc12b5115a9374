"""What the training loop hands to its recorders, and what it returns.

:class:`Callback` is the base of every recorder (its hooks see each :class:`Step`); a
recorder may end a run by raising :class:`StopTraining` and never changes the loop
otherwise. :class:`History` is what a run did. :class:`Diverged` is the error an
experiment raises when the run it needs diverged (the history says why).
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path

import torch

from .data import Dataset
from .files import write_text_atomic
from .params import Params, model_params


class StopTraining(Exception):
    """Raised by a callback to end training after the current step; the message says why."""


@dataclasses.dataclass
class Step:
    """What a callback sees after one update.

    ``x``, ``y`` are the mini-batch (after augmentation); ``loss`` is its mean cross-entropy
    before the update and ``lr`` the rate used for it. ``params_before`` is a copy of the
    parameters (and buffers) before the update, filled only when some callback sets
    ``wants_params_before``; ``params_after`` and ``grads`` are the model's live
    tensors, valid until the next step (clone them to keep them).
    """

    index: int
    epoch: int
    x: torch.Tensor
    y: torch.Tensor
    loss: float
    lr: float
    model: torch.nn.Module
    params_before: Params | None

    @property
    def params_after(self) -> Params:
        return model_params(self.model)

    @property
    def grads(self) -> Params:
        """The mini-batch gradient of this step, by parameter name (without weight decay)."""
        return {name: p.grad for name, p in self.model.named_parameters() if p.grad is not None}


class Callback:
    """Base class of training recorders; override the hooks you need."""

    wants_params_before = False  # set True to receive Step.params_before (costs one copy per step)

    def on_train_begin(self, model: torch.nn.Module, dataset: Dataset) -> None:
        """Called once, before the first step."""

    def on_step(self, step: Step) -> None:
        """Called after every update."""

    def on_epoch_end(self, epoch: int, history: "History") -> None:
        """Called after each completed epoch (0-based), once the epoch's metrics are in ``history``."""

    def on_train_end(self, history: "History") -> None:
        """Called once when training ends, for whatever reason."""

    def state_dict(self) -> dict:
        """What a resumed run needs of this recorder, saved after each epoch (tensors, numbers,
        strings, lists and dicts only: checkpoints load with ``weights_only=True``)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; called after ``on_train_begin`` and after the model's
        parameters are restored, when a run resumes from a checkpoint."""


@dataclasses.dataclass
class History:
    """What a run did, step by step and epoch by epoch.

    Per step: ``step_loss`` (mini-batch loss before the update) and ``step_lr``. Per
    evaluation (after each completed epoch, and at the end of a run that stops mid-epoch):
    ``epoch`` (epochs completed, may be fractional), the full training-set loss and accuracy
    (no augmentation, BatchNorm in eval mode) and the test loss and accuracy. Accuracies are
    fractions in [0, 1].
    """

    config: dict
    steps_per_epoch: int
    step_loss: list = dataclasses.field(default_factory=list)
    step_lr: list = dataclasses.field(default_factory=list)
    epoch: list = dataclasses.field(default_factory=list)
    train_loss: list = dataclasses.field(default_factory=list)
    train_accuracy: list = dataclasses.field(default_factory=list)
    test_loss: list = dataclasses.field(default_factory=list)
    test_accuracy: list = dataclasses.field(default_factory=list)
    diverged_at: int | None = None
    stopped_because: str | None = None
    seconds: float = 0.0

    @property
    def steps(self) -> int:
        return len(self.step_loss)

    @property
    def diverged(self) -> bool:
        return self.diverged_at is not None

    def save(self, path: str | Path) -> None:
        """Write the history as JSON (atomically, see :mod:`sgdlab.files`)."""
        write_text_atomic(path, json.dumps(dataclasses.asdict(self)))

    @classmethod
    def load(cls, path: str | Path) -> "History":
        return cls(**json.loads(Path(path).read_text()))


class Diverged(Exception):
    """An experiment's training run diverged; the message says where and with which learning rate."""


def check_not_diverged(history: History, label: str = "") -> None:
    """Raise :class:`Diverged` when ``history`` stopped because the loss exploded."""
    if history.diverged:
        raise Diverged(f"training diverged{f' ({label})' if label else ''}: {history.stopped_because}")


def has_diverged(loss: float, first_loss: float | None, factor: float | None) -> bool:
    """Whether a mini-batch loss means the run diverged: it is not finite, or it exceeds ``factor``
    times the run's first mini-batch loss (``first_loss``; ``None`` before the first step, and
    ``factor=None`` checks finiteness only). :func:`sgdlab.train` and :func:`sgdlab.seeds.train_seeds` judge alike."""
    return not math.isfinite(loss) or (factor is not None and first_loss is not None and loss > factor * first_loss)


def mark_diverged(history: History, *, loss: float, step: int, epoch: int, lr: float, factor: float | None,
                  first_loss: float | None, warn: bool, stacklevel: int = 3) -> None:
    """Record in ``history`` that the run diverged at ``step`` (and why), and warn unless ``warn`` is false."""
    history.diverged_at = step
    history.stopped_because = (
        f"the mini-batch loss reached {loss:.4g} at step {step} (epoch {epoch}) with lr={lr:g}"
        + (f", over {factor:g} times the first loss {first_loss:.4g}" if math.isfinite(loss) else ""))
    if warn:
        warnings.warn(f"training diverged: {history.stopped_because}; try a smaller learning rate", RuntimeWarning,
                      stacklevel=stacklevel)

