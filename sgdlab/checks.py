"""Argument checks shared by modules that do not import each other: a ``ValueError`` names the
parameter, the value and what is allowed."""

from __future__ import annotations

SEED_LIMIT = 2 ** 63  # torch.Generator.manual_seed takes 0 <= seed < 2**63 without wrapping or overflowing


def check_seed(seed, name: str = "seed") -> None:
    """A seed must be an int in ``0..2**63-1``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"{name} must be an int in 0..2**63-1, got {name}={seed!r}")
