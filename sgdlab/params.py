"""A network's parameters as a dict of tensors, and the loss of a model at given parameters.

This is the ``torch.func`` convention: ``params`` maps each name of ``model.state_dict()``
(weights, biases and BatchNorm buffers) to a tensor, and
``torch.func.functional_call(model, params, (x,))`` evaluates the model at those values
without touching the model's own tensors. Everything in sgdlab that looks at the loss
surface (interpolation, curvature, permutations) takes and returns such dicts.

Conventions
-----------
* Distances and flattening use only floating-point entries, in the dict's key order.
  BatchNorm running statistics are not weights: ``model_params(model, buffers=False)``
  gives the trainable parameters alone, which is what ``d(w_N, w_M)`` means in the book.
* ``full_loss`` is the mean cross-entropy over the whole set ``(x, y)``, without
  augmentation, evaluated in chunks of ``chunk_size`` examples so that memory stays bounded.
"""

from __future__ import annotations

import contextlib
from typing import Dict, Iterator

import torch
import torch.nn.functional as F
from torch.func import functional_call

Params = Dict[str, torch.Tensor]

BN_MODES = ("eval", "batch")


def model_params(model: torch.nn.Module, *, buffers: bool = True) -> Params:
    """The model's current parameters (and buffers), detached but *not* copied.

    The tensors are the model's own storage: they change when the model trains. Use
    :func:`clone_params` to keep a snapshot.
    """
    params = {name: p.detach() for name, p in model.named_parameters()}
    if buffers:
        params.update({name: b.detach() for name, b in model.named_buffers()})
    return params


def clone_params(params: Params) -> Params:
    """An independent copy of ``params`` (same device and dtype)."""
    return {name: t.detach().clone() for name, t in params.items()}


