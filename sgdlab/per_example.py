"""Per-example gradients: one row of trainable-parameter gradient for each example.

``torch.func.grad`` differentiates with respect to every entry of the dict it is given, and
only floating-point tensors can carry gradients. A network with BatchNorm holds an integer
buffer (``num_batches_tracked``) and running statistics: they are passed to
``functional_call`` as constants, never as inputs of ``grad``. BatchNorm runs in eval mode
(its running statistics): a per-example loss needs normalisation that does not depend on the
other examples of a batch, and train mode would also write the running statistics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from .params import Params, check_fits_model, evaluation


def per_example_gradients(model: torch.nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, *,
                          chunk_size: int = 256) -> torch.Tensor:
    """Gradients of each example's cross-entropy, shape (N, P), on the data's device.

    Row i is the gradient of the loss of example i with respect to the trainable parameters
    (``model.named_parameters()``, in that order, flattened as :func:`sgdlab.params.flatten` flattens
    ``model_params(model, buffers=False)``), at ``params``; buffers in ``params`` (BatchNorm
    statistics) are constants. The mean of the rows is the gradient of the mean loss in eval
    mode. Examples are processed ``chunk_size`` at a time (memory: about ``chunk_size`` times
    one gradient, plus the N x P result).
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y must hold the same, non-zero number of examples; got {len(x)} and {len(y)}")
    check_fits_model(model, params)
    names = [name for name, _ in model.named_parameters()]
    trainable = {name: params[name] for name in names}
    constants = {name: t for name, t in params.items() if name not in trainable}

    def example_loss(weights, xi, yi):
        out = functional_call(model, {**weights, **constants}, (xi[None],))
        return F.cross_entropy(out, yi[None])

    per_chunk = vmap(grad(example_loss), in_dims=(None, 0, 0))
    rows = []
    with evaluation(model):
        for start in range(0, len(x), chunk_size):
            g = per_chunk(trainable, x[start:start + chunk_size], y[start:start + chunk_size])
            rows.append(torch.cat([g[name].reshape(len(g[name]), -1) for name in names], 1))
    return torch.cat(rows)
