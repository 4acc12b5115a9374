"""Shared fixtures: every test runs on the CPU with the quick preset, whatever the environment says.

Unit tests draw off-screen (Agg). The notebooks' kernels must not inherit that: they draw
with the inline backend, which is what puts the figures on the book's pages.
"""

import matplotlib
import pytest
import torch

import sgdlab

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _cpu_quick(monkeypatch):
    monkeypatch.setenv("SGDLAB_DEVICE", "cpu")
    monkeypatch.setenv("SGDLAB_PRESET", "quick")
    torch.set_num_threads(1)  # pytest -n 2 runs two workers on two cores


@pytest.fixture(scope="session")
def digits():
    return sgdlab.load_dataset("digits", device="cpu")