def check_same_keys(a: Params, b: Params, *, names: tuple[str, str] = ("params_a", "params_b")) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` have the same keys and shapes."""
    if a.keys() != b.keys():
        only_a = sorted(set(a) - set(b))[:5]
        only_b = sorted(set(b) - set(a))[:5]
        raise ValueError(f"{names[0]} and {names[1]} have different keys: only in {names[0]}: {only_a}, only in "
                         f"{names[1]}: {only_b}")
    for name in a:
        if a[name].shape != b[name].shape:
            raise ValueError(
                f"{names[0]}[{name!r}] has shape {tuple(a[name].shape)} but {names[1]}[{name!r}] has shape "
                f"{tuple(b[name].shape)}"
            )


def check_fits_model(model: torch.nn.Module, params: Params, *, name: str = "params", partial: bool = False) -> None:
    """Raise ``ValueError`` unless ``params`` has exactly the model's state-dict keys and shapes
    (with ``partial``, some of them: ``functional_call`` takes the others from the model)."""
    expected = {key: value.shape for key, value in model.state_dict().items()}
    if not (params.keys() <= expected.keys() if partial else params.keys() == expected.keys()):
        missing = [] if partial else sorted(set(expected) - set(params))[:5]
        extra = sorted(set(params) - set(expected))[:5]
        raise ValueError(f"{name} does not fit the model: missing keys {missing}, unexpected keys {extra}")
    for key, shape in expected.items():
        if params[key].shape != shape:
            raise ValueError(f"{name}[{key!r}] has shape {tuple(params[key].shape)}; the model needs {tuple(shape)}")


def _floating(params: Params) -> list[torch.Tensor]:
    return [t for t in params.values() if t.is_floating_point()]


def flatten(params: Params) -> torch.Tensor:
    """All floating-point entries of ``params`` as one vector, in key order."""
    return torch.cat([t.reshape(-1) for t in _floating(params)])


def unflatten(vector: torch.Tensor, like: Params) -> Params:
    """The inverse of :func:`flatten`: ``vector`` cut into views shaped like the floating-point
    entries of ``like``, in its key order (the integer entries are left out).

    >>> params = {"w": torch.ones(2, 3), "b": torch.zeros(2)}
    >>> {k: tuple(t.shape) for k, t in unflatten(flatten(params), params).items()}
    {'w': (2, 3), 'b': (2,)}
    """
    floating = {k: t for k, t in like.items() if t.is_floating_point()}
    sizes = [t.numel() for t in floating.values()]
    if vector.numel() != sum(sizes):
        raise ValueError(f"vector holds {vector.numel():,} numbers; like has {sum(sizes):,} floating-point entries")
    return {k: piece.view(t.shape) for (k, t), piece in zip(floating.items(), torch.split(vector, sizes))}


def num_parameters(params: Params) -> int:
    """How many floating-point numbers ``params`` holds."""
    return sum(t.numel() for t in _floating(params))


def distance(a: Params, b: Params) -> float:
    """Euclidean distance ``||a - b||`` over the floating-point entries (same keys needed).

    >>> distance({"w": torch.tensor([0.0, 0.0])}, {"w": torch.tensor([3.0, 4.0])})
    5.0
    """
    check_same_keys(a, b, names=("a", "b"))
    squared = sum(float(((a[k].double() - b[k].double()) ** 2).sum()) for k in a if a[k].is_floating_point())
    return squared ** 0.5


def norm(params: Params) -> float:
    """Euclidean norm over the floating-point entries."""
    return sum(float((t.double() ** 2).sum()) for t in _floating(params)) ** 0.5


def lerp(a: Params, b: Params, alpha: float) -> Params:
    """The point ``(1 - alpha) * a + alpha * b``.

    Integer entries (BatchNorm's ``num_batches_tracked``) are not interpolated: they are
    taken from ``a``. ``alpha`` outside [0, 1] extrapolates.

    >>> a = {"w": torch.tensor([0.0, 2.0]), "num_batches_tracked": torch.tensor(3)}
    >>> b = {"w": torch.tensor([1.0, 4.0]), "num_batches_tracked": torch.tensor(7)}
    >>> lerp(a, b, 0.25)
    {'w': tensor([0.2500, 2.5000]), 'num_batches_tracked': tensor(3)}
    """
    check_same_keys(a, b, names=("a", "b"))
    for k in a:
        if a[k].is_floating_point() and (a[k].dtype, a[k].device) != (b[k].dtype, b[k].device):
            raise ValueError(f"a[{k!r}] is {a[k].dtype} on {a[k].device} but b[{k!r}] is {b[k].dtype} on "
                             f"{b[k].device}; "
                             "convert one with .to() so that both ends have the same dtype and device")
    return {k: torch.lerp(a[k], b[k], alpha) if a[k].is_floating_point() else a[k] for k in a}


def check_evaluation(x: torch.Tensor, y: torch.Tensor, chunk_size: int, bn: str) -> None:
    """The checks shared by every full-set evaluation: a known BatchNorm mode, positive chunks, matching data."""
    if bn not in BN_MODES:
        raise ValueError(f"bn={bn!r} is not known; choose one of: {', '.join(BN_MODES)}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y must hold the same, non-zero number of examples; got {len(x)} and {len(y)}")


@contextlib.contextmanager
def evaluation(model: torch.nn.Module, bn: str = "eval") -> Iterator[torch.nn.Module]:
    """The model in the mode an evaluation with BatchNorm ``bn`` needs, restored on exit.

    ``bn="eval"``: eval mode (BatchNorm with its running statistics, dropout off);
    ``bn="batch"``: train mode (BatchNorm normalises with the statistics of each batch it
    sees, and updates its running statistics: give it copies of them). Whatever mode the
    model was in comes back, even when the block raises.

    >>> model = torch.nn.BatchNorm1d(3)
    >>> with evaluation(model):
    ...     model.training
    False
    >>> model.training
    True
    """
    if bn not in BN_MODES:
        raise ValueError(f"bn={bn!r} is not known; choose one of: {', '.join(BN_MODES)}")
    was_training = model.training
    model.train(bn == "batch")
    try:
        yield model
    finally:
        model.train(was_training)


def loss_and_accuracy(
    model: torch.nn.Module,
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    chunk_size: int = 4096,
    bn: str = "eval",
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (a fraction in [0, 1]) of the model at ``params`` on ``(x, y)``.

    ``bn="eval"`` evaluates BatchNorm with the running statistics held in ``params``;
    ``bn="batch"`` normalises each chunk with its own statistics (the choice of the "A Walk
    with SGD" authors' code), so results then depend on ``chunk_size``. Neither the model
    nor ``params`` is changed.
    """
    check_evaluation(x, y, chunk_size, bn)
    check_fits_model(model, params, partial=True)
    if bn == "batch":
        # Train-mode BatchNorm writes its running statistics in place: give it copies.
        buffer_names = {name for name, _ in model.named_buffers()}
        params = {k: v.clone() if k in buffer_names else v for k, v in params.items()}
    total_loss = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    with evaluation(model, bn), torch.no_grad():
        for start in range(0, len(x), chunk_size):
            xc, yc = x[start:start + chunk_size], y[start:start + chunk_size]
            logits = functional_call(model, params, (xc,))
            total_loss += F.cross_entropy(logits, yc, reduction="sum").double()
            correct += (logits.argmax(dim=1) == yc).sum()
    return float(total_loss) / len(x), float(correct) / len(x)


def full_loss(model: torch.nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, *, chunk_size: int = 4096, bn: str = "eval") -> float:
    """Mean cross-entropy of the model at ``params`` over the whole set ``(x, y)``.

    See :func:`loss_and_accuracy` for ``chunk_size`` and ``bn``.
    """
    return loss_and_accuracy(model, params, x, y, chunk_size=chunk_size, bn=bn)[0]
