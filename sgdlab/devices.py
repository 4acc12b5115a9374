"""The device sgdlab computes on: CUDA when present, else the CPU; ``SGDLAB_DEVICE`` overrides."""

from __future__ import annotations

import os

import torch

DEVICE_VARIABLE = "SGDLAB_DEVICE"


def default_device() -> torch.device:
    """CUDA when present, else the CPU; ``SGDLAB_DEVICE`` (e.g. ``cpu``) overrides."""
    wanted = os.environ.get(DEVICE_VARIABLE)
    if wanted:
        return check_device(wanted, DEVICE_VARIABLE)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_device(wanted, name: str = "device") -> torch.device:
    """``wanted`` (a name such as ``"cpu"`` or ``"cuda:0"``, or a ``torch.device``) as a device present here."""
    try:
        device = torch.device(wanted)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"{name}={wanted!r} is not a device name ({error}); use e.g. 'cpu' or 'cuda'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name}={wanted!r} but CUDA is not available here; use 'cpu'")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"{name}={wanted!r} but this machine has {torch.cuda.device_count()} CUDA devices")
    return device
