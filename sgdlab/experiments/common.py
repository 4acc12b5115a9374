"""What the experiments share: training with a run directory's conventions, when there is one."""

from __future__ import annotations

from pathlib import Path

from ..callbacks import History, check_not_diverged
from ..files import append_log
from ..train import train

CHECKPOINT_EVERY = 200      # steps between checkpoints in a run directory (besides every epoch's end)
CHECKPOINT_MINUTES = 5.0    # and minutes between them


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
