import json

import pytest

import sgdlab
from sgdlab.cli import main


def test_walk_from_the_command_line_writes_a_loadable_run_directory(tmp_path, capsys):
    out = tmp_path / "walk"
    argv = ["run", "walk", "--preset", "quick", "--epochs", "1", "2", "--batch-size", "100", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    result = sgdlab.WalkResult.load(out / "walk.npz")
    assert result.epochs == [1, 2] and [len(s) for s in result.steps] == [14, 14]
    assert sgdlab.History.load(out / "history.json").epoch == [1.0, 2.0]
    settings = json.loads((out / "config.json").read_text())["settings"]
    assert settings["arch"] == "mlp" and settings["dataset"] == "digits" and settings["batch_size"] == 100
    printed = capsys.readouterr().out
    assert "epoch    2: 14 steps" in printed and "preset 'quick'" in printed

    assert main(argv) == 0  # run again: resumes from the finished checkpoint, same result
    again = sgdlab.WalkResult.load(out / "walk.npz")
    assert (again.curves[1] == result.curves[1]).all()
    assert "resuming" in capsys.readouterr().out


def test_a_run_directory_of_another_run_is_refused(tmp_path):
    out = str(tmp_path / "walk")
    main(["run", "walk", "--epochs", "1", "--batch-size", "100", "--no-progress", "--out", out])
    with pytest.raises(SystemExit, match="another run .*lr"):
        main(["run", "walk", "--epochs", "1", "--batch-size", "100", "--lr", "0.2", "--no-progress", "--out", out])


def test_unknown_architecture_is_refused_with_the_choices(capsys):
    with pytest.raises(SystemExit):
        main(["run", "walk", "--arch", "transformer", "--out", "x"])
    assert "invalid choice: 'transformer'" in capsys.readouterr().err
