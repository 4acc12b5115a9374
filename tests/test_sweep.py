"""Sweeps: a 2 x 2 grid through the process pool and through submitit's local executor, a worker
killed with SIGKILL and resumed, every point's fingerprint equal to a single run's; refusals."""

import json
import os
import re
import shlex
import signal
import threading
import time
from pathlib import Path

import filelock
import pytest
import torch

from sgdlab import backends, sweep
from sgdlab.cli import _parser, main
from sgdlab.runs import show
from sgdlab.scoreboard import ResultsChanged, load_results, record_sweep, scoreboard_rows, scoreboard_table, sweep_claims

ROOT = Path(__file__).resolve().parents[1]
# the trajectory experiment at its tiniest: about a second a run, its first checkpoint a quarter of the way in
SETTINGS = ["--set", "epochs=2", "--set", "every=5", "--set", "batch_size=10"]
GRID = ["--grid", "lr=0.05,0.2", "--grid", "seed=0,1"]
POINTS = ["lr-0.05_seed-0", "lr-0.05_seed-1", "lr-0.2_seed-0", "lr-0.2_seed-1"]
KILLED = POINTS[0]


@pytest.fixture(scope="module")
def single_runs(tmp_path_factory):
    """params_sha256 of each point run alone (``python -m sgdlab run``), on the CPU with one thread."""
    out = tmp_path_factory.mktemp("single")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the sweep's workers (--threads 1): float sums depend on the thread count
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SGDLAB_DEVICE", "cpu")
        fingerprints = {}
        for name in POINTS:
            lr, seed = (part.split("-", 1)[1] for part in name.split("_"))
            assert main(["run", "trajectory", "--preset", "quick", *SETTINGS, "--set", f"lr={lr}", "--set", f"seed={seed}",
                         "--no-progress", "--out", str(out / name)]) == 0
            fingerprints[name] = show(out / name)["params_sha256"]
    torch.set_num_threads(threads)
    return fingerprints


