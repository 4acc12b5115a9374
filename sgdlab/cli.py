"""``python -m sgdlab``: the paper-scale experiments from the command line, resumable.

    python -m sgdlab run walk --preset paper --arch vgg11 --dataset cifar10 --out runs/walk-vgg

runs "A Walk with SGD" (Xing et al. 2018): trains with SGD and records, for every step of
the chosen epochs, the full training loss between consecutive iterates. The run directory
``--out`` receives

* ``config.json``   the arguments, the preset, the versions and the device;
* ``checkpoint.pt`` the whole training state after every epoch (loads with ``weights_only=True``):
                    running the same command again continues from the last completed epoch;
* ``walk.npz``      the :class:`~sgdlab.landscape.WalkResult`, rewritten after every recorded
                    epoch, so a run that dies keeps what it measured;
* ``history.json``  the :class:`~sgdlab.train.History`, at the end.

A notebook loads the result with ``sgdlab.WalkResult.load(DIR / "walk.npz")``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from .data import DATASETS, load_dataset
from .landscape import BN_MODES, record_walk
from .models import ARCHITECTURES, make_model
from .presets import PRESETS, default_device, describe, get_preset

EXPERIMENTS = ("walk",)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sgdlab", description="Run sgdlab's experiments at paper scale.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run an experiment into a run directory (resumable)")
    run.add_argument("experiment", choices=EXPERIMENTS)
    run.add_argument("--out", required=True, type=Path, help="run directory (created; rerun to resume)")
    run.add_argument("--preset", choices=tuple(PRESETS), default=None,
                     help="defaults for everything below (default: $SGDLAB_PRESET or quick)")
    run.add_argument("--arch", choices=ARCHITECTURES, help="architecture (default: the preset's MLP)")
    run.add_argument("--dataset", choices=DATASETS, help="data set (default: the preset's MLP data set)")
    run.add_argument("--epochs", type=int, nargs="+", help="epochs to record, counted from 1 (default: the preset's)")
    run.add_argument("--train-epochs", type=int, default=None, help="train this long (default: the last recorded epoch)")
    run.add_argument("--steps", type=int, default=None, help="record only the first STEPS updates of each epoch")
    run.add_argument("--eval-examples", type=int, default=None,
                     help="evaluate the interpolated loss on the first N training examples (default: all)")
    run.add_argument("--lr", type=float, default=0.1, help="constant learning rate (default 0.1, the paper's)")
    run.add_argument("--batch-size", type=int, default=None, help="mini-batch size (default: the preset's)")
    run.add_argument("--weight-decay", type=float, default=None, help="L2 weight decay (default: the preset's)")
    run.add_argument("--bn", choices=BN_MODES, default="eval", help="BatchNorm mode of the interpolated losses")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--download", action="store_true", help="download MNIST / CIFAR when they are not on disk")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run_walk(args: argparse.Namespace) -> Path:
    """Run (or resume) the walk census described by ``args``; return the run directory."""
    preset = get_preset(args.preset)
    is_mlp = args.arch is None or args.arch.startswith("mlp")
    arch = args.arch or preset.mlp_arch
    dataset_name = args.dataset or (preset.mlp_dataset if is_mlp else preset.cnn_dataset)
    epochs = args.epochs or list(preset.walk_epochs if is_mlp else preset.walk_cnn_epochs)
    settings = dict(
        experiment="walk", preset=preset.name, arch=arch, dataset=dataset_name, epochs=epochs,
        train_epochs=args.train_epochs, steps=args.steps, eval_examples=args.eval_examples, lr=args.lr,
        batch_size=args.batch_size or preset.walk_batch_size,
        weight_decay=preset.walk_weight_decay if args.weight_decay is None else args.weight_decay,
        bn=args.bn, seed=args.seed,
    )
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "config.json"
    if config_path.exists():
        previous = json.loads(config_path.read_text())["settings"]
        if previous != settings:
            changed = sorted(k for k in settings if previous.get(k) != settings[k])
            raise SystemExit(f"error: {out} holds another run (different {', '.join(changed)}); choose another --out")
    config_path.write_text(json.dumps(dict(
        settings=settings, describe=describe(preset), python=platform.python_version(), torch=torch.__version__,
        device=str(default_device()), command=" ".join(sys.argv),
    ), indent=1))

    data = load_dataset(dataset_name, download=args.download)
    model = make_model(arch, data, seed=args.seed)
    print(describe(preset))
    print(f"walk: {arch} on {dataset_name}, lr {args.lr}, batch {settings['batch_size']}, "
          f"weight decay {settings['weight_decay']}, recording epochs {epochs} -> {out}")
    checkpoint = out / "checkpoint.pt"
    if checkpoint.exists():
        print(f"resuming from {checkpoint}")

    history, result = record_walk(
        model, data, epochs=epochs, lr=args.lr, batch_size=settings["batch_size"], steps=args.steps,
        eval_examples=args.eval_examples, train_epochs=args.train_epochs, bn=args.bn,
        weight_decay=settings["weight_decay"], seed=args.seed, progress=not args.no_progress,
        checkpoint=checkpoint, save_to=out / "walk.npz",
    )
    result.save(out / "walk.npz")
    history.save(out / "history.json")
    for row in result.census():
        print(f"epoch {row['epoch']:>4}: {row['steps']} steps, {row['barriers']} barriers crossed, "
              f"{row['interior_minimum']:.0%} with a valley inside, floor rose {row['floor_rises']} / fell {row['floor_falls']}")
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run" and args.experiment == "walk":
        run_walk(args)
    return 0
