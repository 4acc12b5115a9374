"""Shared fixtures: every test runs with the quick preset on one device, whatever the environment says.

The device is the CPU unless ``SGDLAB_TEST_DEVICE`` names another (``SGDLAB_TEST_DEVICE=cuda``:
every unit test on CUDA, as ``make test-gpu`` runs them). Tests read it from the ``device``
fixture; ``SGDLAB_DEVICE`` is set to it, so sgdlab's default device is the same. A test that
cannot run on CUDA is marked ``@pytest.mark.cpu_only("reason")`` and skips there, naming why.

Unit tests draw off-screen (Agg). The notebooks' kernels must not inherit that: they draw
with the inline backend, which is what puts the figures on the book's pages.
"""

import os

import matplotlib
import pytest
import torch

import sgdlab

matplotlib.use("Agg")


TEST_DEVICE = os.environ.get("SGDLAB_TEST_DEVICE", "cpu")


def pytest_configure(config):
    config.addinivalue_line("markers", "cpu_only(reason): the test cannot run on CUDA, for the reason given")
    if TEST_DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise pytest.UsageError(f"SGDLAB_TEST_DEVICE={TEST_DEVICE!r} but CUDA is not available here")


def pytest_collection_modifyitems(config, items):
    if TEST_DEVICE == "cpu":
        return
    for item in items:
        marker = item.get_closest_marker("cpu_only")
        if marker is not None:
            item.add_marker(pytest.mark.skip(reason=f"CPU only: {marker.args[0] if marker.args else 'no reason given'}"))


@pytest.fixture(autouse=True)
def _quick_on_the_test_device(monkeypatch):
    monkeypatch.setenv("SGDLAB_DEVICE", TEST_DEVICE)
    monkeypatch.setenv("SGDLAB_PRESET", "quick")
    torch.set_num_threads(1)  # pytest -n 2 runs two workers on two cores


@pytest.fixture(scope="session")
def device():
    """The device every test's tensors live on (``SGDLAB_TEST_DEVICE``, default the CPU)."""
    return torch.device(TEST_DEVICE)


@pytest.fixture(scope="session")
def digits(device):
    return sgdlab.load_dataset("digits", device=device)
