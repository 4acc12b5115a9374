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
"""

from __future__ import annotations

import argparse
import json
import sys

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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
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
    except (RunError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: the run directory says so; run the same command to resume", file=sys.stderr)
        return 130
