"""One training loop for mini-batch SGD, full-batch GD, momentum, Adam and RMSProp.

``train(model, dataset, lr=..., batch_size=..., epochs=...)`` trains the model in place and
returns a :class:`~sgdlab.callbacks.History`. Optimisers come from ``torch.optim`` and learning-rate schedules
from ``torch.optim.lr_scheduler``; nothing here re-implements them.

Callbacks (recorders) watch every step through :class:`~sgdlab.callbacks.Callback`'s hooks and may stop the run
by raising :class:`~sgdlab.callbacks.StopTraining`; they never change the loop otherwise.

Conventions
-----------
* A *step* is one parameter update; ``Step.index`` counts them from 0 across epochs.
* ``batch_size="full"`` is full-batch gradient descent: one step per epoch over the whole
  training set (augmentation, if the data set has it, still applies).
* Schedules are stepped after every update, so their milestones are converted from epochs
  to steps: ``{"name": "step", "milestones": [10, 15], "gamma": 0.1}`` multiplies the rate by
  0.1 after epoch 10 and again after epoch 15.
* ``seed`` fixes the data order and augmentation (one generator on the data's device); the
  initialisation is fixed by ``make_model(..., seed=...)``. On the CPU the same seeds give
  bit-identical runs.
* Resuming: with ``checkpoint=PATH`` the run's whole state (model, optimiser, schedule, data
  generator and the epoch's data order, history and the callbacks' :meth:`~sgdlab.callbacks.Callback.state_dict`)
  is written to ``PATH`` after every completed epoch (and, if asked, every so many steps or
  minutes), atomically: a temporary file, flushed to disk, then renamed; calling ``train`` again with the same arguments
  and ``PATH`` continues from the last completed epoch and ends exactly as an uninterrupted
  run would. A run that dies loses at most the epoch in progress.
* Divergence: a mini-batch loss that is not finite, or that exceeds ``diverge_factor``
  times the first step's loss, stops training; ``History.diverged_at`` holds the step and
  ``History.stopped_because`` says why. Nothing non-finite enters the history. It also
  warns (``RuntimeWarning``), unless the caller expects it (``on_divergence="stop"``: a
  chapter that shows a divergence on purpose).

The module is long because the loop, its argument checks, the schedules and the
checkpoint that makes a run resumable belong together: each reads the others' settings.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .checks import check_seed
from .data import Dataset, epoch_batches, steps_per_epoch
from .files import load_tensors, write_atomic
from .callbacks import Callback, History, Step, StopTraining, has_diverged, mark_diverged
from .params import clone_params, evaluation, loss_and_accuracy, model_params

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "step", "cosine", "warmup-cosine", "cyclic")
PROGRESS_MIN_STEPS = 200  # shorter runs show no progress bar
ON_DIVERGENCE = ("warn", "stop")  # what train does besides stopping when the loss explodes
PROGRESS_VARIABLE = "SGDLAB_PROGRESS"  # "0": no progress bars (the book build sets it)


def make_optimizer(name: str, parameters, *, lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """A ``torch.optim`` optimiser by name (see ``OPTIMIZERS``)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer {name!r} is not known; choose one of: {', '.join(OPTIMIZERS)}")
    if momentum and name not in ("sgd", "rmsprop"):
        raise ValueError(f"momentum={momentum} applies to optimizer 'sgd' or 'rmsprop', not {name!r} (Adam has betas)")
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)


