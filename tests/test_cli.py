"""The command line and run directories: results, resuming after SIGKILL, refusals, bad input."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import sgdlab
from sgdlab.cli import main

ROOT = Path(__file__).resolve().parents[1]
SMALL_WALK = ["--set", "epochs=1,2", "--set", "batch_size=100", "--no-progress"]


def test_walk_writes_a_run_directory_the_book_can_load(tmp_path, capsys):
    out = tmp_path / "walk"
    assert main(["run", "walk", *SMALL_WALK, "--out", str(out)]) == 0
    result = sgdlab.WalkResult.load(out / "walk.npz")
    assert result.epochs == [1, 2] and [len(s) for s in result.steps] == [14, 14]
    assert sgdlab.History.load(out / "history-walk.json").epoch == [1.0, 2.0]
    shown = json.loads(_run_show(out, capsys))
    assert shown["status"]["state"] == "finished" and len(shown["params_sha256"]) == 64
    assert shown["config"]["settings"]["batch_size"] == 100 and [r["epoch"] for r in shown["summary"]["census"]] == [1, 2]
    assert "start walk" in (out / "log.txt").read_text()

    before = (out / "walk.npz").stat().st_mtime_ns
    assert main(["run", "walk", *SMALL_WALK, "--out", str(out)]) == 0  # finished: not recomputed
    assert (out / "walk.npz").stat().st_mtime_ns == before
    assert "nothing recomputed" in (out / "log.txt").read_text()


def _run_show(out, capsys):
    capsys.readouterr()
    assert main(["show", str(out), "--json"]) == 0
    return capsys.readouterr().out


def test_other_settings_are_refused_by_name_and_fresh_starts_over(tmp_path, capsys):
    out = str(tmp_path / "walk")
    assert main(["run", "walk", *SMALL_WALK, "--out", out]) == 0
    assert main(["run", "walk", *SMALL_WALK, "--set", "lr=0.2", "--out", out]) == 1
    assert "lr (stored 0.1, asked 0.2)" in capsys.readouterr().err
    assert main(["run", "walk", *SMALL_WALK, "--set", "lr=0.2", "--fresh", "--out", out]) == 0
    assert json.loads(Path(out, "config.json").read_text())["settings"]["lr"] == 0.2


def test_a_diverging_run_stops_says_why_and_show_reports_it(tmp_path, capsys):
    out = tmp_path / "walk"
    assert main(["run", "walk", *SMALL_WALK, "--set", "lr=10000", "--out", str(out)]) == 1
    assert "diverged" in capsys.readouterr().err
    shown = json.loads(_run_show(out, capsys))
    assert shown["status"]["state"] == "diverged" and "lr=10000" in shown["status"]["message"]


def _command(out):
    return [sys.executable, "-m", "sgdlab", "run", "trajectory", "--set", "epochs=2", "--set", "every=5",
            "--set", "batch_size=10", "--no-progress", "--out", str(out)]


def _environment():
    return dict(os.environ, SGDLAB_DEVICE="cpu", SGDLAB_PRESET="quick", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def _fingerprint(out):
    return json.loads(subprocess.run([sys.executable, "-m", "sgdlab", "show", str(out), "--json"], env=_environment(),
                                     capture_output=True, text=True, check=True).stdout)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    reference = tmp_path_factory.mktemp("whole") / "run"
    subprocess.run(_command(reference), env=_environment(), check=True, capture_output=True)
    return reference


@pytest.mark.parametrize("kill_when", ["checkpoint-to-plateau.pt", "w_N.pt", "checkpoint-recorded.pt"])
def test_a_run_killed_with_sigkill_resumes_to_the_same_parameters(tmp_path, uninterrupted, kill_when):
    """Kill points: after the first mid-epoch checkpoint, between the two phases, inside the recorded phase."""
    reference = uninterrupted
    out = tmp_path / "killed"
    process = subprocess.Popen(_command(out), env=_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (out / kill_when).exists() and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before the kill point: make it longer"
    subprocess.run(_command(out), env=_environment(), check=True, capture_output=True)
    whole, resumed = _fingerprint(reference), _fingerprint(out)
    assert resumed["status"]["state"] == "finished"
    assert resumed["params_sha256"] == whole["params_sha256"]
    assert resumed["summary"] == whole["summary"]
    a, b = sgdlab.trajectory.Trajectory(reference / "snapshots"), sgdlab.trajectory.Trajectory(out / "snapshots")
    assert a.steps.tolist() == b.steps.tolist() and all((a.flat(i) == b.flat(i)).all() for i in range(len(a)))


class RunsCode:
    """A pickle that would create a file when loaded without weights_only."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize("damage, message", [
    ("truncate", "cannot be read"),
    ("garbage", "cannot be read"),
    ("foreign", "not an sgdlab training checkpoint"),
    ("code", "cannot be read"),
])
def test_damaged_foreign_or_malicious_checkpoints_are_refused_by_name(digits, tmp_path, damage, message):
    checkpoint = tmp_path / "checkpoint.pt"
    sgdlab.train(sgdlab.make_model("mlp", digits), digits, lr=0.1, batch_size=100, epochs=1, progress=False,
                 checkpoint=checkpoint)
    marker = tmp_path / "pwned"
    if damage == "truncate":
        checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    elif damage == "garbage":
        checkpoint.write_bytes(b"\x00not a checkpoint" * 10)
    elif damage == "foreign":
        torch.save({"weights": torch.zeros(3)}, checkpoint)
    else:
        checkpoint.write_bytes(pickle.dumps(RunsCode(marker)))
    with pytest.raises(ValueError, match=f"checkpoint '{checkpoint}' .*{message}"):
        sgdlab.train(sgdlab.make_model("mlp", digits), digits, lr=0.1, batch_size=100, epochs=2, progress=False,
                     checkpoint=checkpoint)
    assert not marker.exists()


