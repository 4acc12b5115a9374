"""``python -m sgdlab``: the book's experiments at paper scale, from the command line, resumable.

    python -m sgdlab run walk --preset paper --set arch=vgg11 --set dataset=cifar10 --download --out runs/walk-vgg11
    python -m sgdlab show runs/walk-vgg11 --json

``run EXPERIMENT`` (``walk``, ``curvature``, ``trajectory``) takes its settings from the preset
(``--preset``, default ``$SGDLAB_PRESET`` or ``quick``), changed with ``--set key=value``
(``python -m sgdlab run walk --list`` prints them, with their types, defaults and the
preset's values). Killed at any point, the same command
resumes from the last checkpoint and ends exactly as an uninterrupted run; a finished run is
not recomputed; a directory holding other settings is refused unless ``--fresh``. The run
directory is described in :mod:`sgdlab.runs`. A run that is refused, diverges or fails
exits with status 1 and a message saying why (never a traceback); a malformed command line
exits with status 2; an interrupted one (Ctrl-C) with status 130, its status saying so.

On Colab, point ``--out`` at Google Drive (after ``from google.colab import drive;
drive.mount("/content/drive")``): ``--out /content/drive/MyDrive/sgdlab-runs/walk-vgg11``,
so a disconnected session resumes where it stopped.

``sweep EXPERIMENT --grid key=v1,v2 --out DIR`` runs a grid of them, here or on Slurm, and
``sweep show DIR`` reports it (:mod:`sgdlab.sweep`).
"""

from __future__ import annotations

import argparse
import json
import sys

from . import backends, sweep
from .experiments import EXPERIMENTS
from .presets import PRESETS, get_preset
from .runs import RunError, show, start
from .settings import apply_settings, as_settings, settings_table


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sgdlab", description="Run sgdlab's experiments at paper scale.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run an experiment into a run directory (rerun to resume)")
    run.add_argument("experiment", choices=tuple(EXPERIMENTS))
    run.add_argument("--out", help="run directory (created; the same command resumes it)")
    run.add_argument("--preset", choices=tuple(PRESETS), default=None,
                     help="default settings (default: $SGDLAB_PRESET or quick)")
    run.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                     help="change one setting; repeat for more (see --list)")
    run.add_argument("--list", action="store_true",
                     help="print the settings' values as JSON, and a table of their types, defaults and the "
                          "preset's values on stderr; then stop")
    run.add_argument("--fresh", action="store_true", help="delete what the run directory holds and start over")
    run.add_argument("--download", action="store_true", help="download MNIST / CIFAR when they are not on disk")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    view = commands.add_parser("show", help="print a run's configuration, status, summary and parameter fingerprint")
    view.add_argument("directory")
    view.add_argument("--json", action="store_true", help="as JSON")
    _add_sweep_parser(commands)
    return parser


def _print_summary(result: dict) -> None:
    status = result["status"] or {}
    print(f"{result['directory']}: {result['config']['experiment']}, {status.get('state')}"
          + (f" ({status['message']})" if status.get("message") else ""))
    for key, value in (result["summary"] or {}).items():
        print(f"  {key}: {json.dumps(value)}")
    print(f"  params_sha256: {result['params_sha256']}")
    for problem in result["problems"]:
        print(f"  not trusted: {problem} (run the same command to restore it)")


