"""What every chapter does first: pick the preset, draw in the book's style, and say so."""

from __future__ import annotations

from . import plots
from .data import data_root
from .presets import Preset, describe, get_preset
from .standin import is_standin, preset_datasets


def setup_chapter(name: str | None = None) -> Preset:
    """The preset ``name`` (default: the one ``SGDLAB_PRESET`` names, else ``quick``), ready to use.

    Sets the book's figure style (:func:`sgdlab.plots.use_book_style`) and prints the one
    line that says which preset, device and torch the chapter runs with, and whether the
    preset's downloadable data sets are stand-ins (:mod:`sgdlab.standin`).
    """
    preset = get_preset(name)
    plots.use_book_style()
    print(describe(preset) + _standin_note(preset))
    return preset


def _standin_note(preset: Preset) -> str:
    standins = sorted(n for n in preset_datasets(preset) if is_standin(n, data_root()))
    if not standins:
        return ""
    return (f"; STAND-IN DATA for {', '.join(standins)} (synthetic files, sgdlab.standin): "
            "its numbers are not results and are not recorded")
