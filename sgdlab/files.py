"""Files that are written whole or not at all, never through a link someone planted.

Everything sgdlab writes into a run directory goes through these functions:

* :func:`write_atomic` writes to a temporary file with a unique name in the same folder
  (created exclusively, so it can be neither another writer's file nor a planted link),
  flushes it to disk and renames it over the target. A rename replaces a link at the
  target, never the file the link points to. A write that fails (a full disk, a kill)
  leaves the previous file, and the temporary file is removed unless the process died.
* :func:`append_text` and :func:`open_existing` refuse a link in place of the file
  (``O_NOFOLLOW``).
* :func:`load_tensors` reads a ``torch.save`` file with ``weights_only=True`` and turns any
  failure into a ``ValueError`` that names the file; it never suggests loading the file's
  code.

``TEMPORARY_SUFFIX`` marks the temporary files, so that a resumed run can remove the ones a
killed writer left behind.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

import torch

TEMPORARY_SUFFIX = ".partial"


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(f)`` on a fresh temporary file next to ``path``, then rename it to ``path``."""
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
    try:
        with os.fdopen(descriptor, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """:func:`write_atomic` for text (UTF-8)."""
    write_atomic(path, lambda f: f.write(text.encode()))


def _open_no_follow(path: str | os.PathLike, flags: int, mode: str):
    try:
        descriptor = os.open(path, flags | os.O_NOFOLLOW, 0o644)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ValueError(f"{path} is a symbolic link; sgdlab neither reads nor writes through links there: "
                             "remove the link") from None
        raise
    return os.fdopen(descriptor, mode)


def append_text(path: str | os.PathLike, text: str) -> None:
    """Append ``text`` to ``path`` (created if missing), refusing a link in its place."""
    with _open_no_follow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, "a") as f:
        f.write(text)


def append_log(directory: str | os.PathLike, message: str) -> None:
    """One line ``<UTC time> message`` appended to ``directory/log.txt`` (a run directory's log)."""
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    append_text(os.path.join(directory, "log.txt"), f"{stamp} {message}\n")


def open_existing(path: str | os.PathLike, mode: str = "rb"):
    """Open an existing file to read (``"rb"``) or to change in place (``"r+b"``), refusing a link."""
    flags = {"rb": os.O_RDONLY, "r+b": os.O_RDWR}[mode]
    return _open_no_follow(path, flags, mode)


def load_tensors(path: str | os.PathLike, what: str):
    """``torch.load(path, weights_only=True)`` on the CPU; ``ValueError`` naming ``what`` and the file otherwise.

    ``what`` says what the file should be (``"checkpoint"``, ``"final parameters"``).
    """
    try:
        with open_existing(path) as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except ValueError as error:
        raise ValueError(f"{what} {str(path)!r} cannot be read: {error}") from None
    except Exception as error:  # truncated, not a torch file, or Python objects that weights_only refuses
        kind = "it holds Python objects other than tensors" if "Weights only load failed" in str(error) else \
            f"it is truncated or not a tensor file ({type(error).__name__})"
        raise ValueError(f"{what} {str(path)!r} cannot be read: {kind}; sgdlab loads tensors only. "
                         "Delete it (sgdlab writes it again where it can) or choose another path") from None