BAD_COMMANDS = [
    (["run", "walk", "--set", "lr=fast"], "lr='fast': expected a finite number"),
    (["run", "walk", "--set", "lr=-1"], "lr must be a positive finite number"),
    (["run", "walk", "--set", "lr"], "expected key=value"),
    (["run", "walk", "--set", "=3"], "expected key=value"),
    (["run", "walk", "--set", "colour=red"], "not a setting of walk; allowed: arch"),
    (["run", "walk", "--set", "epochs=0"], "epochs=[0]: expected positive integers"),
    (["run", "walk", "--set", "epochs=one,two"], "expected a list of integers"),
    (["run", "walk", "--set", "batch_size=0"], "batch_size must be an int in 1..1347"),
    (["run", "walk", "--set", "batch_size=2.5"], "expected an integer"),
    (["run", "walk", "--set", "seed=true"], "expected an integer"),
    (["run", "walk", "--set", "arch=transformer"], "arch='transformer' is not allowed"),
    (["run", "walk", "--set", "dataset=imagenet"], "dataset='imagenet' is not allowed"),
    (["run", "walk", "--set", "bn=train"], "bn='train' is not allowed"),
    (["run", "walk", "--set", "batch_size=100000"], "batch_size must be an int in 1..1347"),
    (["run", "walk", "--set", "eval_examples=99999"], "eval_examples must be in 1..1347"),
    (["run", "walk", "--set", "dataset=mnist"], "dataset 'mnist' was not found"),
    (["run", "walk", "--set", "arch=vgg11"], "needs 32x32 images"),
    (["run", "curvature", "--set", "batch_sizes=5000"], "batch_size must be an int in 1..1347"),
    (["run", "curvature", "--set", "hessian_examples=0"], "expected positive integers"),
    (["run", "trajectory", "--set", "every=0"], "expected positive integers"),
    (["run", "trajectory", "--set", "weight_decay=-0.1"], "weight_decay must be a finite number >= 0"),
    (["run", "walk"], "--out is required"),
    (["show", "{tmp}/nothing"], "holds no run"),
]


