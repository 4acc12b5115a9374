"""What every benchmark shares: its options, what it records about where it ran, and how it writes its result."""

import argparse
import datetime
import json
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

import sgdlab


def package_version(name: str) -> str | None:
    """The installed version of the distribution ``name``, or None when it is missing."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def describe_machine(*peers: str) -> dict:
    """Platform, CPUs, torch threads, versions (sgdlab, torch, python and each peer library),
    the load average (other work slows every way measured) and the GPU, if any."""
    return dict(platform=platform.platform(), processor=platform.processor() or None, cpu_count=os.cpu_count(),
                torch_threads=torch.get_num_threads(), torch=torch.__version__, python=platform.python_version(),
                sgdlab=sgdlab.__version__, **{peer: package_version(peer) for peer in peers},
                load_average=list(os.getloadavg()),
                cuda_device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))


def bench_arguments(doc: str, name: str, quick_help: str) -> argparse.ArgumentParser:
    """The options every benchmark takes: ``--quick`` (a smoke test) and ``--out`` (default
    bench/results/NAME.json). Returns the parser, so that a bench can add its own options."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / f"{name}.json")
    return parser


def write_result(path: Path, result: dict) -> None:
    """Write ``result`` as indented JSON to ``path`` (bench/results/NAME.json by default)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
