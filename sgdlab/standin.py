"""Stand-in MNIST and CIFAR-10: learnable synthetic images in the real on-disk formats.

A GPU machine without network cannot download the papers' data sets. :func:`write_standins`
writes, where the real files are absent, files that torchvision (and so
:func:`sgdlab.data.load_dataset`) reads exactly as it reads the real ones, at full size by
default:

* MNIST: ``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (and their ``.gz``, as a
  download leaves them), big-endian idx headers, 28 x 28 uint8 images;
* CIFAR-10: ``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``, pickled dicts
  with ``data`` (N, 3072) uint8 channel-first rows and ``labels``.

Each class has its own fixed pattern (a few smooth bumps); an image is its class's pattern,
randomly shifted, plus noise, so that the papers' networks learn it, but the numbers
measured on it are not the papers' data. A marker file ``SGDLAB_STANDIN`` beside the files
says so: a loaded stand-in is flagged (``Dataset.standin``), a chapter's first line says it
(:func:`sgdlab.chapter.setup_chapter`), and :func:`sgdlab.scoreboard.record` records nothing while
one is loaded. CIFAR-10's real files are checked against MD5 sums by torchvision; a
stand-in folder, marked, is read without that check.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import pickle
from pathlib import Path

import numpy as np

MARKER = "SGDLAB_STANDIN"
FOLDERS = {"mnist": Path("MNIST"), "cifar10": Path("cifar-10-batches-py")}
SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
FULL_SIZE = {"mnist": (60_000, 10_000), "cifar10": (50_000, 10_000)}
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

loaded: set[str] = set()   # names of the stand-ins loaded in this process


def marker(name: str, root) -> Path:
    """Where the marker of data set ``name``'s stand-in lies under ``root``."""
    return Path(root) / FOLDERS[name] / MARKER


def is_standin(name: str, root) -> bool:
    """Whether ``root`` holds a stand-in for ``name`` (never true for other data sets)."""
    return name in FOLDERS and marker(name, root).exists()


def learnable_images(n: int, shape: tuple[int, int, int], *, seed: int = 0, classes: int = 10):
    """``n`` uint8 images of ``shape`` (C, H, W) and their labels (0..classes-1, balanced, shuffled).

    Class ``c``'s pattern is a sum of three Gaussian bumps at places drawn once (seed 0,
    the same in every split); each image shifts it by up to 3 pixels and adds noise.
    """
    channels, height, width = shape
    patterns_rng = np.random.default_rng(12345)
    rows, cols = np.mgrid[0:height, 0:width]
    patterns = np.zeros((classes, channels, height, width), dtype=np.float32)
    for c in range(classes):
        for _ in range(3):
            cy, cx = patterns_rng.uniform(4, height - 4), patterns_rng.uniform(4, width - 4)
            bump = np.exp(-((rows - cy) ** 2 + (cols - cx) ** 2) / (2 * 3.0 ** 2))
            patterns[c] += bump * patterns_rng.uniform(0.3, 1.0, size=(channels, 1, 1))
    patterns /= patterns.max(axis=(1, 2, 3), keepdims=True)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % classes)
    images = np.empty((n, channels, height, width), dtype=np.uint8)
    for start in range(0, n, 5000):  # bounded memory at full size
        y = labels[start:start + 5000]
        x = patterns[y]
        shift = rng.integers(-3, 4, size=(len(y), 2))
        for i, (dy, dx) in enumerate(shift):
            x[i] = np.roll(x[i], (dy, dx), axis=(1, 2))
        x = 0.7 * x + 0.3 * rng.random(x.shape, dtype=np.float32)
        images[start:start + 5000] = np.clip(x * 255, 0, 255).astype(np.uint8)
    return images, labels.astype(np.uint8)


def _idx(array: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def _write_mnist(folder: Path, n_train: int, n_test: int) -> None:
    raw = folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        images, labels = learnable_images(n, SHAPES["mnist"], seed=seed)
        for kind, data in (("images-idx3", _idx(images[:, 0], 0x08)), ("labels-idx1", _idx(labels, 0x08))):
            path = raw / f"{prefix}-{kind}-ubyte"
            path.write_bytes(data)
            with gzip.open(f"{path}.gz", "wb", compresslevel=1) as f:
                f.write(data)


def _write_cifar10(folder: Path, n_train: int, n_test: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    per_batch = -(-n_train // 5)
    images, labels = learnable_images(n_train, SHAPES["cifar10"], seed=1)
    for b in range(5):
        part = slice(b * per_batch, (b + 1) * per_batch)
        _pickle(folder / f"data_batch_{b + 1}", images[part], labels[part], f"training batch {b + 1} of 5")
    images, labels = learnable_images(n_test, SHAPES["cifar10"], seed=2)
    _pickle(folder / "test_batch", images, labels, "testing batch 1 of 1")
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR_CLASSES, "num_cases_per_batch": per_batch, "num_vis": 3072}, f)


def _pickle(path: Path, images: np.ndarray, labels: np.ndarray, label: str) -> None:
    entry = {"batch_label": label, "labels": [int(v) for v in labels], "data": images.reshape(len(images), -1),
             "filenames": [f"standin_{i}.png" for i in range(len(images))]}
    with open(path, "wb") as f:
        pickle.dump(entry, f)


def write_standins(root, names=("mnist", "cifar10"), *, sizes: dict | None = None) -> list[str]:
    """Write a stand-in under ``root`` for each of ``names`` whose real files are absent.

    ``sizes`` maps a name to (train, test) examples (default: the real sets' sizes). A folder
    that already holds a data set, real or stand-in, is left alone. Returns the names written.
    """
    written = []
    for name in names:
        if name not in FOLDERS:
            raise ValueError(f"name={name!r} has no stand-in; choose among: {', '.join(FOLDERS)}")
        folder = Path(root) / FOLDERS[name]
        if folder.exists() and any(folder.iterdir()):
            continue
        n_train, n_test = (sizes or {}).get(name, FULL_SIZE[name])
        (_write_mnist if name == "mnist" else _write_cifar10)(folder, n_train, n_test)
        marker(name, root).write_text(json.dumps({"standin": name, "train": n_train, "test": n_test,
                                                  "writer": "sgdlab.standin.write_standins"}) + "\n")
        written.append(name)
    return written


def unchecked(cls):
    """A torchvision CIFAR class that reads a marked stand-in folder without the MD5 checks."""

    class Unchecked(cls):
        def _check_integrity(self) -> bool:
            return True

        def _load_meta(self) -> None:
            with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    return Unchecked


def preset_datasets(preset) -> set[str]:
    """Every data-set name a preset (or any dataclass of its fields) mentions that has a stand-in."""
    found = set()
    for field in dataclasses.fields(preset):
        value = getattr(preset, field.name)
        if dataclasses.is_dataclass(value):
            found |= preset_datasets(value)
        elif isinstance(value, str) and value in FOLDERS:
            found.add(value)
    return found