def make_schedule(schedule: Any, optimizer: torch.optim.Optimizer, *, total_steps: int, steps_per_epoch: int):
    """A ``torch.optim.lr_scheduler`` object stepped once per update, or ``None`` for a constant rate.

    ``schedule`` is ``None``, a name from ``SCHEDULES``, a dict ``{"name": ..., **options}``,
    or a callable ``optimizer -> scheduler`` for anything else ``torch.optim.lr_scheduler``
    offers. Options, in epochs: ``step``: ``milestones`` (default: 50% and 75% of training),
    ``gamma`` (0.1); ``cosine``: ``eta_min`` (0); ``warmup-cosine``: ``warmup`` (epochs,
    default 5% of training), ``eta_min``; ``cyclic``: the triangular cyclical rate of Smith
    (2017), ``torch.optim.lr_scheduler.CyclicLR``: from ``low`` times ``lr`` (default 0.1)
    it rises linearly to ``lr`` over ``half_period`` epochs (default a quarter of training,
    so two whole cycles), falls back over as many, and repeats; momentum is left alone.
    """
    if schedule is None or callable(schedule):
        return schedule(optimizer) if schedule is not None else None
    options = dict(schedule) if isinstance(schedule, dict) else {"name": schedule}
    name = options.pop("name", None)
    if name not in SCHEDULES:
        raise ValueError(f"schedule {name!r} is not known; choose one of: {', '.join(SCHEDULES)}, or pass a callable")
    allowed = {"constant": set(), "step": {"milestones", "gamma"}, "cosine": {"eta_min"}, "warmup-cosine": {"warmup", "eta_min"},
               "cyclic": {"low", "half_period"}}[name]
    if set(options) - allowed:
        raise ValueError(f"schedule {name!r} does not take {sorted(set(options) - allowed)}; it takes: "
                         f"{sorted(allowed) or 'no options'}")
    sched = torch.optim.lr_scheduler
    to_steps = lambda epochs: max(1, round(epochs * steps_per_epoch))
    total_epochs = total_steps / steps_per_epoch
    if name == "constant":
        return None
    if name == "step":
        milestones = options.get("milestones", [0.5 * total_epochs, 0.75 * total_epochs])
        return sched.MultiStepLR(optimizer, [to_steps(m) for m in milestones], gamma=options.get("gamma", 0.1))
    if name == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=options.get("eta_min", 0.0))
    if name == "cyclic":
        return _cyclic(optimizer, options, total_epochs=total_epochs, steps_per_epoch=steps_per_epoch)
    warmup = min(to_steps(options.get("warmup", 0.05 * total_epochs)), total_steps - 1)
    return sched.SequentialLR(
        optimizer,
        [sched.LinearLR(optimizer, start_factor=1.0 / warmup, total_iters=warmup),
         sched.CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup), eta_min=options.get("eta_min", 0.0))],
        milestones=[warmup],
    )


def _cyclic(optimizer: torch.optim.Optimizer, options: dict, *, total_epochs: float, steps_per_epoch: int):
    """The ``cyclic`` schedule of :func:`make_schedule`: triangular, between ``low * lr`` and ``lr``."""
    low, half_period = options.get("low", 0.1), options.get("half_period", total_epochs / 4)
    if isinstance(low, bool) or not isinstance(low, (int, float)) or not 0 < low < 1:
        raise ValueError(f"schedule 'cyclic': low must be a number in (0, 1) (the lowest rate as a fraction of lr), "
                         f"got low={low!r}")
    if isinstance(half_period, bool) or not isinstance(half_period, (int, float)) or not 0 < half_period < math.inf:
        raise ValueError(f"schedule 'cyclic': half_period must be a positive number of epochs, got "
                         f"half_period={half_period!r}")
    half = max(1, round(half_period * steps_per_epoch))  # steps from the lowest rate to the peak
    peaks = [group["lr"] for group in optimizer.param_groups]
    return torch.optim.lr_scheduler.CyclicLR(optimizer, base_lr=[low * peak for peak in peaks], max_lr=peaks,
                                             step_size_up=half, mode="triangular", cycle_momentum=False)


