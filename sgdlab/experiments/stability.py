"""Learning-rate decay and network stability (``book/stability.ipynb``).

Trains a convolutional network and a fully connected one under each schedule (constant, a
step decay that multiplies the rate by ``gamma`` once, cosine annealing), all for the same
number of steps, and records at every step how much the network drifts on a fixed probe
batch (:class:`sgdlab.stability.StabilityRecorder`). Two controls come with it:

* the *floor*: the same recorder on a run at the tiny rate ``floor_lr``, which shows how much
  drift the measurement itself would report if the weights barely moved (with BatchNorm in
  eval mode, the running statistics alone move it; ``bn="batch"`` avoids that);
* *seeds*: the final training loss of every schedule for ``seeds`` seeds (initialisation
  and data order), so that "decay lowers the loss at an equal budget" can be tested.

The chapter calls :func:`run`. ``NAME``, ``CHOICES``, ``RESULTS``, ``prepare`` and ``Result``
follow :mod:`sgdlab.experiments`, so that ``python -m sgdlab run stability`` needs only this
module listed in ``sgdlab.experiments.EXPERIMENTS`` (it is not yet). ``prepare`` returns both
data sets, name -> Dataset, and ``final.pt`` holds every recorded run's final state.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from ..callbacks import History
from ..checks import check_choice, check_counts
from ..data import DATASETS, Dataset, load_dataset
from ..files import load_tensors
from ..models import ARCHITECTURES, make_model
from ..params import BN_MODES, loss_and_accuracy, model_params
from ..stability import StabilityRecorder, StabilityResult
from ..train import check_lr, save_atomic
from .common import state_of, train_part

NAME = "stability"
CHOICES = dict(cnn_arch=ARCHITECTURES, cnn_dataset=tuple(DATASETS), mlp_arch=ARCHITECTURES,
               mlp_dataset=tuple(DATASETS), bn=BN_MODES)
SCHEDULES = ("constant", "step", "cosine")  # the schedules compared, in this order
RESULTS = ("stability.json",)


@dataclasses.dataclass(frozen=True)
class Config:
    """The stability chapter's settings; the defaults are the ``quick`` preset's."""

    cnn_arch: str = "cnn"          # the convolutional network (sgdlab.models.ARCHITECTURES)
    cnn_dataset: str = "mnist1d"   # its data set
    cnn_lr: float = 1.0            # its initial (peak) learning rate
    mlp_arch: str = "mlp"          # the fully connected network
    mlp_dataset: str = "digits"    # its data set
    mlp_lr: float = 0.3            # its initial (peak) learning rate
    epochs: int = 6                # every run's length: the same number of steps for every schedule
    gamma: float = 0.1             # the step schedule multiplies the rate by gamma once, after epochs // 2
    batch_size: int = 100          # mini-batch size
    probe: int = 100               # examples in the fixed probe batch (the first training examples)
    bn: str = "batch"              # BatchNorm on the probe: "batch" (no running-statistics floor) or "eval"
    seeds: int = 3                 # seeds 0..seeds-1 per schedule for the final losses (seed 0 is recorded)
    floor_lr: float = 1e-6         # the control run's rate: drift that does not come from the rate
    floor_epochs: int = 1          # its length

    @property
    def decay_epoch(self) -> int:
        """The epoch after which the step schedule multiplies the rate by ``gamma``."""
        return self.epochs // 2

    def networks(self) -> dict:
        """label -> (architecture, data set name, initial learning rate)."""
        return {"CNN": (self.cnn_arch, self.cnn_dataset, self.cnn_lr), "MLP": (self.mlp_arch, self.mlp_dataset, self.mlp_lr)}

    def schedule(self, name: str, decay_epoch: int | None = None, gamma: float | None = None):
        """The ``schedule=`` argument of :func:`sgdlab.train` for ``name`` in ``SCHEDULES``."""
        check_choice("schedule", name, SCHEDULES)
        if name == "step":
            return {"name": "step", "milestones": [self.decay_epoch if decay_epoch is None else decay_epoch],
                    "gamma": self.gamma if gamma is None else gamma}
        return name


def record_run(arch: str, data: Dataset, *, lr: float, schedule, epochs: int, batch_size: int, probe: int,
               bn: str = "batch", seed: int = 0, out: Path | None = None, label: str = "run",
               progress: bool | None = False) -> tuple[History, StabilityResult]:
    """Train ``make_model(arch, data, seed=seed)`` with ``schedule`` and record its drift at every step.

    Returns the run's History and the :class:`~sgdlab.stability.StabilityResult`. Divergence
    raises :class:`sgdlab.callbacks.Diverged`. ``out``/``label``: a run directory to checkpoint in.
    """
    model, history, result = _record(arch, data, lr=lr, schedule=schedule, epochs=epochs, batch_size=batch_size,
                                     probe=probe, bn=bn, seed=seed, out=out, label=label, progress=progress)
    return history, result


def record_network(config: Config, net: str, data: Dataset, schedule, seed: int = 0) -> tuple[History, StabilityResult]:
    """:func:`record_run` of network ``net`` (a label of :meth:`Config.networks`: ``"CNN"`` or
    ``"MLP"``) on ``data`` (its data set, loaded) at its learning rate, with ``config``'s
    epochs, batch size, probe and BatchNorm mode, and ``schedule`` (e.g. :meth:`Config.schedule`)."""
    networks = config.networks()
    check_choice("net", net, tuple(networks))
    arch, _, lr = networks[net]
    return record_run(arch, data, lr=lr, schedule=schedule, epochs=config.epochs, batch_size=config.batch_size,
                      probe=config.probe, bn=config.bn, seed=seed)


def _record(arch, data, *, lr, schedule, epochs, batch_size, probe, bn, seed, out, label, progress):
    model = make_model(arch, data, seed=seed)
    recorder = StabilityRecorder(probe, bn=bn)
    history = train_part(out, label, model, data, lr=lr, batch_size=batch_size, epochs=epochs, schedule=schedule,
                         seed=seed, callbacks=[recorder], progress=progress)
    return model, history, recorder.result


@dataclasses.dataclass
class Result:
    """What the experiment found. Keys of ``histories`` and ``drift``: ``"<net>/<schedule>"``
    (net "CNN" or "MLP", schedule in ``SCHEDULES``), seed 0; ``floor``: net -> the drift of the
    ``floor_lr`` run; ``final_loss``: ``"<net>/<schedule>"`` -> the full training-set loss
    (nats, eval mode) after the last step, one per seed 0..seeds-1; ``params``: every recorded
    run's final state dict, keys ``"<net>/<schedule>/<name>"``."""

    histories: dict
    drift: dict
    floor: dict
    final_loss: dict
    params: dict

    def summary(self) -> dict:
        """Median final training loss per network and schedule, and the floor's mean drift (JSON values)."""
        return dict(final_loss_median={k: float(np.median(v)) for k, v in self.final_loss.items()},
                    floor_mean_drift={net: float(np.mean(r.mean_activation_drift())) for net, r in self.floor.items()})

    def save(self, directory: str | Path) -> None:
        """``stability.json`` (the index and the final losses), one ``.npz`` and one history per run, ``final.pt``."""
        directory = Path(directory)
        for key, result in {**self.drift, **{f"{net}/floor": r for net, r in self.floor.items()}}.items():
            result.save(directory / f"stability-{key.replace('/', '-')}.npz")
        for key, history in self.histories.items():
            history.save(directory / f"history-{key.replace('/', '-')}.json")
        index = dict(runs=list(self.drift), floor=list(self.floor),
                     final_loss={k: [float(x) for x in v] for k, v in self.final_loss.items()})
        (directory / "stability.json").write_text(json.dumps(index, indent=1) + "\n")
        save_atomic(self.params, directory / "final.pt")

    @classmethod
    def load(cls, directory: str | Path) -> "Result":
        directory = Path(directory)
        index = json.loads((directory / "stability.json").read_text())
        name = lambda key: key.replace("/", "-")
        return cls(histories={k: History.load(directory / f"history-{name(k)}.json") for k in index["runs"]},
                   drift={k: StabilityResult.load(directory / f"stability-{name(k)}.npz") for k in index["runs"]},
                   floor={net: StabilityResult.load(directory / f"stability-{net}-floor.npz") for net in index["floor"]},
                   final_loss={k: np.asarray(v) for k, v in index["final_loss"].items()},
                   params=load_tensors(directory / "final.pt", "final parameters"))


