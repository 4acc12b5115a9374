"""Snapshots on disk: what is written is what training produced, survives a killed writer,
resumes with the run, and gives distances equal to the ones computed in memory."""

import numpy as np
import pytest
import torch

import sgdlab
from crash import CrashAt
from sgdlab.recorders import IterateRecorder
from sgdlab.trajectory import SNAPSHOT_FILE, SnapshotRecorder, Trajectory


def record(digits, path, every=3, steps=20, **options):
    keep = IterateRecorder(every=1)
    model = sgdlab.make_model("mlp", digits, seed=0, hidden=(16, 8))
    sgdlab.train(model, digits, lr=0.1, batch_size=50, steps=steps, progress=False,
                 callbacks=[SnapshotRecorder(path, every=every, **options), keep])
    return keep.flat()  # row t: the weights after t updates


def test_snapshots_hold_the_weights_every_k_updates(digits, tmp_path):
    weights = record(digits, tmp_path / "run", every=3, steps=20)
    trajectory = Trajectory(tmp_path / "run")
    assert trajectory.steps.tolist() == [0, 3, 6, 9, 12, 15, 18]
    for i, step in enumerate(trajectory.steps):
        np.testing.assert_array_equal(trajectory.flat(i), weights[step].float().numpy())
    assert trajectory[2]["fc1.weight"].shape == (16, 64) and trajectory.layers == ["fc1", "fc2", "out"]


def test_distances_per_layer_and_in_total_match_memory(digits, tmp_path):
    weights = record(digits, tmp_path / "run", every=2, steps=30)
    trajectory = Trajectory(tmp_path / "run", block_bytes=1)  # one snapshot per read: the blocked path
    total, layers = trajectory.distances(4, per_layer=True)
    expected = [float((weights[s].float() - weights[8].float()).double().norm()) for s in trajectory.steps]
    np.testing.assert_allclose(total, expected, rtol=1e-6)
    assert total[4] == 0
    fc1 = [float((weights[s] - weights[8]).float()[:16 * 64 + 16].double().norm()) for s in trajectory.steps]
    np.testing.assert_allclose(layers["fc1"], fc1, rtol=1e-5)
    np.testing.assert_allclose(np.sqrt(sum(d ** 2 for d in layers.values())), total, rtol=1e-12)


def test_a_torn_last_record_is_dropped_with_a_warning(digits, tmp_path):
    record(digits, tmp_path / "run", every=5, steps=20)
    data = tmp_path / "run" / SNAPSHOT_FILE
    whole = Trajectory(tmp_path / "run")
    first = whole.flat(3)
    size = data.stat().st_size
    with open(data, "r+b") as f:  # a writer killed in the middle of its last record
        f.truncate(size - 100)
    with pytest.warns(RuntimeWarning, match="torn"):
        torn = Trajectory(tmp_path / "run")
    assert len(torn) == len(whole) - 1
    np.testing.assert_array_equal(torn.flat(3), first)


def test_a_corrupt_last_record_fails_its_checksum(digits, tmp_path):
    record(digits, tmp_path / "run", every=5, steps=20)
    data = tmp_path / "run" / SNAPSHOT_FILE
    with open(data, "r+b") as f:  # the last record's size is right but its weights are garbage
        f.seek(data.stat().st_size - 40)
        f.write(b"\xff" * 16)
    with pytest.warns(RuntimeWarning, match="checksum"):
        assert len(Trajectory(tmp_path / "run")) == 4


def test_snapshots_resume_with_the_run(digits, tmp_path):
    options = dict(lr=0.1, batch_size=100, epochs=4, progress=False, seed=1)
    whole = tmp_path / "whole"
    sgdlab.train(sgdlab.make_model("mlp", digits, seed=0), digits, callbacks=[SnapshotRecorder(whole, every=5)], **options)

    run, checkpoint = tmp_path / "run", tmp_path / "checkpoint.pt"
    with pytest.raises(KeyboardInterrupt):
        sgdlab.train(sgdlab.make_model("mlp", digits, seed=0), digits, checkpoint=checkpoint,
                     callbacks=[SnapshotRecorder(run, every=5), CrashAt(14 * 2 + 7)], **options)
    assert Trajectory(run).steps[-1] == 35  # written before the crash, readable
    sgdlab.train(sgdlab.make_model("mlp", digits, seed=0), digits, checkpoint=checkpoint,
                 callbacks=[SnapshotRecorder(run, every=5), CrashAt()], **options)
    a, b = Trajectory(whole), Trajectory(run)
    assert a.steps.tolist() == b.steps.tolist() == list(range(0, 56, 5))
    for i in range(len(a)):
        np.testing.assert_array_equal(a.flat(i), b.flat(i))


def test_a_folder_with_snapshots_is_not_overwritten_by_accident(digits, tmp_path):
    record(digits, tmp_path / "run")
    with pytest.raises(ValueError, match="already holds 7 snapshots"):
        record(digits, tmp_path / "run")
    record(digits, tmp_path / "run", overwrite=True)
    assert len(Trajectory(tmp_path / "run")) == 7


def test_bad_arguments_are_named(digits, tmp_path):
    with pytest.raises(ValueError, match="every must be a positive int"):
        SnapshotRecorder(tmp_path, every=0)
    with pytest.raises(FileNotFoundError, match="holds no snapshots"):
        Trajectory(tmp_path / "nothing")
    record(digits, tmp_path / "run")
    with pytest.raises(IndexError, match="holds 7 snapshots"):
        Trajectory(tmp_path / "run").flat(7)