@pytest.mark.parametrize("argv, message", BAD_COMMANDS, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_command_lines_say_what_is_wrong_and_leave_nothing_behind(tmp_path, capsys, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[0] == "run" and "--out" not in argv and message != "--out is required":
        argv += ["--out", str(tmp_path / "run"), "--no-progress"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_a_file_in_place_of_the_run_directory_is_refused(tmp_path, capsys):
    (tmp_path / "run").write_text("not a directory")
    assert main(["run", "walk", "--out", str(tmp_path / "run")]) == 1
    assert "is a file, not a directory" in capsys.readouterr().err


BAD_CALLS = [
    (lambda d: sgdlab.load_dataset("imagenet"), "imagenet"),
    (lambda d: sgdlab.make_model("transformer", d), "transformer"),
    (lambda d: sgdlab.get_preset("huge"), "huge"),
    (lambda d: sgdlab.train(sgdlab.make_model("mlp", d), d, lr=-1, batch_size=10, epochs=1), "lr=-1"),
    (lambda d: sgdlab.train(sgdlab.make_model("mlp", d), d, lr=0.1, batch_size=10, epochs=1, optimizer="sgdd"), "sgdd"),
    (lambda d: sgdlab.train(sgdlab.make_model("mlp", d), d, lr=0.1, batch_size=10, epochs=1, checkpoint_every=0), "checkpoint_every=0"),
    (lambda d: sgdlab.train(sgdlab.make_model("mlp", d), d, lr=0.1, batch_size=10, epochs=1, checkpoint_every=5), "need a checkpoint path"),
    (lambda d: sgdlab.train(sgdlab.make_model("mlp", d), d, lr=0.1, batch_size=10, epochs=1, checkpoint="x.pt", checkpoint_minutes=-1), "checkpoint_minutes=-1"),
]


@pytest.mark.parametrize("call, message", BAD_CALLS)
def test_bad_calls_to_the_public_api_name_the_value(digits, call, message):
    with pytest.raises(ValueError, match=message):
        call(digits)


def _paper_walk(arch, dataset, out):
    """A walk on a BatchNorm architecture through tests/standin.py (tiny data, VGG-11 at 1/16 width)."""
    return [sys.executable, str(ROOT / "tests" / "standin.py"), "run", "walk", "--set", f"arch={arch}",
            "--set", f"dataset={dataset}", "--set", "epochs=1,2,3,4", "--set", "batch_size=20",
            "--set", "eval_examples=20", "--no-progress", "--out", str(out)]


@pytest.mark.parametrize("arch, dataset", [("mlp-paper", "mnist"), ("vgg11", "cifar10")])
def test_a_batchnorm_walk_killed_with_sigkill_resumes_to_the_same_parameters(tmp_path, arch, dataset):
    environment = dict(_environment(), STANDIN_EXAMPLES="120")
    whole, out = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(_paper_walk(arch, dataset, whole), env=environment, check=True, capture_output=True)
    process = subprocess.Popen(_paper_walk(arch, dataset, out), env=environment, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    while not (out / "checkpoint-walk.pt").exists() and process.poll() is None:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before the kill point: make it longer"
    subprocess.run(_paper_walk(arch, dataset, out), env=environment, check=True, capture_output=True)
    a, b = _fingerprint(whole), _fingerprint(out)
    assert b["status"]["state"] == "finished" and b["params_sha256"] == a["params_sha256"] == a["status"]["params_sha256"]
    assert b["summary"] == a["summary"]
    x, y = sgdlab.WalkResult.load(whole / "walk.npz"), sgdlab.WalkResult.load(out / "walk.npz")
    assert all((p == q).all() for p, q in zip(x.curves, y.curves))
