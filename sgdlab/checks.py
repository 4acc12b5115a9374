"""Argument checks shared by modules that do not import each other: a ``ValueError`` names the
parameter, the value and what is allowed."""

from __future__ import annotations

import numpy as np

SEED_LIMIT = 2 ** 63  # torch.Generator.manual_seed takes 0 <= seed < 2**63 without wrapping or overflowing


def check_seed(seed, name: str = "seed") -> None:
    """A seed must be an int in ``0..2**63-1``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"{name} must be an int in 0..2**63-1, got {name}={seed!r}")


def check_int(name: str, value, low: int, high: int | None = None) -> int:
    """``value`` must be an int (not a bool) in ``low..high`` (``high=None``: no upper bound); returns it as an int."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or (high is not None and value > high):
        allowed = f"an int in {low}..{high}" if high is not None else f"an int >= {low}"
        raise ValueError(f"{name} must be {allowed}, got {name}={value!r}")
    return int(value)


def check_counts(name: str, value) -> None:
    """A count, or a list of counts, that must be positive integers (``None`` passes where it means "all")."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values or any(v is not None and v < 1 for v in values):
        shown = list(value) if isinstance(value, tuple) else value
        raise ValueError(f"{name}={shown!r}: expected positive integers")


def check_choice(name: str, value, allowed) -> None:
    """``value`` must be one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed; choose one of: {', '.join(map(str, allowed))}")