def prepare(config: Config, *, data=None, download: bool = False) -> dict:
    """Every setting of ``config`` checked, and its two data sets (name -> Dataset); writes nothing.

    ``data``: a Dataset or a dict name -> Dataset holding sets already loaded (others are loaded)."""
    for key, allowed in CHOICES.items():
        check_choice(key, getattr(config, key), allowed)
    check_counts("epochs", config.epochs)
    check_counts("batch_size", config.batch_size)
    check_counts("probe", config.probe)
    check_counts("seeds", config.seeds)
    check_counts("floor_epochs", config.floor_epochs)
    if config.epochs < 2:
        raise ValueError(f"epochs must be at least 2 (the step schedule drops the rate after epochs // 2), got epochs={config.epochs}")
    for key in ("cnn_lr", "mlp_lr", "floor_lr"):
        try:
            check_lr(getattr(config, key))
        except ValueError:
            raise ValueError(f"{key} must be a positive finite number, got {key}={getattr(config, key)!r}") from None
    if isinstance(config.gamma, bool) or not isinstance(config.gamma, (int, float)) or not 0 < config.gamma < 1:
        raise ValueError(f"gamma must be a number in (0, 1) (the step schedule's factor), got gamma={config.gamma!r}")
    given = {data.name: data} if isinstance(data, Dataset) else dict(data or {})
    loaded = {}
    for _, name, _ in config.networks().values():
        if name not in loaded:
            loaded[name] = given[name] if name in given else load_dataset(name, download=download)
    return loaded