def check_lr(lr) -> None:
    """A learning rate must be a positive finite number."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0 or not math.isfinite(lr):
        raise ValueError(f"lr must be a positive finite number, got lr={lr!r}")


def check_weight_decay(weight_decay) -> None:
    """Weight decay (the L2 coefficient) must be a finite number >= 0."""
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or not 0 <= weight_decay < math.inf:
        raise ValueError(f"weight_decay must be a finite number >= 0, got weight_decay={weight_decay!r}")


def check_batch_size(batch_size, dataset: Dataset) -> int:
    """The mini-batch size as an int: ``"full"`` is the whole training set."""
    if batch_size == "full":
        batch_size = dataset.n_train
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 0 < batch_size <= dataset.n_train:
        raise ValueError(
            f"batch_size must be an int in 1..{dataset.n_train} (the training set's size) or 'full', got "
            f"batch_size={batch_size!r}"
        )
    return batch_size


def check_dataset(dataset) -> None:
    """A data set to train on: an sgdlab Dataset with examples, and labels that are class indices."""
    if not isinstance(dataset, Dataset):
        raise ValueError(f"dataset must be an sgdlab Dataset (from load_dataset), got {type(dataset).__name__}")
    if dataset.n_train == 0:
        raise ValueError(f"dataset {dataset.name!r} has no training examples")
    for label in ("y_train", "y_test"):
        y = getattr(dataset, label)
        if y.dtype != torch.int64:
            raise ValueError(f"dataset.{label} must hold class indices as int64, got dtype {y.dtype}")
        if len(y) and not 0 <= int(y.min()) <= int(y.max()) < dataset.num_classes:
            raise ValueError(f"dataset.{label} holds labels {int(y.min())}..{int(y.max())}; "
                             f"the {dataset.num_classes} classes are 0..{dataset.num_classes - 1}")


def check_diverge_factor(diverge_factor) -> None:
    """``diverge_factor`` (how many times its first mini-batch loss a run may reach before it counts
    as diverged, see :func:`sgdlab.callbacks.has_diverged`) must be a number above 1, or None."""
    if diverge_factor is not None and not (isinstance(diverge_factor, (int, float)) and not isinstance(diverge_factor, bool)
                                           and diverge_factor > 1):
        raise ValueError(f"diverge_factor must be a number above 1 or None, got diverge_factor={diverge_factor!r}")


def check_train_arguments(model, dataset, *, lr, batch_size, epochs=None, steps=None, weight_decay=0.0, seed=0,
                          diverge_factor=100.0) -> int:
    """Validate the arguments of :func:`train` (the model must fit the data); return the batch size as an int."""
    check_dataset(dataset)
    check_lr(lr)
    check_weight_decay(weight_decay)
    check_seed(seed)
    batch_size = check_batch_size(batch_size, dataset)
    if (epochs is None) == (steps is None):
        raise ValueError(f"give exactly one of epochs and steps, got epochs={epochs!r}, steps={steps!r}")
    for label, value in (("epochs", epochs), ("steps", steps)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise ValueError(f"{label} must be a positive int, got {label}={value!r}")
    check_diverge_factor(diverge_factor)
    model.to(dataset.device)
    try:
        with evaluation(model), torch.no_grad():
            out = model(dataset.x_train[:2])
    except RuntimeError as error:
        raise ValueError(
            f"the model does not fit dataset {dataset.name!r} (examples of shape {dataset.input_shape}): {error}"
        ) from None
    if out.shape != (2, dataset.num_classes):
        raise ValueError(
            f"the model gives outputs of shape {tuple(out.shape[1:])} per example; dataset {dataset.name!r} has "
            f"{dataset.num_classes} classes"
        )
    return batch_size


def train(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    lr: float,
    batch_size: int | str,
    epochs: int | None = None,
    steps: int | None = None,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    schedule: Any = None,
    seed: int = 0,
    callbacks: Sequence[Callback] = (),
    progress: bool | None = None,
    evaluate: bool = True,
    diverge_factor: float | None = 100.0,
    on_divergence: str = "warn",
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    checkpoint_minutes: float | None = None,
) -> History:
    """Train ``model`` in place on ``dataset`` and return its :class:`~sgdlab.callbacks.History`.

    Exactly one of ``epochs`` and ``steps`` says how long. ``lr`` is the (initial) learning
    rate; ``schedule`` changes it over time (see :func:`make_schedule`). ``evaluate=False``
    skips the per-epoch full-set evaluation (it costs about one forward pass over the
    training and test sets per epoch). ``diverge_factor=None`` stops only on a non-finite
    loss; ``on_divergence`` is ``"warn"`` (stop and warn) or ``"stop"`` (stop quietly: the
    History says why). The model is moved to ``dataset.device`` first (in place, like ``model.to``).
    ``checkpoint`` makes the run resumable (see the module docstring); it is written after
    every epoch, and also every ``checkpoint_every`` steps and every ``checkpoint_minutes``
    minutes of training when those are given. ``progress``: show a progress bar (runs of at
    least ``PROGRESS_MIN_STEPS`` steps); ``None`` shows it unless the environment variable
    ``SGDLAB_PROGRESS`` is ``0`` (the book's build sets it: a bar in a page is frozen at its
    first frame).
    """
    if progress is None:
        progress = os.environ.get(PROGRESS_VARIABLE, "1") != "0"
    if on_divergence not in ON_DIVERGENCE:
        raise ValueError(f"on_divergence must be one of {', '.join(map(repr, ON_DIVERGENCE))}, "
                         f"got on_divergence={on_divergence!r}")
    batch_size = check_train_arguments(model, dataset, lr=lr, batch_size=batch_size, epochs=epochs, steps=steps,
                                       weight_decay=weight_decay, seed=seed, diverge_factor=diverge_factor)
    per_epoch = steps_per_epoch(dataset.n_train, batch_size)
    total_steps = steps if steps is not None else epochs * per_epoch
    opt = make_optimizer(optimizer, model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = make_schedule(schedule, opt, total_steps=total_steps, steps_per_epoch=per_epoch)
    generator = torch.Generator(device=dataset.device).manual_seed(seed)
    state = {"model": model, "optimizer": opt, "scheduler": scheduler, "generator": generator}
    checkpointer = _Checkpointer(checkpoint, state, every=checkpoint_every, minutes=checkpoint_minutes)
    config = dict(dataset=dataset.name, lr=lr, batch_size=batch_size, epochs=epochs, steps=steps, optimizer=optimizer,
                  momentum=momentum, weight_decay=weight_decay,
                  schedule=schedule if not callable(schedule) else repr(schedule), seed=seed,
                  model=type(model).__name__)
    history = History(config=config, steps_per_epoch=per_epoch)
    wants_before = any(c.wants_params_before for c in callbacks)
    bar = tqdm(total=total_steps, desc="training", unit="step", leave=False,
               disable=not progress or total_steps < PROGRESS_MIN_STEPS)
    started = time.perf_counter()

    for callback in callbacks:
        callback.on_train_begin(model, dataset)
    step_index, order = 0, None
    if checkpointer.path is not None and checkpointer.path.exists():
        history, step_index, order = _resume(checkpointer.path, state, history, callbacks)
        bar.update(step_index)
    shuffle = batch_size < dataset.n_train
    model.train()
    try:
        while step_index < total_steps:
            epoch = step_index // per_epoch  # every epoch has exactly per_epoch steps
            first_batch = step_index % per_epoch  # > 0 only when resuming inside an epoch
            if first_batch == 0:
                order = torch.randperm(dataset.n_train, generator=generator, device=dataset.device) if shuffle else None
            for x, y in epoch_batches(dataset, batch_size, generator, shuffle=shuffle, order=order,
                                      first_batch=first_batch):
                before = clone_params(model_params(model)) if wants_before else None
                current_lr = opt.param_groups[0]["lr"]
                opt.zero_grad()
                loss = F.cross_entropy(model(x), y)
                loss_value = loss.item()
                first_loss = history.step_loss[0] if history.step_loss else None
                if has_diverged(loss_value, first_loss, diverge_factor):
                    mark_diverged(history, loss=loss_value, step=step_index, epoch=epoch, lr=current_lr,
                                  factor=diverge_factor, first_loss=first_loss, warn=on_divergence == "warn")
                    raise StopTraining(history.stopped_because)
                loss.backward()
                opt.step()
                if scheduler is not None:
                    scheduler.step()
                history.step_loss.append(loss_value)
                history.step_lr.append(current_lr)
                step = Step(step_index, epoch, x, y, loss_value, current_lr, model, before)
                step_index += 1  # counted before the callbacks, which may stop the run
                bar.update(1)
                for callback in callbacks:
                    callback.on_step(step)
                if step_index == total_steps:
                    break
                if step_index % per_epoch:  # inside an epoch; its end is saved below
                    checkpointer.within_epoch(history, step_index, callbacks, order)
            if step_index % per_epoch == 0:  # the epoch ran to its end
                if evaluate:
                    _record_evaluation(history, model, dataset, float(epoch + 1))
                for callback in callbacks:
                    callback.on_epoch_end(epoch, history)
                checkpointer.save(history, step_index, callbacks)
                bar.set_postfix(epoch=epoch + 1, loss=f"{history.step_loss[-1]:.3g}")
        if evaluate and step_index % per_epoch:  # stopped mid-epoch: evaluate where it ended
            _record_evaluation(history, model, dataset, step_index / per_epoch)
    except StopTraining as reason:
        history.stopped_because = history.stopped_because or str(reason)
        if evaluate and not history.diverged and (not history.epoch or history.epoch[-1] != step_index / per_epoch):
            _record_evaluation(history, model, dataset, step_index / per_epoch)
    finally:
        bar.close()
        history.seconds += time.perf_counter() - started  # a resumed run adds to the saved time
    for callback in callbacks:
        callback.on_train_end(history)
    return history


def _record_evaluation(history: History, model: torch.nn.Module, dataset: Dataset, epochs_done: float) -> None:
    """Append the full training- and test-set loss and accuracy (no augmentation, BatchNorm in eval
    mode) after ``epochs_done`` epochs to ``history``."""
    params = model_params(model)
    train_loss, train_acc = loss_and_accuracy(model, params, dataset.x_train, dataset.y_train)
    test_loss, test_acc = loss_and_accuracy(model, params, dataset.x_test, dataset.y_test)
    history.epoch.append(epochs_done)
    history.train_loss.append(train_loss)
    history.train_accuracy.append(train_acc)
    history.test_loss.append(test_loss)
    history.test_accuracy.append(test_acc)


class _Checkpointer:
    """Writes a run's checkpoint (see the module docstring) to ``path``: after every epoch, and inside
    an epoch every ``every`` steps and every ``minutes`` minutes of training when those are given.
    With ``path=None`` it writes nothing (and ``every``, ``minutes`` must be None)."""

    def __init__(self, path, state: dict, *, every: int | None, minutes: float | None):
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise ValueError(f"checkpoint_every must be a positive number of steps or None, got checkpoint_every={every!r}")
        if minutes is not None and not (isinstance(minutes, (int, float)) and not isinstance(minutes, bool)
                                        and minutes > 0):
            raise ValueError(f"checkpoint_minutes must be a positive number or None, got checkpoint_minutes={minutes!r}")
        if path is None and (every is not None or minutes is not None):
            raise ValueError("checkpoint_every and checkpoint_minutes need a checkpoint path: pass checkpoint=PATH")
        self.path = None if path is None else Path(path)
        self.state, self.every, self.minutes = state, every, minutes
        self.last_saved = time.perf_counter()

    def save(self, history: History, step_index: int, callbacks, order=None) -> None:
        if self.path is not None:
            _save_checkpoint(self.path, self.state, history, step_index, callbacks, order)
            self.last_saved = time.perf_counter()

    def within_epoch(self, history: History, step_index: int, callbacks, order) -> None:
        """Save inside an epoch (with the epoch's data order) when ``every`` steps or ``minutes`` have passed."""
        due = ((self.every and step_index % self.every == 0)
               or (self.minutes and time.perf_counter() - self.last_saved >= 60 * self.minutes))
        if due:
            self.save(history, step_index, callbacks, order)


def save_atomic(obj, path) -> None:
    """``torch.save(obj, path)`` that a kill at any instant cannot tear: written to a temporary
    file, flushed to disk, then renamed over ``path`` (the old file or the new one, never half;
    see :func:`sgdlab.files.write_atomic`)."""
    write_atomic(path, lambda f: torch.save(obj, f))


def _save_checkpoint(path, state: dict, history: History, step_index: int, callbacks, order=None) -> None:
    """Write the run's state (``order``: the current epoch's data order, when saved inside an epoch).

    Written to a temporary file, flushed to disk and renamed over ``path``: a process killed at
    any instant leaves either the previous checkpoint or the new one, never a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scheduler = state["scheduler"]
    payload = {
        "step_index": step_index,
        "model": state["model"].state_dict(),
        "optimizer": state["optimizer"].state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "generator": state["generator"].get_state(),
        "history": json.dumps(dataclasses.asdict(history)),
        "callbacks": [callback.state_dict() for callback in callbacks],
        "epoch_order": order if step_index % history.steps_per_epoch else None,
    }
    save_atomic(payload, path)


def _resume(path, state: dict, history: History, callbacks):
    """Load a checkpoint written by :func:`_save_checkpoint` into ``state``; check it is this run's.

    Returns ``(history, step_index, epoch_order)``. A file that is not a readable checkpoint
    (truncated, corrupt, foreign, or a pickle that would run code: ``weights_only=True``
    refuses it) raises ``ValueError`` naming the file and the reason."""
    saved = load_tensors(path, "checkpoint")
    expected = {"step_index", "model", "optimizer", "scheduler", "generator", "history", "callbacks"}
    if not isinstance(saved, dict) or not expected <= set(saved):
        raise ValueError(f"checkpoint {str(path)!r} is not an sgdlab training checkpoint "
                         f"(expected the keys {sorted(expected)}); delete it to start over")
    saved_history = History(**json.loads(saved["history"]))
    if saved_history.config != history.config:
        changed = sorted(k for k in history.config if saved_history.config.get(k) != history.config[k])
        raise ValueError(
            f"checkpoint {str(path)!r} belongs to another run (different {', '.join(changed)}: "
            f"{ {k: saved_history.config.get(k) for k in changed} } there, "
            f"{ {k: history.config[k] for k in changed} } here); "
            "delete it or choose another checkpoint path"
        )
    if len(saved["callbacks"]) != len(callbacks):
        raise ValueError(f"checkpoint {str(path)!r} was written with {len(saved['callbacks'])} callbacks, this run "
                         f"has {len(callbacks)}")
    try:
        state["model"].load_state_dict(saved["model"])
    except RuntimeError as error:  # same class name, other layers or widths
        raise ValueError(f"checkpoint {str(path)!r} holds another architecture than this {history.config['model']} "
                         f"({str(error).splitlines()[-1].strip()}); delete it or choose another checkpoint path") from None
    state["optimizer"].load_state_dict(saved["optimizer"])
    if state["scheduler"] is not None:
        state["scheduler"].load_state_dict(saved["scheduler"])
    state["generator"].set_state(saved["generator"].cpu())  # generator states live on the CPU
    for callback, callback_state in zip(callbacks, saved["callbacks"]):
        callback.load_state_dict(callback_state)
    order = saved.get("epoch_order")
    return saved_history, saved["step_index"], None if order is None else order.to(state["generator"].device)
