"""Attacks on the command line and the package API (issue 15): each case asserts the exact
outcome: the message's key words, the exit code, which files exist afterwards, and that
files which are not the run's are unchanged."""

import errno
import json
import math
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import filelock
import numpy as np
import pytest
import torch

import standin
import sgdlab
from sgdlab.cli import main
from sgdlab.files import append_text, write_atomic
from sgdlab.runs import LOCK_FILE, params_sha256
from sgdlab.settings import SettingError, parse_setting
from sgdlab.trajectory import DamagedSnapshots, SNAPSHOT_FILE, SnapshotRecorder, Trajectory

ROOT = Path(__file__).resolve().parents[1]
WALK = ["run", "walk", "--set", "epochs=1", "--set", "batch_size=100", "--no-progress"]
TRAJECTORY = ["run", "trajectory", "--set", "epochs=1", "--set", "every=5", "--set", "batch_size=20", "--no-progress"]
VICTIM = "a file that is not the run's\n"


def run(argv, out, capsys):
    """Exit code and stderr of ``main(argv + --out out)``."""
    capsys.readouterr()
    code = main([*argv, "--out", str(out)])
    return code, capsys.readouterr().err


def shown(out, capsys):
    capsys.readouterr()
    assert main(["show", str(out), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def victim(tmp_path):
    path = tmp_path / "victim.txt"
    path.write_text(VICTIM)
    return path


@pytest.fixture(scope="module")
def walk_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("walk") / "run"
    assert main([*WALK, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def trajectory_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("trajectory") / "run"
    assert main([*TRAJECTORY, "--out", str(out)]) == 0
    return out


def copy_of(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    return copy


def fingerprint(out):
    return json.loads((out / "status.json").read_text())["params_sha256"]


# --- 1. BatchNorm and every architecture of the paper preset finish, at tiny size -------------

@pytest.mark.parametrize("arch, dataset, side", [("mlp-paper", "mnist", 32), ("vgg11", "cifar10", 32),
                                                 ("resnet20", "cifar10", 8), ("resnet56", "cifar10", 8),
                                                 ("resnet18", "cifar10", 8)])
def test_paper_architectures_finish_a_walk_and_show_their_fingerprint(tmp_path, capsys, monkeypatch, arch, dataset, side):
    monkeypatch.setenv("STANDIN_SIDE", str(side))
    standin.install(monkeypatch)
    argv = ["run", "walk", "--set", f"arch={arch}", "--set", f"dataset={dataset}", "--set", "epochs=1",
            "--set", "batch_size=20", "--set", "eval_examples=8", "--no-progress"]
    assert run(argv, tmp_path / "run", capsys) == (0, "")
    result = shown(tmp_path / "run", capsys)
    assert result["status"]["state"] == "finished" and result["problems"] == []
    assert result["params_sha256"] == result["status"]["params_sha256"] and len(result["params_sha256"]) == 64
    assert run(argv, tmp_path / "run", capsys) == (0, "")  # asked again: verified, not recomputed
    assert "nothing recomputed" in (tmp_path / "run" / "log.txt").read_text()


def test_a_batchnorm_trajectory_and_a_resnet_curvature_finish(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STANDIN_SIDE", "8")
    standin.install(monkeypatch)
    trajectory = ["run", "trajectory", "--set", "arch=mlp-paper", "--set", "dataset=mnist", "--set", "epochs=1",
                  "--set", "batch_size=10", "--set", "every=1", "--no-progress"]
    assert run(trajectory, tmp_path / "t", capsys) == (0, "")
    assert shown(tmp_path / "t", capsys)["summary"]["snapshots"] == 5
    curvature = ["run", "curvature", "--set", "arch=resnet20", "--set", "dataset=cifar10", "--set", "steps=2",
                 "--set", "batch_sizes=10,20", "--set", "batches=2", "--set", "hessian_examples=10", "--no-progress"]
    assert run(curvature, tmp_path / "c", capsys) == (0, "")
    assert shown(tmp_path / "c", capsys)["status"]["state"] == "finished"


def test_the_fingerprint_covers_zero_dimensional_buffers(tmp_path):
    path = tmp_path / "state.pt"
    torch.save({"bn.num_batches_tracked": torch.tensor(7), "w": torch.ones(2)}, path)
    first = params_sha256(path)
    torch.save({"bn.num_batches_tracked": torch.tensor(8), "w": torch.ones(2)}, path)
    assert len(first) == 64 and params_sha256(path) != first


# --- 2, 3. --fresh removes only a run, and only after validating -------------------------------

def test_fresh_refuses_a_directory_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text(VICTIM)
    code, err = run([*WALK, "--fresh"], tmp_path / "d", capsys)
    assert code == 1 and "not empty and holds no sgdlab run (found: notes.txt)" in err
    assert os.listdir(tmp_path / "d") == ["notes.txt"] and (tmp_path / "d" / "notes.txt").read_text() == VICTIM


def test_fresh_on_the_working_directory_deletes_nothing(tmp_path, capsys, monkeypatch):
    (tmp_path / "thesis.tex").write_text(VICTIM)
    monkeypatch.chdir(tmp_path)
    code, err = run([*WALK, "--fresh"], ".", capsys)
    assert code == 1 and "thesis.tex" in err and (tmp_path / "thesis.tex").read_text() == VICTIM


def test_without_fresh_a_foreign_directory_is_not_written_into(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "data.csv").write_text(VICTIM)
    assert run(WALK, tmp_path / "d", capsys)[0] == 1
    assert os.listdir(tmp_path / "d") == ["data.csv"]


def test_fresh_refuses_a_config_that_names_no_experiment(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "config.json").write_text('{"experiment": "homework"}')
    code, err = run([*WALK, "--fresh"], tmp_path / "d", capsys)
    assert code == 1 and "names no sgdlab experiment" in err
    assert (tmp_path / "d" / "config.json").read_text() == '{"experiment": "homework"}'


@pytest.mark.parametrize("bad", [["--set", "batch_size=100000"], ["--set", "arch=vgg11"], "cuda"])
def test_fresh_with_bad_settings_leaves_the_finished_run_intact(walk_run, tmp_path, capsys, monkeypatch, bad):
    out = copy_of(walk_run, tmp_path)
    before = sorted(os.listdir(out))
    if bad == "cuda":
        monkeypatch.setenv("SGDLAB_DEVICE", "cuda")
        bad, words = [], "CUDA is not available"
    else:
        words = "batch_size must be" if "batch_size" in bad[1] else "needs 32x32"
    code, err = run([*WALK, *bad, "--fresh"], out, capsys)
    assert code == 1 and words in err
    monkeypatch.setenv("SGDLAB_DEVICE", "cpu")
    assert sorted(os.listdir(out)) == before
    assert shown(out, capsys)["params_sha256"] == fingerprint(walk_run)


def test_fresh_on_a_run_starts_over_and_keeps_only_the_new_files(walk_run, tmp_path, capsys):
    out = copy_of(walk_run, tmp_path)
    (out / "stale.npz").write_bytes(b"old")
    assert run([*WALK, "--set", "lr=0.2", "--fresh"], out, capsys)[0] == 0
    assert not (out / "stale.npz").exists()
    assert json.loads((out / "config.json").read_text())["settings"]["lr"] == 0.2


# --- 4, 5, 13. Snapshots: every record checked, lost ones detected, meta.json checked ----------

def damage_record(folder, index, offset=100):
    trajectory = Trajectory(folder)
    with open(folder / SNAPSHOT_FILE, "r+b") as f:
        f.seek(index * trajectory._dtype.itemsize + 8 + offset)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x10]))


def test_a_flipped_bit_in_a_middle_record_is_an_error_naming_file_record_and_step(trajectory_run, tmp_path):
    out = copy_of(trajectory_run, tmp_path)
    damage_record(out / "snapshots", 10)
    trajectory = Trajectory(out / "snapshots")
    with pytest.raises(DamagedSnapshots, match=r"snapshots.bin: snapshot 10 \(step 50\) fails its checksum"):
        trajectory.distances(0)
    with pytest.raises(DamagedSnapshots, match="snapshot 10"):
        trajectory.flat(10)
    np.testing.assert_array_equal(trajectory.flat(9), Trajectory(trajectory_run / "snapshots").flat(9))


def test_a_damaged_step_field_is_refused_on_opening(trajectory_run, tmp_path):
    out = copy_of(trajectory_run, tmp_path)
    size = Trajectory(out / "snapshots")._dtype.itemsize
    with open(out / "snapshots" / SNAPSHOT_FILE, "r+b") as f:
        f.seek(3 * size)
        f.write(np.int64(4431888683330053341).tobytes())
    with pytest.raises(DamagedSnapshots, match="snapshot 3 says step 4431888683330053341, expected 15"):
        Trajectory(out / "snapshots")


@pytest.mark.parametrize("meta", ['[]', '{"format": 2, "every": 5, "names": ["w"], "shapes": [[3]]}',
                                  '{"format": 1, "every": 5, "names": ["w", "b"], "shapes": [[3]]}',
                                  '{"format": 1, "every": 0, "names": ["w"], "shapes": [[3]]}',
                                  '{"format": 1, "every": 5, "names": ["w"], "shapes": [[-3]]}', '\xff'])
def test_a_foreign_or_damaged_meta_json_is_refused(trajectory_run, tmp_path, meta):
    out = copy_of(trajectory_run, tmp_path)
    (out / "snapshots" / "meta.json").write_text(meta, errors="surrogateescape") if meta != '\xff' else \
        (out / "snapshots" / "meta.json").write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match="is not a snapshot description of format 1"):
        Trajectory(out / "snapshots")


@pytest.mark.parametrize("damage", ["flip", "delete", "truncate"])
def test_damaged_or_lost_snapshots_are_recorded_again_from_the_plateau(trajectory_run, tmp_path, capsys, damage):
    out = copy_of(trajectory_run, tmp_path)
    for name in ("final.pt", "summary.json"):
        (out / name).unlink()
    if damage == "flip":
        damage_record(out / "snapshots", 10)
    elif damage == "delete":
        shutil.rmtree(out / "snapshots")
    else:
        with open(out / "snapshots" / SNAPSHOT_FILE, "r+b") as f:
            f.truncate(Trajectory(out / "snapshots")._dtype.itemsize * 7)
    assert run(TRAJECTORY, out, capsys) == (0, "")
    assert "recording the phase again from w_N.pt" in (out / "log.txt").read_text()
    assert fingerprint(out) == fingerprint(trajectory_run)
    assert shown(out, capsys)["summary"] == shown(trajectory_run, capsys)["summary"]


def test_a_recorder_refuses_to_resume_over_lost_snapshots(digits, tmp_path):
    from crash import CrashAt
    options = dict(lr=0.1, batch_size=100, epochs=2, progress=False)
    with pytest.raises(KeyboardInterrupt):
        sgdlab.train(sgdlab.make_model("mlp", digits), digits, checkpoint=tmp_path / "c.pt",
                     callbacks=[SnapshotRecorder(tmp_path / "s", every=2), CrashAt(20)], **options)
    shutil.rmtree(tmp_path / "s")
    with pytest.raises(DamagedSnapshots, match="holds 0 intact snapshots but the checkpoint was written after 8"):
        sgdlab.train(sgdlab.make_model("mlp", digits), digits, checkpoint=tmp_path / "c.pt",
                     callbacks=[SnapshotRecorder(tmp_path / "s", every=2), CrashAt()], **options)


# --- 6, 7. One writer; no write through a link ---------------------------------------------------

def test_a_second_writer_is_refused_while_the_lock_is_held(walk_run, tmp_path, capsys):
    out = copy_of(walk_run, tmp_path)
    (out / "summary.json").unlink()
    with filelock.FileLock(str(out / LOCK_FILE)):
        code, err = run(WALK, out, capsys)
    assert code == 1 and "another process is running in" in err
    assert not (out / "summary.json").exists()


def test_two_identical_commands_started_together_end_with_one_finished_run(walk_run, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "sgdlab", *WALK, "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    processes = [subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(), p.stderr.read()) for p in processes]
    assert 0 in [code for code, _ in results]
    assert all(code == 0 or "another process is running" in err for code, err in results)
    assert "Traceback" not in "".join(err for _, err in results)
    assert fingerprint(out) == fingerprint(walk_run) and not list(out.glob("*.partial"))


def test_temporary_files_have_unique_names_and_a_planted_partial_link_is_never_followed(tmp_path, capsys):
    target = victim(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint-walk.pt.partial").symlink_to(target)
    code, err = run(WALK, out, capsys)
    assert code == 1 and "symbolic links (checkpoint-walk.pt.partial)" in err
    assert target.read_text() == VICTIM and os.listdir(out) == ["checkpoint-walk.pt.partial"]


@pytest.mark.parametrize("name", ["log.txt", "status.json.partial", "final.pt", "snapshots"])
def test_a_link_planted_in_a_run_directory_is_refused(walk_run, tmp_path, capsys, name):
    out = copy_of(walk_run, tmp_path)
    target = victim(tmp_path)
    if (out / name).exists():
        (out / name).unlink()
    (out / name).symlink_to(target)
    code, err = run(WALK, out, capsys)
    assert code == 1 and f"symbolic links ({name})" in err and target.read_text() == VICTIM


def test_atomic_writes_replace_a_link_not_its_target_and_leave_no_temporary_file(tmp_path):
    target = victim(tmp_path)
    (tmp_path / "out.bin").symlink_to(target)
    write_atomic(tmp_path / "out.bin", lambda f: f.write(b"new"))
    assert target.read_text() == VICTIM and (tmp_path / "out.bin").read_bytes() == b"new"
    assert not (tmp_path / "out.bin").is_symlink() and sorted(os.listdir(tmp_path)) == ["out.bin", "victim.txt"]


def test_appending_to_a_log_refuses_a_link(tmp_path):
    target = victim(tmp_path)
    (tmp_path / "log.txt").symlink_to(target)
    with pytest.raises(ValueError, match="is a symbolic link"):
        append_text(tmp_path / "log.txt", "x")
    assert target.read_text() == VICTIM


def test_temporary_files_of_a_killed_writer_are_removed_on_resume(walk_run, tmp_path, capsys):
    out = copy_of(walk_run, tmp_path)
    (out / "summary.json").unlink()
    (out / ".walk.npz.k2j4.partial").write_bytes(b"half")
    assert run(WALK, out, capsys) == (0, "")
    assert not list(out.glob("*.partial")) and fingerprint(out) == fingerprint(walk_run)


# --- 8. w_N.pt belongs to its run -----------------------------------------------------------------

@pytest.fixture(scope="module")
def other_seed_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("seed1") / "run"
    assert main([*TRAJECTORY, "--set", "seed=1", "--out", str(out)]) == 0
    return out


class MakesFile:
    """A pickle that creates a file when loaded without weights_only."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def plant_plateau(out, how, tmp_path, other_seed_run=None):
    for name in ("final.pt", "summary.json", "checkpoint-recorded.pt"):
        (out / name).unlink()
    path = out / "w_N.pt"
    if how == "foreign":
        shutil.copy(other_seed_run / "w_N.pt", path)
    elif how == "code":
        path.write_bytes(pickle.dumps(MakesFile(tmp_path / "pwned")))
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:500])
    else:  # a bare state dict, as before issue 15
        torch.save(torch.load(path, weights_only=True)["model"], path)


@pytest.mark.parametrize("how, words", [("foreign", "were written by another run"), ("code", "holds Python objects"),
                                        ("truncated", "truncated or not a tensor file"),
                                        ("bare", "not written by an sgdlab trajectory run")])
def test_plateau_weights_of_another_run_or_damaged_are_refused(trajectory_run, other_seed_run, tmp_path, capsys, how, words):
    out = copy_of(trajectory_run, tmp_path)
    plant_plateau(out, how, tmp_path, other_seed_run)
    code, err = run(TRAJECTORY, out, capsys)
    assert code == 1 and "plateau weights" in err and words in err and "weights_only=False" not in err
    assert not (tmp_path / "pwned").exists() and not (out / "final.pt").exists()
    assert json.loads((out / "status.json").read_text())["state"] == "failed"


# --- 9. --set is typed by the setting's declared type -------------------------------------------

@pytest.mark.parametrize("assignment, value", [("seed=0", 0), ("eval_examples=none", None), ("eval_examples=null", None),
                                               ("epochs=[1, 2]", [1, 2]), ("epochs=1,10,25", [1, 10, 25]),
                                               ("lr=1e-2", 0.01), ("lr=3", 3.0), ("weight_decay=0", 0.0)])
def test_settings_accept_their_declared_type(capsys, assignment, value):
    assert main(["run", "walk", "--set", assignment, "--list"]) == 0
    assert json.loads(capsys.readouterr().out)[assignment.split("=")[0]] == value


@pytest.mark.parametrize("assignment, words", [
    ("eval_examples=true", "expected an integer, e.g. 3 (or none)"), ("train_epochs=true", "expected an integer"),
    ("seed=null", "expected an integer, e.g. 3"), ("weight_decay=null", "expected a finite number"),
    ("weight_decay=Infinity", "expected a finite number"), ("lr=nan", "expected a finite number"),
    ("lr=inf", "expected a finite number"), ("batch_size=1e2", "expected an integer"),
    ("steps=1.5", "expected an integer"), ("epochs=1,,2", "expected a list of integers"),
    ("bn=", "expected text"), ("seed=18446744073709551616", "seed must be an int in 0..2**63-1"),
    ("seed=-1", "seed must be an int in 0..2**63-1"), ("steps=0", "steps=0: expected positive integers"),
])
def test_settings_of_the_wrong_type_are_refused_and_leave_nothing(tmp_path, capsys, assignment, words):
    code, err = run(["run", "walk", "--set", assignment, "--no-progress"], tmp_path / "run", capsys)
    assert code == 1 and words in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_curvature_hessian_examples_must_be_an_integer(tmp_path, capsys):
    code, err = run(["run", "curvature", "--set", "hessian_examples=1.5"], tmp_path / "run", capsys)
    assert code == 1 and "hessian_examples='1.5': expected an integer" in err


def test_the_typing_function_takes_a_declared_type():
    assert parse_setting("k", "3", int | None) == 3 and parse_setting("k", "None", int | None) is None
    assert parse_setting("k", "true", bool) is True and parse_setting("k", "2", float) == 2.0
    with pytest.raises(SettingError, match="--set k='true': expected an integer"):
        parse_setting("k", "true", int)


# --- 10. A finished run is verified before it is trusted ---------------------------------------

def test_a_missing_final_pt_is_reported_and_restored_from_the_checkpoint(walk_run, tmp_path, capsys):
    out = copy_of(walk_run, tmp_path)
    (out / "final.pt").unlink()
    result = shown(out, capsys)
    assert result["problems"] == ["final.pt is missing"] and result["params_sha256"] is None
    assert run(WALK, out, capsys) == (0, "")
    assert params_sha256(out / "final.pt") == fingerprint(walk_run) and shown(out, capsys)["problems"] == []


def test_deleted_summary_and_results_are_restored(walk_run, tmp_path, capsys):
    out = copy_of(walk_run, tmp_path)
    for name in ("summary.json", "walk.npz"):
        (out / name).unlink()
    assert run(WALK, out, capsys) == (0, "")
    assert (out / "summary.json").read_text() == (walk_run / "summary.json").read_text()
    a, b = sgdlab.WalkResult.load(walk_run / "walk.npz"), sgdlab.WalkResult.load(out / "walk.npz")
    assert all((x == y).all() for x, y in zip(a.curves, b.curves))


@pytest.mark.parametrize("damage, words", [("foreign", "fingerprint recorded"), ("truncated", "truncated"),
                                           ("code", "Python objects")])
def test_a_replaced_or_damaged_final_pt_is_not_trusted_and_is_restored(walk_run, tmp_path, capsys, damage, words):
    out = copy_of(walk_run, tmp_path)
    final = out / "final.pt"
    if damage == "foreign":
        torch.save({"w": torch.zeros(3)}, final)
    elif damage == "truncated":
        final.write_bytes(final.read_bytes()[:300])
    else:
        final.write_bytes(pickle.dumps(MakesFile(tmp_path / "pwned")))
    result = shown(out, capsys)
    assert len(result["problems"]) == 1 and words in result["problems"][0]
    assert "weights_only=False" not in json.dumps(result) and not (tmp_path / "pwned").exists()
    assert run(WALK, out, capsys) == (0, "")
    assert params_sha256(final) == fingerprint(walk_run)


# --- 11, 12. Bad input leaves nothing behind; late failures refused before training --------------

def test_a_bad_setting_leaves_no_parent_folders(tmp_path, capsys):
    code, err = run([*WALK, "--set", "batch_size=100000"], tmp_path / "a" / "b" / "c", capsys)
    assert code == 1 and "batch_size must be" in err and not (tmp_path / "a").exists()


def test_a_bad_setting_leaves_an_empty_directory_empty_and_the_corrected_command_runs(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert run([*WALK, "--set", "eval_examples=99999"], tmp_path / "run", capsys)[0] == 1
    assert os.listdir(tmp_path / "run") == []
    assert run(WALK, tmp_path / "run", capsys) == (0, "")


def test_a_device_that_is_not_there_leaves_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SGDLAB_DEVICE", "cuda")
    code, err = run(WALK, tmp_path / "run", capsys)
    assert code == 1 and "CUDA is not available" in err and not (tmp_path / "run").exists()


def test_every_too_large_for_the_run_is_refused_before_training(tmp_path, capsys):
    code, err = run([*TRAJECTORY, "--set", "every=30"], tmp_path / "run", capsys)
    assert code == 1 and "every=30 leaves 2 snapshots" in err and "choose every <= 22" in err
    assert not (tmp_path / "run").exists()


# --- Clear messages instead of tracebacks ---------------------------------------------------------

@pytest.mark.parametrize("out, words", [("/proc/sgdlab-run", "cannot be created"), ("/proc/self", "holds symbolic links"),
                                        ("/sys/sgdlab/run", "cannot be created")])
def test_an_unwritable_out_is_refused_by_name(capsys, out, words):
    code, err = run(WALK, out, capsys)
    assert code == 1 and words in err and "Traceback" not in err


def test_a_dangling_link_as_out_is_refused(tmp_path, capsys):
    (tmp_path / "run").symlink_to(tmp_path / "nowhere")
    code, err = run(WALK, tmp_path / "run", capsys)
    assert code == 1 and "which does not exist" in err and not (tmp_path / "nowhere").exists()


def test_a_full_disk_is_reported_leaves_no_temporary_files_and_resumes_exactly(walk_run, tmp_path, capsys, monkeypatch):
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device", str(getattr(f, "name", f)))

    monkeypatch.setattr(torch, "save", full_disk)
    out = tmp_path / "run"
    code, err = run(WALK, out, capsys)
    assert code == 1 and "disk full while writing" in err
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "failed: disk full" and "run the same command to resume" in status["message"]
    assert not [p for p in out.rglob("*") if p.name.endswith(".partial")]
    monkeypatch.setattr(torch, "save", real_save)
    assert run(WALK, out, capsys) == (0, "")
    assert fingerprint(out) == fingerprint(walk_run)


def test_sigint_leaves_the_status_interrupted_and_the_run_resumes(walk_run, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "sgdlab", *WALK, "--set", "epochs=1,2,3,4,5,6", "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    while not (out / "checkpoint-walk.pt").exists() and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    assert process.wait() == 130, "the run ended before the interrupt: make it longer"
    err = process.stderr.read()
    assert "interrupted" in err and "Traceback" not in err
    assert json.loads((out / "status.json").read_text())["state"] == "interrupted"
    assert subprocess.run(command, env=env).returncode == 0


@pytest.mark.parametrize("content, words", [(b"[]", "holds a JSON list, not an object"), (b"\xff\xfe{", "cannot be read"),
                                            ("directory", "it is a directory"), (b"{", "cannot be read")])
def test_a_bad_config_json_is_named_by_run_and_show(walk_run, tmp_path, capsys, content, words):
    out = copy_of(walk_run, tmp_path)
    config = out / "config.json"
    config.unlink()
    config.mkdir() if content == "directory" else config.write_bytes(content)
    code, err = run(WALK, out, capsys)
    assert code == 1 and "config.json cannot be read" in err and words in err
    assert main(["show", str(out)]) == 1 and words in capsys.readouterr().err
    assert (out / "final.pt").exists() and (out / "walk.npz").exists()


def test_show_of_a_file_says_it_holds_no_run(tmp_path, capsys):
    victim(tmp_path)
    assert main(["show", str(tmp_path / "victim.txt")]) == 1
    assert "holds no run (not a directory)" in capsys.readouterr().err


def test_a_checkpoint_of_another_architecture_with_the_same_class_is_refused(digits, tmp_path):
    options = dict(lr=0.1, batch_size=100, epochs=1, progress=False, checkpoint=tmp_path / "c.pt")
    sgdlab.train(sgdlab.make_model("mlp", digits, hidden=(16,)), digits, **options)
    with pytest.raises(ValueError, match="holds another architecture than this MLP"):
        sgdlab.train(sgdlab.make_model("mlp", digits, hidden=(32,)), digits, **options)


def test_a_code_running_checkpoint_is_refused_without_suggesting_to_trust_it(digits, tmp_path):
    (tmp_path / "c.pt").write_bytes(pickle.dumps(MakesFile(tmp_path / "pwned")))
    with pytest.raises(ValueError) as error:
        sgdlab.train(sgdlab.make_model("mlp", digits), digits, lr=0.1, batch_size=100, epochs=1, progress=False,
                     checkpoint=tmp_path / "c.pt")
    assert "holds Python objects" in str(error.value) and "weights_only" not in str(error.value)
    assert not (tmp_path / "pwned").exists()


def relabelled(digits, y):
    return sgdlab.data.Dataset(digits.name, digits.x_train, y, digits.x_test, digits.y_test, digits.num_classes)


BAD_CALLS = [
    (lambda d: sgdlab.load_dataset("digits", device="bogus"), "device='bogus' is not a device name"),
    (lambda d: sgdlab.load_dataset("digits", device="cuda:0"), "CUDA is not available"),
    (lambda d: sgdlab.train(sgdlab.make_model("mlp", d), relabelled(d, d.y_train + 10), lr=0.1, batch_size=10, epochs=1),
     r"labels 10..19; the 10 classes are 0..9"),
    (lambda d: sgdlab.train(sgdlab.make_model("mlp", d), relabelled(d, d.y_train - 1), lr=0.1, batch_size=10, epochs=1),
     r"labels -1..8"),
    (lambda d: sgdlab.train(sgdlab.make_model("mlp", d), relabelled(d, d.y_train.float()), lr=0.1, batch_size=10, epochs=1),
     "class indices as int64, got dtype torch.float32"),
    (lambda d: sgdlab.train(sgdlab.make_model("mlp", d), d, lr=0.1, batch_size=10, epochs=1, weight_decay=math.nan),
     "weight_decay must be a finite number >= 0, got weight_decay=nan"),
    (lambda d: sgdlab.train(sgdlab.make_model("mlp", d), d, lr=0.1, batch_size=10, epochs=1, seed=None),
     "seed must be an int in 0..2\\*\\*63-1, got seed=None"),
    (lambda d: sgdlab.train(sgdlab.make_model("mlp", d), d, lr=0.1, batch_size=10, epochs=1, seed=2 ** 64),
     "seed must be an int in 0..2\\*\\*63-1"),
    (lambda d: sgdlab.make_model("mlp", d, seed=2 ** 64), "seed must be an int in 0..2\\*\\*63-1"),
    (lambda d: sgdlab.train_seeds("mlp", d, [0, 2 ** 64], lr=0.1, batch_size=10, epochs=1), r"seeds\[1\] must be an int"),
    (lambda d: sgdlab.train(sgdlab.make_model("mlp", d), sgdlab.data.Dataset("empty", d.x_train[:0], d.y_train[:0],
                                                                              d.x_test, d.y_test, 10),
                            lr=0.1, batch_size=10, epochs=1), "dataset 'empty' has no training examples"),
    (lambda d: sgdlab.full_loss(sgdlab.make_model("mlp", d), sgdlab.model_params(sgdlab.make_model("mlp", d, hidden=(8,))),
                                d.x_train, d.y_train), r"params\['fc1.weight'\] has shape \(8, 64\); the model needs \(64, 64\)"),
    (lambda d: sgdlab.full_loss(sgdlab.make_model("mlp", d), sgdlab.model_params(sgdlab.make_model("cnn", d)),
                                d.x_train, d.y_train), "params does not fit the model"),
    (lambda d: sgdlab.lerp({"w": torch.ones(2)}, {"w": torch.ones(2, dtype=torch.half)}, 0.5),
     r"a\['w'\] is torch.float32 on cpu but b\['w'\] is torch.float16"),
    (lambda d: sgdlab.lerp({"w": torch.ones(2)}, {"w": torch.ones(2, device="meta")}, 0.5), "on meta"),
]


@pytest.mark.parametrize("call, message", BAD_CALLS)
def test_bad_calls_to_the_api_are_refused_by_name(digits, call, message):
    with pytest.raises(ValueError, match=message):
        call(digits)


def test_weight_matching_refuses_nan_parameters(digits):
    model = sgdlab.make_model("mlp", digits)
    spec = sgdlab.permutation_spec(model)
    a = sgdlab.model_params(model)
    b = {k: v.clone() for k, v in a.items()}
    b["fc1.weight"][0, 0] = math.nan
    with pytest.raises(ValueError, match=r"params_b\['fc1.weight'\] holds NaN or infinite values"):
        sgdlab.weight_matching(spec, a, b)


def test_a_data_folder_that_is_a_file_is_named_even_with_download(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SGDLAB_DATA", str(victim(tmp_path)))
    code, err = run([*WALK, "--set", "dataset=mnist", "--set", "arch=mlp-paper", "--download"], tmp_path / "run", capsys)
    assert code == 1 and "is a file, not a folder" in err and (tmp_path / "victim.txt").read_text() == VICTIM
    assert not (tmp_path / "run").exists()