def _exit_code(command, interrupted: str) -> int:
    """Run ``command()`` and return its exit code; a user error is one line on stderr (1), an interrupt
    says how to resume (130)."""
    try:
        return command()
    except (RunError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted: {interrupted}", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "sweep":
        return _exit_code(lambda: _sweep_main(args), "run the same sweep to resume")
    return _exit_code(lambda: _run_main(args), "the run directory says so; run the same command to resume")


def _run_main(args) -> int:
    if args.command == "show":
        result = show(args.directory)
        print(json.dumps(result, indent=1)) if args.json else _print_summary(result)
        return 0
    experiment = EXPERIMENTS[args.experiment]
    preset = get_preset(args.preset)
    preset_config = getattr(preset, experiment.NAME)
    config = apply_settings(preset_config, args.assignments, experiment.CHOICES)
    if args.list:
        print(settings_table(config, preset_config, experiment.Config()), file=sys.stderr)
        print(json.dumps(as_settings(config), indent=1))
        return 0
    if not args.out:
        raise RunError("--out is required: the run directory to write (or resume)")
    result = start(experiment, preset, config, args.out, fresh=args.fresh, download=args.download,
                   progress=not args.no_progress)
    _print_summary(result)
    return 0


# ---------------------------------------------------------------------------------------
# python -m sgdlab sweep EXPERIMENT ... / sweep show DIR  (sgdlab.sweep; self-contained)
# ---------------------------------------------------------------------------------------

def _add_sweep_parser(commands) -> None:
    sweep = commands.add_parser("sweep", help="run a grid of runs (a process pool or Slurm); `sweep show DIR` reports it")
    kinds = sweep.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT|show")
    for name in EXPERIMENTS:
        grid = kinds.add_parser(name, help=f"a grid of {name} runs, one run directory per point under --out")
        grid.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                          help="one setting's values (lists: separated by ;); repeat for more: every combination runs")
        grid.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                          help="change one setting for every point")
        grid.add_argument("--preset", choices=tuple(PRESETS), default=None,
                          help="default settings (default: $SGDLAB_PRESET or quick)")
        grid.add_argument("--out", required=True, help="sweep directory (created; the same command resumes it)")
        grid.add_argument("--backend", choices=("local", "slurm"), default="local",
                          help="local: a process pool here; slurm: a submitit job array")
        grid.add_argument("--workers", type=int, default=None,
                          help="local: runs at once (default: one per GPU, else 1); slurm: array parallelism")
        grid.add_argument("--threads", type=int, default=None, help="torch threads per run (default: local, the "
                          "worker's share of the CPU cores; slurm, --cpus)")
        grid.add_argument("--download", action="store_true", help="download MNIST / CIFAR when they are not on disk")
        slurm = grid.add_argument_group("slurm (through submitit)")
        slurm.add_argument("--partition", default=None, help="Slurm partition")
        slurm.add_argument("--time", type=int, default=24 * 60, metavar="MINUTES",
                           help="wall-clock limit per job; a job past it is requeued and resumes (default: 1440)")
        slurm.add_argument("--gpus", type=int, default=1, help="GPUs per job (default: 1)")
        slurm.add_argument("--cpus", type=int, default=None, help="CPUs per job")
        slurm.add_argument("--mem", type=float, default=None, metavar="GB", help="memory per job, in GB")
        slurm.add_argument("--wait", action="store_true", help="wait for the jobs and report how each ended")
        slurm.add_argument("--cluster", choices=("slurm", "local"), default="slurm",
                           help="submitit's cluster: slurm, or local (the same code path on this machine, as CI runs it)")
    view = kinds.add_parser("show", help="one row per point (state, key numbers), seeds aggregated")
    view.add_argument("directory")
    view.add_argument("--json", action="store_true", help="as JSON")


def _sweep_main(args) -> int:
    if args.experiment == "show":
        shown = sweep.show(args.directory)
        print(json.dumps(shown, indent=1) if args.json else sweep.format_table(shown))
        return 0
    for name in ("workers", "threads", "gpus", "cpus", "time"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "gpus" else 1):
            raise sweep.SweepError(f"--{name} {value}: expected a positive integer")
    threads = args.threads or (args.cpus if args.backend == "slurm" else None)
    options = sweep.Options(backend=args.backend, workers=args.workers, threads=threads, download=args.download,
                            cluster=args.cluster, partition=args.partition, time_min=args.time, gpus=args.gpus,
                            cpus=args.cpus, mem_gb=args.mem, wait=args.wait)
    outcomes = sweep.sweep(args.experiment, args.preset, args.assignments, args.grid, args.out, options,
                           run_jobs=backends.runner(args.backend))
    for outcome in outcomes:
        print(f"{outcome['name']}: {outcome['state']}" + (f" ({outcome['message']})" if outcome["message"] else ""))
    print(f"follow it with: python -m sgdlab sweep show {args.out}")
    done = ("finished", "submitted", "running")
    return 0 if all(o["state"] in done for o in outcomes) else 1
