"""sgdlab: see, measure and reproduce how SGD moves through a network's loss surface.

The package behind the sgdlab book. Parameters are dicts of tensors (the ``torch.func``
convention, see :mod:`sgdlab.params`); data sets live on the device (:mod:`sgdlab.data`);
one loop trains everything (:mod:`sgdlab.train`); presets set the scale (:mod:`sgdlab.presets`).
"""

from . import experiments, plots, scoreboard, selfcheck, toy, widgets
from .chapter import setup_chapter
from .data import DATASETS, Dataset, load_dataset
from .landscape import LMCBarrier, barrier_height, crosses_barrier, interpolate, lmc_barrier
from .models import ARCHITECTURES, make_model
from .params import (
    clone_params,
    distance,
    flatten,
    full_loss,
    lerp,
    loss_and_accuracy,
    model_params,
    norm,
    num_parameters,
)
from .per_example import per_example_gradients
from .permutation import (
    PermutationSpec,
    activation_matching,
    apply_permutation,
    identity_permutation,
    inverse_permutation,
    permutation_spec,
    random_permutation,
    weight_matching,
)
from .seeds import SeedsResult, train_seeds
from .stability import StabilityRecorder, StabilityResult
from .walk import WalkRecorder, WalkResult, record_walk
from .presets import PRESETS, Preset, default_device, describe, get_preset
from .callbacks import Callback, Diverged, History, Step, StopTraining
from .train import OPTIMIZERS, SCHEDULES, train

__version__ = "0.1.0"

__all__ = [
    "ARCHITECTURES", "DATASETS", "OPTIMIZERS", "PRESETS", "SCHEDULES",
    "Callback", "Dataset", "Diverged", "History", "LMCBarrier", "Preset", "Step", "StopTraining", "WalkRecorder", "WalkResult",
    "barrier_height", "crosses_barrier", "interpolate", "lmc_barrier", "record_walk",
    "clone_params", "default_device", "describe", "distance", "flatten", "full_loss",
    "get_preset", "lerp", "load_dataset", "loss_and_accuracy", "make_model", "model_params",
    "experiments", "norm", "num_parameters", "per_example_gradients", "plots", "train",
    "PermutationSpec", "activation_matching", "apply_permutation", "identity_permutation", "inverse_permutation",
    "permutation_spec", "random_permutation", "weight_matching", "SeedsResult", "train_seeds", "toy", "StabilityRecorder", "StabilityResult",
    "scoreboard", "selfcheck", "setup_chapter", "widgets",
]
