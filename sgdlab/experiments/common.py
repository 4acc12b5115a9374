"""What the experiments share: training with a run directory's conventions, when there is one."""

from __future__ import annotations

from pathlib import Path

from ..callbacks import History, check_not_diverged
from ..checks import check_choice, check_counts
from ..data import Dataset, load_dataset
from ..files import append_log
from ..train import train

CHECKPOINT_EVERY = 200      # steps between checkpoints in a run directory (besides every epoch's end)
CHECKPOINT_MINUTES = 5.0    # and minutes between them


def checked_data(config, choices: dict, counts: tuple[str, ...], data: Dataset | None, download: bool) -> Dataset:
    """The first part of every experiment's ``prepare``: each text setting among its ``choices``,
    each of ``counts`` a positive count, and the training set ``config.dataset`` (``data`` if
    given, which must be that set)."""
    for key, allowed in choices.items():
        check_choice(key, getattr(config, key), allowed)
    for key in counts:
        check_counts(key, getattr(config, key))
    if data is None:
        return load_dataset(config.dataset, download=download)
    if data.name != config.dataset:
        raise ValueError(f"data is {data.name!r} but config.dataset={config.dataset!r}: pass the same data set")
    return data


def train_part(out: Path | None, label: str, model, data, **options) -> History:
    """``sgdlab.train`` for one part of an experiment; divergence raises :class:`sgdlab.callbacks.Diverged`.

    With a run directory ``out`` the part checkpoints to ``checkpoint-<label>.pt`` (and so
    resumes), saves ``history-<label>.json`` and logs its end."""
    if out is not None:
        options.update(checkpoint=out / f"checkpoint-{label}.pt", checkpoint_every=CHECKPOINT_EVERY,
                       checkpoint_minutes=CHECKPOINT_MINUTES)
    history = train(model, data, **options)
    if out is not None:
        history.save(out / f"history-{label}.json")
    check_not_diverged(history, label)
    if out is not None:
        append_log(out, f"{label}: trained {history.steps} steps")
    return history


def state_of(model) -> dict:
    """A copy of the model's state dict (parameters and buffers), what ``final.pt`` holds."""
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
