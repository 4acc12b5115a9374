import pytest
import torch

import sgdlab


def test_environment_variable_picks_the_preset(monkeypatch):
    monkeypatch.setenv("SGDLAB_PRESET", "gpu")
    assert sgdlab.get_preset().name == "gpu"
    assert sgdlab.get_preset("paper").epochs == 200


def test_quick_preset_uses_only_bundled_data():
    quick = sgdlab.get_preset("quick")
    assert not quick.download
    assert {quick.mlp_dataset, quick.cnn_dataset} <= {"digits", "mnist1d", "moons", "spirals"}


def test_every_preset_names_real_datasets_and_architectures():
    for preset in sgdlab.PRESETS.values():
        assert preset.mlp_dataset in sgdlab.DATASETS and preset.cnn_dataset in sgdlab.DATASETS
        assert preset.mlp_arch in sgdlab.ARCHITECTURES and preset.cnn_arch in sgdlab.ARCHITECTURES


def test_unknown_preset_lists_the_allowed_names(monkeypatch):
    monkeypatch.setenv("SGDLAB_PRESET", "huge")
    with pytest.raises(ValueError, match="preset 'huge' is not known; choose one of: quick, gpu, paper"):
        sgdlab.get_preset()


def test_device_follows_the_override_and_refuses_nonsense(monkeypatch):
    monkeypatch.setenv("SGDLAB_DEVICE", "cpu")
    assert sgdlab.default_device() == torch.device("cpu")
    monkeypatch.setenv("SGDLAB_DEVICE", "toaster")
    with pytest.raises(ValueError, match="SGDLAB_DEVICE='toaster'"):
        sgdlab.default_device()


def test_describe_names_preset_and_device():
    line = sgdlab.describe()
    assert "preset 'quick'" in line and "device cpu" in line
