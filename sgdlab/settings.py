"""An experiment's settings from the command line: ``--set key=value`` read by the type its
``Config`` declares, the result checked against the allowed choices, and listed for ``--list``.

An experiment's ``Config`` is a frozen dataclass (see :mod:`sgdlab.experiments`); a preset
holds one per experiment. Settings travel as plain JSON (``config.json`` of a run directory):
:func:`as_settings` writes them, :func:`config_from_settings` reads them back.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing

_EXPECTED = {int: "an integer, e.g. 3", float: "a finite number, e.g. 0.1", bool: "true or false", str: "text"}


class SettingError(ValueError):
    """A ``--set`` the experiment cannot take; the message names the setting, the value and what is allowed."""


def parse_setting(key: str, text: str, kind):
    """``--set key=text`` read as the setting's declared type ``kind``.

    ``kind`` is ``int``, ``float``, ``bool``, ``str``, ``list[int]`` or ``tuple[int, ...]``
    (``1,10,25`` or ``[1, 10, 25]``), or one of them ``| None`` (then ``none`` or ``null`` gives
    ``None``). Numbers must be finite; an integer setting takes no fraction and no ``true``.
    Ranges (positive, at most the data set's size) are the experiment's to check.
    """
    options = typing.get_args(kind) if typing.get_origin(kind) in (typing.Union, types.UnionType) else (kind,)
    base = next(option for option in options if option is not type(None))
    optional = type(None) in options
    word = text.strip()
    if optional and word.lower() in ("none", "null"):
        return None
    if typing.get_origin(base) in (list, tuple):
        items = [item.strip() for item in word.strip("[]()").split(",")]
        try:
            if items and all(items):
                values = [parse_setting(key, item, typing.get_args(base)[0]) for item in items]
                return tuple(values) if typing.get_origin(base) is tuple else values
        except SettingError:
            pass
        item = typing.get_args(base)[0]
        expected = f"a list of {'integers' if item is int else 'numbers'}, e.g. {key}=1,10,25"
    else:
        if base is bool and word.lower() in ("true", "false"):
            return word.lower() == "true"
        if base is int and re.fullmatch(r"[+-]?[0-9]+", word):
            return int(word)
        if base is float and re.fullmatch(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", word) \
                and math.isfinite(float(word)):
            return float(word)
        if base is str and word:
            return word
        expected = _EXPECTED[base]
    raise SettingError(f"--set {key}={text!r}: expected {expected}" + (" (or none)" if optional else ""))


def field_types(config_class) -> dict:
    """Each field of a ``Config`` dataclass and its declared type (annotations resolved)."""
    hints = typing.get_type_hints(config_class)
    return {field.name: hints[field.name] for field in dataclasses.fields(config_class)}


def apply_settings(config, assignments: list[str], choices: dict | None = None):
    """``config`` with ``key=value`` assignments applied (``dataclasses.replace``), each read as its
    field's declared type (:func:`parse_setting`); then every setting in ``choices`` is checked."""
    kinds = field_types(type(config))
    changes = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SettingError(f"--set {assignment!r}: expected key=value, e.g. --set lr=0.05")
        if key not in kinds:
            raise SettingError(f"--set {key}: not a setting of {type(config).__module__.rsplit('.', 1)[-1]}; "
                               f"allowed: {', '.join(sorted(kinds))}")
        changes[key] = parse_setting(key, text, kinds[key])
    config = dataclasses.replace(config, **changes)
    for key, allowed in (choices or {}).items():
        if getattr(config, key) not in allowed:
            raise SettingError(f"{key}={getattr(config, key)!r} is not allowed; "
                               f"choose one of: {', '.join(map(str, allowed))}")
    return config


def as_settings(config) -> dict:
    """The settings of ``config`` as plain JSON values (tuples become lists), as a run directory stores them."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_from_settings(config_class, settings: dict):
    """The ``Config`` that :func:`as_settings` wrote (lists back to the declared tuples)."""
    kinds = field_types(config_class)
    values = {}
    for key, value in settings.items():
        options = typing.get_args(kinds[key]) or (kinds[key],)
        wants_tuple = any(typing.get_origin(option) is tuple for option in options)
        values[key] = tuple(value) if wants_tuple and isinstance(value, list) else value
    return config_class(**values)


def type_name(kind) -> str:
    """A declared type as the ``--list`` table shows it (``int | None``, ``tuple[int, ...]``)."""
    return kind.__name__ if isinstance(kind, type) and not typing.get_args(kind) else str(kind).replace("typing.", "")


def settings_table(config, preset_config, defaults) -> str:
    """``--list``: each setting's name, type, default (the ``Config``'s), the preset's value and the value used."""
    rows = [("setting", "type", "default", "preset", "value")]
    for key, kind in field_types(type(config)).items():
        rows.append((key, type_name(kind), *(json.dumps(as_settings(c)[key]) for c in (defaults, preset_config, config))))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)