def _holder(lock: Path) -> int | None:
    """The process that holds ``lock`` open (Linux: /proc/PID/fd), other than this one."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(lock) for fd in os.listdir(f"/proc/{pid}/fd")):
                return int(pid)
        except OSError:
            continue
    return None


def _kill_worker_of(run: Path, killed: list) -> threading.Thread:
    """A thread that SIGKILLs the process running ``run`` once its first checkpoint is on disk."""
    def watch():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (run / "checkpoint-to-plateau.pt").exists():
            time.sleep(0.005)
        while time.monotonic() < deadline and not (run / "summary.json").exists():
            pid = _holder(run / ".sgdlab.lock")
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="finds the worker through /proc")
@pytest.mark.parametrize("backend", [["--backend", "local", "--workers", "2"],
                                     ["--backend", "slurm", "--cluster", "local", "--time", "10"]],
                         ids=["process-pool", "submitit-local"])
def test_a_sweep_with_a_killed_worker_resumes_every_point_to_a_single_runs_parameters(
        tmp_path, monkeypatch, capsys, single_runs, backend):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # submitit's jobs import sgdlab
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "sweep"
    command = ["sweep", "trajectory", "--preset", "quick", *SETTINGS, *GRID, "--threads", "1", "--out", str(out), *backend]
    killed = []
    watcher = _kill_worker_of(out / KILLED, killed)
    assert main(command) == 1, "a point was killed: the sweep says so"
    watcher.join()
    assert killed, "every point ended before the kill: make the runs longer"
    first = capsys.readouterr().out
    assert f"{KILLED}: stopped" in first and "run the same sweep again to resume" in first

    assert main(command) == 0                                     # the same command resumes
    assert "resume" in (out / KILLED / "log.txt").read_text()     # from its checkpoints, not from the start
    capsys.readouterr()
    assert main(["sweep", "show", str(out), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in shown["points"]] == POINTS
    assert all(p["state"] == "finished" for p in shown["points"])
    assert {p["name"]: p["params_sha256"] for p in shown["points"]} == single_runs
    groups = shown["aggregates"]
    assert [(g["name"], g["seeds"]) for g in groups] == [("lr-0.05", [0, 1]), ("lr-0.2", [0, 1])]
    exponents = [p["numbers"]["exponent"] for p in shown["points"][:2]]
    assert groups[0]["numbers"]["exponent"]["mean"] == pytest.approx(sum(exponents) / 2)

    assert main(command) == 0                                     # finished: skipped, not recomputed
    assert capsys.readouterr().out.count("skipped: finished already") == 4


BAD_GRIDS = [
    (["--grid", "lr=0.1,fast"], "lr='fast': expected a finite number"),
    (["--grid", "seed=0,1.5"], "seed='1.5': expected an integer"),
    (["--grid", "colour=red,blue"], "--grid colour: not a setting of trajectory"),
    (["--grid", "arch=mlp,transformer"], "arch='transformer' is not allowed"),
    (["--grid", "batch_size=10,0"], "point batch_size-0: batch_size must be an int in 1..1347"),
    (["--grid", "lr=0.1,-1"], "point lr--1.0: lr must be a positive finite number"),
    (["--grid", "seed=0,00"], "'00' gives 0, which is listed already"),
    (["--grid", "lr"], "expected key=value1,value2"),
    (["--grid", "seed=0", "--grid", "seed=1"], "given twice"),
]


@pytest.mark.parametrize("grid, message", BAD_GRIDS, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_a_bad_grid_value_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch, grid, message):
    monkeypatch.setattr(backends, "run_local", lambda *a: pytest.fail("a job started"))
    assert main(["sweep", "trajectory", *SETTINGS, *grid, "--out", str(tmp_path / "sweep")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "sweep").exists()


def test_points_are_named_from_their_grid_values_and_lists_are_split_by_semicolons():
    base, grid = sweep.parse_grid("walk", "quick", ["lr=0.1"], ["epochs=1,2;5", "bn=eval,batch"])
    assert grid == {"epochs": [[1, 2], [5]], "bn": ["eval", "batch"]}
    points = sweep.expand(base, grid)
    assert [p.name for p in points] == ["epochs-1+2_bn-eval", "epochs-1+2_bn-batch", "epochs-5_bn-eval", "epochs-5_bn-batch"]
    assert points[2].settings == {**base, "epochs": [5], "bn": "eval"} and base["lr"] == 0.1


def _fake_backend(calls):
    def run(jobs, directory, options):
        calls.append([Path(job[3]).name for job in jobs])
        return [dict(state="submitted", message="") for _ in jobs]
    return run


def test_a_point_whose_settings_changed_is_refused_with_the_keys_that_differ(tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(backends, "run_local", _fake_backend(calls))
    out = str(tmp_path / "sweep")
    assert main(["sweep", "trajectory", *SETTINGS, "--grid", "seed=0,1", "--out", out]) == 0
    manifest = (tmp_path / "sweep" / "sweep.json").read_text()
    assert main(["sweep", "trajectory", *SETTINGS, "--set", "weight_decay=0.01", "--grid", "seed=0,1", "--out", out]) == 1
    err = capsys.readouterr().err
    assert "point seed-0 in" in err and "holds other settings: weight_decay (stored 0.001, asked 0.01)" in err
    assert (tmp_path / "sweep" / "sweep.json").read_text() == manifest and len(calls) == 1
    config = json.loads((tmp_path / "sweep" / "sweep.json").read_text())["points"]["seed-0"]
    (tmp_path / "sweep" / "seed-0").mkdir()   # a run of other settings written into a point's directory
    (tmp_path / "sweep" / "seed-0" / "config.json").write_text(json.dumps(dict(
        experiment="trajectory", preset="quick", settings=dict(config, lr=0.9))))
    assert main(["sweep", "trajectory", *SETTINGS, "--grid", "seed=0,1", "--out", out]) == 1
    assert "point seed-0 in" in (err := capsys.readouterr().err) and "lr (stored 0.9, asked 0.2)" in err
    assert main(["sweep", "curvature", "--grid", "seed=0,1", "--out", out]) == 1
    assert "holds a sweep of trajectory" in capsys.readouterr().err
    assert main(["sweep", "trajectory", *SETTINGS, "--grid", "seed=0,1", "--out", str(tmp_path / "sweep" / "sweep.json")]) == 1
    assert "is a file, not a directory" in capsys.readouterr().err


def test_two_sweeps_on_one_directory_cannot_write_at_once(tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(backends, "run_local", _fake_backend(calls))
    out = tmp_path / "sweep"
    command = ["sweep", "trajectory", *SETTINGS, "--grid", "seed=0,1", "--out", str(out)]
    assert main(command) == 0
    with filelock.FileLock(str(out / "sweep.json.lock")):       # another sweep holds the manifest
        assert main(command) == 1
    assert "another sweep is submitting to or running in" in capsys.readouterr().err
    (out / "seed-1").mkdir()
    with filelock.FileLock(str(out / "seed-1" / ".sgdlab.lock")):  # a worker (of any sweep) runs this point
        assert main(command) == 0
    assert "seed-1: running (skipped: running in another process)" in capsys.readouterr().out
    assert calls == [["seed-0", "seed-1"], ["seed-0"]]


def test_seeds_are_aggregated_as_mean_and_standard_deviation():
    points = [dict(name=f"lr-{lr}_seed-{seed}", state=state, settings=dict(lr=lr, seed=seed, arch="mlp"),
                   numbers=dict(exponent=value)) for lr, seed, state, value in
              [(0.1, 0, "finished", 0.5), (0.1, 1, "finished", 0.7), (0.1, 2, "failed", None),
               (0.2, 0, "finished", 0.4)]]
    points[2]["numbers"] = {}
    groups = sweep.aggregate(points, "trajectory", "quick")
    assert [(g["name"], g["seeds"], g["points"]) for g in groups] == [
        ("lr-0.1", [0, 1], ["lr-0.1_seed-0", "lr-0.1_seed-1", "lr-0.1_seed-2"]), ("lr-0.2", [0], ["lr-0.2_seed-0"])]
    assert groups[0]["numbers"]["exponent"]["mean"] == pytest.approx(0.6)
    assert groups[0]["numbers"]["exponent"]["std"] == pytest.approx(0.1414213562)   # sample std, n - 1
    assert groups[1]["numbers"]["exponent"] == dict(values=[0.4], mean=0.4, std=0.0)


def _walk_group(preset="paper"):
    census = {0: dict(steps=[450, 450], barriers=[0, 9], inside=[0.4, 0.5], rises=[3, 1], falls=[4, 2]),
              1: dict(steps=[450, 450], barriers=[9, 0], inside=[0.3, 0.6], rises=[5, 1], falls=[6, 2])}
    numbers = {}
    for seed, rows in census.items():
        for label, values in rows.items():
            for epoch, value in zip((1, 100), values):
                numbers.setdefault(f"{label}@{epoch}", dict(values=[]))["values"].append(value)
    return dict(name="arch-vgg11", experiment="walk", preset=preset, settings=dict(arch="vgg11"), seeds=[0, 1],
                points=["arch-vgg11_seed-0", "arch-vgg11_seed-1"], numbers=numbers)


def test_a_paper_sweep_fills_the_scoreboards_paper_column_with_its_seeds(tmp_path, monkeypatch):
    monkeypatch.setenv("SGDLAB_RESULTS_DIR", str(tmp_path))
    monkeypatch.delenv("SGDLAB_RESULTS", raising=False)
    assert record_sweep(_walk_group()) == {"walk-rare-barriers": True, "walk-floor-moves": True,
                                           "walk-valley-every-step": False}   # a discrepancy is recorded too
    stored = load_results("paper")
    assert stored["walk-rare-barriers"]["values"] == dict(largest_share=0.02, steps=900) and stored["walk-rare-barriers"]["seeds"] == 2
    assert stored["walk-floor-moves"]["values"] == dict(rises=5, falls=7)   # per seed 4 and 6, 6 and 8: means
    assert stored["walk-valley-every-step"]["values"] == dict(smallest_share=0.35, largest_share=0.55)
    row = next(r for r in scoreboard_rows() if r["key"] == "walk-floor-moves")
    assert row["paper"]["seeds"] == 2 and row["gpu"] is None
    assert "(mean of 2 seeds)" in scoreboard_table().data
    changed = _walk_group()
    changed["numbers"]["rises@1"]["values"] = [30, 50]
    with pytest.raises(ResultsChanged, match="walk-floor-moves"):
        record_sweep(changed)
    with pytest.raises(ValueError, match="ran with preset 'quick'; only a paper-preset sweep"):
        record_sweep(_walk_group("quick"))


@pytest.mark.parametrize("page", ["README.md", "book/paper_scale.md"])
def test_the_sweep_commands_of_the_readme_and_the_book_name_valid_settings_and_grids(page):
    text = (ROOT / page).read_text().replace("\\\n", " ")
    commands = [shlex.split(line.split("#")[0]) for line in re.findall(r"python -m sgdlab (sweep [^\n]*)", text)]
    grids = [c for c in commands if c[1] != "show"]
    assert grids and any(c[1] == "show" for c in commands), "the page shows a sweep and how to follow it"
    for command in grids:
        args = _parser().parse_args(command)
        base, grid = sweep.parse_grid(args.experiment, args.preset, args.assignments, args.grid)
        assert len(sweep.expand(base, grid)) > 1, command


def test_a_preempted_slurm_job_is_requeued_by_submitits_checkpoint_protocol_with_the_same_point():
    pytest.importorskip("submitit")
    job, point = backends.PointJob(), ("walk", "paper", dict(seed=0), "runs/walk/seed-0", False, None)
    delayed = job.checkpoint(*point)   # what submitit calls on SIGUSR2 (pre-emption, time-out) before requeueing
    assert delayed.function is job and delayed.args == point and not delayed.kwargs


def test_a_summary_of_an_unknown_shape_shows_every_number_it_holds():
    assert sweep.key_numbers("walk", dict(loss=dict(first=2.0, last=0.5), label="x")) == {"loss/first": 2.0, "loss/last": 0.5}


def test_a_curvature_sweep_gives_alignment_and_cosine_per_batch_size_for_the_scoreboard():
    def summary(shift):   # the shape of sgdlab.runs' curvature summary
        return dict(batch_sizes=[10, 100], **{f"batch {b}": dict(mean_cosine=c + shift, distance=1.0, top_eigenvalue=4.0,
                                                                   alignment={"10": a + shift, "100": 2 * a, "1347": 3 * a})
                                               for b, c, a in [(10, 0.1, 1.0), (100, -0.2, 2.0)]})
    numbers = [sweep.key_numbers("curvature", summary(shift)) for shift in (0.0, 0.5)]
    assert numbers[0] == {"alignment@10": 1.0, "cosine@10": 0.1, "distance@10": 1.0, "eigenvalue@10": 4.0,
                          "alignment@100": 4.0, "cosine@100": -0.2, "distance@100": 1.0, "eigenvalue@100": 4.0}
    points = [dict(name=f"seed-{s}", state="finished", settings=dict(batch_sizes=[10, 100], seed=s), numbers=n)
              for s, n in enumerate(numbers)]
    group, = sweep.aggregate(points, "curvature", "paper")
    claims = sweep_claims(group)
    assert claims["batch-alignment"] == dict(batch_sizes=[10, 100], alignment=[1.25, 4.0])
    assert claims["batch-cosine"] == dict(batch_sizes=[10, 100], mean_cosine=pytest.approx([0.35, 0.05]))
