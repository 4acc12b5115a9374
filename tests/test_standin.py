"""Stand-in MNIST and CIFAR-10 files: read by sgdlab's real loaders, flagged, and never recorded."""

import pytest
import torch

import sgdlab
from sgdlab import scoreboard, standin


@pytest.fixture(autouse=True)
def _forget_standins():
    yield
    standin.loaded.clear()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    assert standin.write_standins(root, sizes={"mnist": (60, 20), "cifar10": (50, 20)}) == ["mnist", "cifar10"]
    return root


@pytest.mark.parametrize("name, shape", [("mnist", (1, 28, 28)), ("cifar10", (3, 32, 32))])
def test_standin_files_round_trip_through_the_real_loaders(root, name, shape, device):
    data = sgdlab.load_dataset(name, root=root, device=device)
    assert data.device.type == device.type
    assert data.standin and name in standin.loaded and "STAND-IN" in repr(data)
    assert data.input_shape == shape and data.n_train in (50, 60) and len(data.x_test) == 20
    assert sorted(data.y_train.tolist()) == sorted([i % 10 for i in range(data.n_train)])  # balanced classes
    assert (data.augmentation is not None) == (name == "cifar10")


def test_standin_classes_are_learnable_patterns():
    images, labels = standin.learnable_images(200, (1, 28, 28), seed=0)
    x = torch.as_tensor(images, dtype=torch.float32).flatten(1)
    means = torch.stack([x[torch.as_tensor(labels) == c].mean(0) for c in range(10)])
    nearest = torch.cdist(x, means).argmin(1)
    assert (nearest == torch.as_tensor(labels, dtype=torch.int64)).float().mean() > 0.9


def test_real_files_are_never_overwritten(tmp_path):
    (tmp_path / "MNIST").mkdir()
    (tmp_path / "MNIST" / "real.txt").write_text("the real data")
    assert standin.write_standins(tmp_path, ["mnist"], sizes={"mnist": (10, 10)}) == []
    assert not standin.is_standin("mnist", tmp_path)


def test_a_chapter_on_standins_says_so_first_and_records_nothing(root, monkeypatch, capsys, tmp_path, device):
    monkeypatch.setenv("SGDLAB_DATA", str(root))
    monkeypatch.setenv("SGDLAB_RESULTS_DIR", str(tmp_path))
    sgdlab.setup_chapter("gpu")
    assert "STAND-IN DATA for cifar10, mnist" in capsys.readouterr().out.splitlines()[0]
    sgdlab.load_dataset("mnist", device=device)
    scoreboard.record("walk-floor-moves", "gpu", rises=3, falls=4)
    assert "not recorded: this run used stand-in data (mnist)" in capsys.readouterr().out
    assert not (tmp_path / "gpu.json").exists()
    standin.loaded.clear()
    scoreboard.record("walk-floor-moves", "gpu", rises=3, falls=4)
    assert (tmp_path / "gpu.json").exists()  # the control: real data is recorded