def run(config: Config, *, out: str | Path | None = None, progress: bool | None = None, data=None,
        download: bool = False) -> Result:
    """Train and record every network under every schedule, the floor control and the extra seeds.

    Seed 0 of every (network, schedule) is recorded at every step; seeds 1..seeds-1 only give
    their final training loss. With ``out`` (an existing directory) every run checkpoints
    there and resumes, and the :class:`Result` is saved there at the end. Raises
    :class:`sgdlab.callbacks.Diverged` if a run diverged.
    """
    datasets = prepare(config, data=data, download=download)
    out = Path(out) if out is not None else None
    common = dict(epochs=config.epochs, batch_size=config.batch_size, probe=config.probe, bn=config.bn, out=out,
                  progress=progress)
    histories, drift, floor, final_loss, params = {}, {}, {}, {}, {}
    for net, (arch, name, lr) in config.networks().items():
        data = datasets[name]
        for schedule in SCHEDULES:
            key = f"{net}/{schedule}"
            model, histories[key], drift[key] = _record(arch, data, lr=lr, schedule=config.schedule(schedule), seed=0,
                                                        label=key.replace("/", "-"), **common)
            params.update({f"{key}/{k}": v for k, v in state_of(model).items()})
            losses = [histories[key].train_loss[-1]]
            for seed in range(1, config.seeds):
                model = make_model(arch, data, seed=seed)
                train_part(out, f"{net}-{schedule}-seed{seed}", model, data, lr=lr, batch_size=config.batch_size,
                           epochs=config.epochs, schedule=config.schedule(schedule), seed=seed, evaluate=False,
                           progress=progress)
                losses.append(loss_and_accuracy(model, model_params(model), data.x_train, data.y_train)[0])
            final_loss[key] = np.asarray(losses, dtype=np.float64)
        _, floor[net] = record_run(arch, data, lr=config.floor_lr, schedule="constant", label=f"{net}-floor",
                                   **{**common, "epochs": config.floor_epochs})
    result = Result(histories, drift, floor, final_loss, params)
    if out is not None:
        result.save(out)
    return result
