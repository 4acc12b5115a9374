"""Where a run goes: snapshots of its weights on disk, distances between them, and the
distance from initialisation with the laws fitted to it.

:class:`SnapshotRecorder` writes the weights every k updates to a folder while training runs
(float32, appended, flushed, resumable); :class:`Trajectory` reads them back lazily and
computes d(w_N, w_M) for every M, per layer and in total, a block at a time.

Hoffer, Hubara and Soudry (2017) observed that the distance of the weights from their
initial values grows roughly like the logarithm of the number of iterations ("random walk on
a random potential"); :class:`sgdlab.recorders.DistanceFromInitRecorder` measures it at
every step and :func:`fit_log_law` / :func:`fit_power_law` fit the two candidate laws.

Conventions
-----------
* Distance: Euclidean norm ``||w_t - w_0||`` over the trainable parameters
  (``model.named_parameters()``), never the BatchNorm buffers; the same as
  ``sgdlab.distance(model_params(model, buffers=False) at 0, ... at t)``.
* Iterations count updates: after the step with ``Step.index`` t, ``t + 1`` iterations are done.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch

from .files import open_existing, write_text_atomic
from .callbacks import Callback


@dataclasses.dataclass
class LawFit:
    """A law ``d(t)`` fitted to distances: ``log``: d = a + b log t; ``power``: d = c t^p.

    ``coefficients`` is ``(a, b)`` or ``(c, p)``. ``space`` is where the law was fitted by
    least squares *and* where ``r2`` (the coefficient of determination) is scored:
    ``"linear"`` on the distances d themselves, ``"log"`` on log d. Two laws' R² compare
    fairly only when both share a space; a law fitted in one space and scored in the other
    is handicapped by its own fit.
    """

    law: str
    coefficients: tuple
    r2: float
    space: str = "linear"

    def __call__(self, t) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        first, second = self.coefficients
        return first + second * np.log(t) if self.law == "log" else first * t ** second

    def __str__(self) -> str:
        first, second = self.coefficients
        curve = f"{first:.3g} + {second:.3g} ln t" if self.law == "log" else f"{first:.3g} t^{second:.3g}"
        return f"{curve} (R² = {self.r2:.3f}, {self.space} d)"


FIT_SPACES = ("linear", "log")


def _check_series(t, d, space: str = "linear") -> tuple[np.ndarray, np.ndarray]:
    if space not in FIT_SPACES:
        raise ValueError(f"space={space!r} is not known; choose one of: {', '.join(FIT_SPACES)}")
    t, d = np.asarray(t, dtype=np.float64).reshape(-1), np.asarray(d, dtype=np.float64).reshape(-1)
    if len(t) != len(d) or len(t) < 3:
        raise ValueError(f"t and d must have the same length, at least 3; got {len(t)} and {len(d)}")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(d)) and np.all(t > 0)):
        raise ValueError("t must be positive (iterations from 1) and t, d finite")
    if space == "log" and np.any(d <= 0):
        raise ValueError("a fit in log space needs positive distances d")
    return t, d


def _r2(d: np.ndarray, fitted: np.ndarray) -> float:
    """Coefficient of determination of ``fitted`` against ``d`` (NaN when d is constant)."""
    total = float(((d - d.mean()) ** 2).sum())
    return 1.0 - float(((d - fitted) ** 2).sum()) / total if total > 0 else float("nan")


def _scored(fit: LawFit, t: np.ndarray, d: np.ndarray) -> LawFit:
    """``fit`` with its R² in its own space (a law that is not positive everywhere scores -inf in log space)."""
    fitted = fit(t)
    if fit.space == "linear":
        fit.r2 = _r2(d, fitted)
    else:
        fit.r2 = _r2(np.log(d), np.log(fitted)) if np.all(fitted > 0) else -math.inf
    return fit


def _least_squares(residuals, start) -> np.ndarray:
    """Nonlinear least squares (scipy's trust-region solver) from ``start``; tight tolerances."""
    from scipy.optimize import least_squares

    return least_squares(residuals, np.asarray(start, dtype=np.float64), method="lm", xtol=1e-12, ftol=1e-12,
                         gtol=1e-12, max_nfev=10_000).x


def fit_log_law(t, d, *, space: str = "linear") -> LawFit:
    """Least-squares fit of d = a + b log t (natural log; t > 0), in ``space``.

    ``"linear"``: minimises sum (d - a - b log t)^2 (linear regression on log t);
    ``"log"``: minimises sum (log d - log(a + b log t))^2 (nonlinear, from the linear fit;
    needs d > 0). R² is scored in the same space (:class:`LawFit`).

    >>> t = np.arange(1.0, 100.0)
    >>> fit = fit_log_law(t, 2 + 3 * np.log(t), space="log")
    >>> [round(c, 6) for c in fit.coefficients], round(fit.r2, 6)
    ([2.0, 3.0], 1.0)
    """
    t, d = _check_series(t, d, space)
    b, a = np.polyfit(np.log(t), d, 1)
    if space == "log":
        log_t, log_d = np.log(t), np.log(d)
        if not np.all(a + b * log_t > 0):  # start from a law that is positive on the data
            a, b = float(d.min()), 0.0

        def residuals(ab):
            return np.log(np.maximum(ab[0] + ab[1] * log_t, 1e-300)) - log_d

        a, b = _least_squares(residuals, (a, b))
    return _scored(LawFit("log", (float(a), float(b)), 0.0, space), t, d)


def fit_power_law(t, d, *, space: str = "log") -> LawFit:
    """Least-squares fit of the power law d = c t^p (d > 0), in ``space``.

    ``"log"`` (default): minimises sum (log d - log c - p log t)^2 (linear regression in
    log-log); ``"linear"``: minimises sum (d - c t^p)^2 (nonlinear, from the log-log fit).
    R² is scored in the same space (:class:`LawFit`).

    >>> t = np.arange(1.0, 100.0)
    >>> fit = fit_power_law(t, 0.5 * t ** 0.7, space="linear")
    >>> [round(c, 6) for c in fit.coefficients], round(fit.r2, 6)
    ([0.5, 0.7], 1.0)
    """
    t, d = _check_series(t, d, space)
    if np.any(d <= 0):
        raise ValueError("a power law needs positive distances d")
    p, log_c = np.polyfit(np.log(t), np.log(d), 1)
    c = math.exp(log_c)
    if space == "linear":
        c, p = _least_squares(lambda cp: cp[0] * t ** cp[1] - d, (c, p))
    return _scored(LawFit("power", (float(c), float(p)), 0.0, space), t, d)


# ---------------------------------------------------------------------------------------
# Snapshots of a run on disk
# ---------------------------------------------------------------------------------------

SNAPSHOT_FILE, META_FILE = "snapshots.bin", "meta.json"
FORMAT_VERSION = 1


def _record_dtype(size: int) -> np.dtype:
    """One snapshot on disk: updates done (int64), the weights (float32), a CRC-32 of the weights."""
    return np.dtype([("step", "<i8"), ("weights", "<f4", (size,)), ("crc", "<u4")])


class DamagedSnapshots(ValueError):
    """A snapshot folder whose records are missing or fail their checksum; the message names the file and record."""


def _read_meta(path: Path) -> dict:
    """``meta.json`` of a snapshot folder, checked: this format, names and shapes that agree."""
    try:
        meta = json.loads(open_existing(path).read().decode())
        ok = (isinstance(meta, dict) and meta.get("format") == FORMAT_VERSION
              and isinstance(meta.get("every"), int) and not isinstance(meta["every"], bool) and meta["every"] >= 1
              and isinstance(meta.get("names"), list) and all(isinstance(n, str) for n in meta["names"])
              and isinstance(meta.get("shapes"), list) and len(meta["shapes"]) == len(meta["names"])
              and all(isinstance(s, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in s)
                      for s in meta["shapes"]))
    except (UnicodeDecodeError, json.JSONDecodeError):
        ok = False
    if not ok:
        raise ValueError(f"{path} is not a snapshot description of format {FORMAT_VERSION} (expected format, every, "
                         "and names with one shape each); the snapshots were written by something else or are damaged")
    return meta


def _layer_of(name: str) -> str:
    """``fc1.weight`` -> ``fc1``; ``stage1.0.conv1.weight`` -> ``stage1.0.conv1``."""
    return name.rsplit(".", 1)[0] if "." in name else name


class SnapshotRecorder(Callback):
    """Writes the weights every ``every`` updates to the folder ``path``, as training runs.

    The first snapshot is the weights before training (0 updates done), then one after each
    ``every`` updates. Snapshots hold the trainable parameters only (``model.named_parameters()``),
    in float32, appended to ``snapshots.bin`` as fixed-size records, each with its step and a
    CRC-32; ``meta.json`` holds the names and shapes. The process holds one snapshot at a
    time, and each is flushed to the operating system as soon as it is written, so a killed
    run leaves every earlier snapshot readable; :class:`Trajectory` drops a torn last record.

    A folder that already holds snapshots is refused unless ``overwrite=True``, except when
    the run resumes from a checkpoint (``sgdlab.train(..., checkpoint=...)``): then the
    snapshots after the checkpoint are cut and recorded again.
    """

    def __init__(self, path: str | os.PathLike, every: int = 1, *, overwrite: bool = False):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int (updates between snapshots), got every={every!r}")
        self.path, self.every, self.overwrite = Path(path), every, overwrite
        self._file = None
        self._count = 0
        self._found = 0  # records already in the folder when training began

    def on_train_begin(self, model, dataset):
        self._names = [name for name, _ in model.named_parameters()]
        meta = dict(format=FORMAT_VERSION, every=self.every,
                    names=self._names, shapes=[list(p.shape) for _, p in model.named_parameters()])
        self._dtype = _record_dtype(sum(p.numel() for p in model.parameters()))
        self.path.mkdir(parents=True, exist_ok=True)
        meta_path, data_path = self.path / META_FILE, self.path / SNAPSHOT_FILE
        if meta_path.exists() and data_path.exists() and not self.overwrite:
            if _read_meta(meta_path) != meta:
                raise ValueError(f"{self.path} holds snapshots of another model or spacing; "
                                 "choose another path or pass overwrite=True")
            self._found = Trajectory(self.path).count
        else:
            write_text_atomic(meta_path, json.dumps(meta))
            write_text_atomic(data_path, "")
        self._on_disk = self._found
        self._file = open_existing(data_path, "r+b")
        self._model = model
        self._count = self._found
        if not self._found:
            self._write(0)

    def _write(self, step: int) -> None:
        if self._found:  # the folder held snapshots and no checkpoint said they are this run's
            raise ValueError(f"{self.path} already holds {self._found} snapshots of a run; delete them, "
                             "pass overwrite=True, or resume that run with train(..., checkpoint=...)")
        record = np.zeros(1, dtype=self._dtype)
        with torch.no_grad():
            weights = torch.cat([p.detach().reshape(-1) for p in self._model.parameters()]).float().cpu().numpy()
        record["step"], record["weights"] = step, weights
        record["crc"] = zlib.crc32(record["weights"].tobytes())
        self._file.seek(self._count * self._dtype.itemsize)
        self._file.write(record.tobytes())
        self._file.flush()
        self._count += 1

    def on_step(self, step):
        if (step.index + 1) % self.every == 0:
            self._write(step.index + 1)

    def state_dict(self) -> dict:
        return {"count": self._count}

    def load_state_dict(self, state: dict) -> None:
        """Resume from a checkpoint: the folder is this run's, and must hold the checkpoint's snapshots intact.

        Raises :class:`DamagedSnapshots` when some are missing (deleted, truncated) or fail their checksum:
        they cannot be recorded again from this checkpoint."""
        self._found = 0
        count = int(state["count"])
        if count > self._on_disk:
            raise DamagedSnapshots(f"{self.path / SNAPSHOT_FILE} holds {self._on_disk} intact snapshots but the "
                                   f"checkpoint "
                                   f"was written after {count}: snapshots were lost; record them again from the start "
                                   "of training (delete the checkpoint)")
        Trajectory(self.path).check(count)
        self._count = count
        self._file.truncate(self._count * self._dtype.itemsize)

    def on_train_end(self, history):
        if self._file is not None:
            self._file.truncate(self._count * self._dtype.itemsize)
            self._file.close()
            self._file = None


class Trajectory:
    """The snapshots in a folder written by :class:`SnapshotRecorder`, read lazily from disk.

    ``steps`` holds the updates done at each snapshot; ``trajectory[i]`` is snapshot ``i``
    as a dict name -> tensor (trainable parameters, float32). Opening checks ``meta.json``,
    the steps and the last record: a torn or corrupt last record (a writer killed mid-record)
    is dropped with a warning. Every record read afterwards is checked against its CRC-32;
    one that fails raises :class:`DamagedSnapshots` naming the file, the record and its step.
    """

    def __init__(self, path: str | os.PathLike, *, block_bytes: int = 2 ** 24):
        self.path = Path(path)
        meta_path, data_path = self.path / META_FILE, self.path / SNAPSHOT_FILE
        if not meta_path.exists() or not data_path.exists():
            raise FileNotFoundError(f"{self.path} holds no snapshots ({META_FILE} and {SNAPSHOT_FILE} expected)")
        meta = _read_meta(meta_path)
        self.names, self.shapes, self.every = meta["names"], [tuple(s) for s in meta["shapes"]], meta["every"]
        sizes = [math.prod(s) for s in self.shapes]
        self.size = sum(sizes)
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._dtype = _record_dtype(self.size)
        self.block_bytes = block_bytes
        n_bytes = data_path.stat().st_size
        count = n_bytes // self._dtype.itemsize
        if n_bytes % self._dtype.itemsize:
            warnings.warn(f"{data_path}: the last snapshot is torn ({n_bytes % self._dtype.itemsize} stray bytes); "
                          f"dropped, {count} snapshots kept", RuntimeWarning, stacklevel=2)
        if count and not self._intact(count - 1):
            warnings.warn(f"{data_path}: the last snapshot fails its checksum; dropped, {count - 1} snapshots kept",
                          RuntimeWarning, stacklevel=2)
            count -= 1
        self.count = count
        self.steps = self._steps(count)

    def _read(self, start: int, n: int, *, checked: bool = True) -> np.ndarray:
        """Records ``start .. start + n - 1``; with ``checked``, each must pass its checksum."""
        with open_existing(self.path / SNAPSHOT_FILE) as f:
            f.seek(start * self._dtype.itemsize)
            records = np.frombuffer(f.read(n * self._dtype.itemsize), dtype=self._dtype)
        for i in range(len(records) if checked else 0):
            if zlib.crc32(records["weights"][i].tobytes()) != int(records["crc"][i]):
                raise DamagedSnapshots(f"{self.path / SNAPSHOT_FILE}: snapshot {start + i} (step "
                                       f"{int(records['step'][i])}) "
                                       "fails its checksum: the file is damaged; record the trajectory again")
        return records

    def _intact(self, i: int) -> bool:
        record = self._read(i, 1, checked=False)
        return len(record) == 1 and zlib.crc32(record["weights"].tobytes()) == int(record["crc"][0])

    def _steps(self, count: int) -> np.ndarray:
        """The step of each record, which must be ``i * every`` (the step is outside the checksum)."""
        steps = np.empty(count, dtype=np.int64)
        with open_existing(self.path / SNAPSHOT_FILE) as f:
            for i in range(count):
                f.seek(i * self._dtype.itemsize)
                steps[i] = np.frombuffer(f.read(8), dtype="<i8")[0]
                if steps[i] != i * self.every:
                    raise DamagedSnapshots(f"{self.path / SNAPSHOT_FILE}: snapshot {i} says step {int(steps[i])}, "
                                           f"expected {i * self.every} (every {self.every}): the file is damaged")
        return steps

    def check(self, count: int | None = None) -> None:
        """Verify the checksum of the first ``count`` records (default all), a block at a time."""
        count = self.count if count is None else count
        per_block = max(1, self.block_bytes // self._dtype.itemsize)
        for start in range(0, count, per_block):
            self._read(start, min(per_block, count - start))

    def __len__(self) -> int:
        return self.count

    def _check_index(self, i: int) -> int:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not -self.count <= i < self.count:
            raise IndexError(f"snapshot index {i!r} is out of range: the trajectory holds {self.count} snapshots")
        return int(i) % self.count

    def flat(self, i: int) -> np.ndarray:
        """Snapshot ``i`` as one float32 vector, in the order of ``names``."""
        return self._read(self._check_index(i), 1)["weights"][0].copy()

    def __getitem__(self, i: int) -> dict:
        w = torch.from_numpy(self.flat(i))
        return {name: w[a:b].reshape(shape) for name, shape, a, b in
                zip(self.names, self.shapes, self._offsets[:-1], self._offsets[1:])}

    @property
    def layers(self) -> list[str]:
        """Layer names (module paths, e.g. ``fc1``), in order."""
        return list(dict.fromkeys(_layer_of(n) for n in self.names))

    def distances(self, i: int, *, per_layer: bool = False):
        """Euclidean distance from snapshot ``i`` to every snapshot, in parameter units.

        Reads the file in blocks of at most ``block_bytes``, so memory stays bounded however
        long the trajectory is. Returns an array of length ``len(self)``; with
        ``per_layer=True``, also a dict layer -> array (the total is the root of the sum of
        the layers' squares).
        """
        reference = self.flat(i).astype(np.float64)
        layers = self.layers
        layer_index = np.array([layers.index(_layer_of(n)) for n in self.names])
        squares = np.zeros((self.count, len(layers)))
        per_block = max(1, self.block_bytes // self._dtype.itemsize)
        for start in range(0, self.count, per_block):
            block = self._read(start, min(per_block, self.count - start))["weights"]
            # float64 differences, a slice of columns at a time: temporaries stay within ~2 blocks
            width = max(1, self.block_bytes // (8 * len(block)))
            for j, (a, b) in enumerate(zip(self._offsets[:-1], self._offsets[1:])):
                for s in range(a, b, width):
                    e = min(s + width, b)
                    diff = block[:, s:e].astype(np.float64) - reference[s:e]
                    squares[start:start + len(block), layer_index[j]] += np.einsum("ij,ij->i", diff, diff)
        total = np.sqrt(squares.sum(axis=1))
        if not per_layer:
            return total
        return total, {layer: np.sqrt(squares[:, k]) for k, layer in enumerate(layers)}
