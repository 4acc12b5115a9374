"""Each experiment is written once: the chapter's call and the command line give identical results."""

import dataclasses

import numpy as np
import pytest
import torch

import sgdlab
from sgdlab.cli import main
from sgdlab.experiments import EXPERIMENTS, curvature, stability, trajectory, walk
from sgdlab.settings import as_settings

TINY = {
    "walk": walk.Config(epochs=(1, 2), batch_size=100),
    "curvature": curvature.Config(batch_sizes=(50, 200), steps=10, batches=2, hessian_examples=100),
    "trajectory": trajectory.Config(epochs=1, batch_size=50, every=5),
    "stability": stability.Config(epochs=2, seeds=2, probe=20, floor_epochs=1),
}


def _as_command_line(config) -> list[str]:
    """``--set`` for every setting that differs from the preset's."""
    preset = getattr(sgdlab.get_preset("quick"), config.__module__.rsplit(".", 1)[-1])
    changes = {k: v for k, v in as_settings(config).items() if v != as_settings(preset)[k]}
    return [f"--set={k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in changes.items()]


def _same(a, b) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a.cpu(), b.cpu())
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b, equal_nan=True)
    else:
        assert a == b


@pytest.mark.parametrize("name", sorted(TINY))
def test_the_chapter_call_and_the_command_line_give_identical_results(name, tmp_path, capsys):
    experiment, config = EXPERIMENTS[name], TINY[name]
    in_chapter = experiment.run(config, progress=False)
    out = tmp_path / name
    assert main(["run", name, *_as_command_line(config), "--no-progress", "--out", str(out)]) == 0, capsys.readouterr()
    from_cli = experiment.Result.load(out)
    _same(in_chapter.params, from_cli.params)
    _same(in_chapter.summary(), from_cli.summary())
    if name == "walk":
        _same(in_chapter.walk.curves, from_cli.walk.curves)
        _same(in_chapter.history.step_loss, from_cli.history.step_loss)
    elif name == "curvature":
        _same(in_chapter.arrays, from_cli.arrays)
    elif name == "stability":
        for key, result in in_chapter.drift.items():
            _same(result.activation_drift, from_cli.drift[key].activation_drift)
    else:
        _same((in_chapter.steps, in_chapter.distances), (from_cli.steps, from_cli.distances))


def test_every_preset_overrides_configs_that_the_experiments_accept():
    for preset in sgdlab.PRESETS.values():
        for name, experiment in EXPERIMENTS.items():
            config = getattr(preset, name)
            assert isinstance(config, experiment.Config)
            for key, allowed in experiment.CHOICES.items():
                assert getattr(config, key) in allowed, (preset.name, name, key)


def test_a_preset_states_only_what_differs_from_the_one_it_builds_on():
    quick, gpu = sgdlab.get_preset("quick"), sgdlab.get_preset("gpu")
    assert quick.walk == walk.Config() and quick.curvature == curvature.Config()
    assert gpu.walk.lr == quick.walk.lr and gpu.walk.batch_size == 100  # the paper's batch, one override


def test_a_diverging_walk_raises_diverged_in_the_chapter_too():
    with pytest.raises(sgdlab.Diverged, match="lr=10000"):
        walk.run(dataclasses.replace(TINY["walk"], lr=10000.0), progress=False)


def test_the_walk_evaluates_batchnorm_with_batch_statistics_by_default_and_trains_the_same_either_way():
    assert walk.Config().bn == "batch"  # the authors' choice
    config = dataclasses.replace(TINY["walk"], arch="mlp-paper", epochs=(1,), steps=3)
    by_batch = walk.run(config, progress=False)
    by_eval = walk.run(dataclasses.replace(config, bn="eval"), progress=False)
    assert by_batch.walk.config["bn"] == "batch" and by_eval.walk.config["bn"] == "eval"
    assert all(torch.equal(by_batch.params[k], by_eval.params[k]) for k in by_batch.params)  # same training ...
    assert not np.allclose(by_batch.walk.curves[0], by_eval.walk.curves[0])                 # ... seen two ways


def test_stability_run_saves_and_loads_what_it_found_and_its_floor_is_far_below_its_drift(tmp_path):
    config = TINY["stability"]
    found = stability.run(config, progress=False, out=tmp_path)
    loaded = stability.Result.load(tmp_path)
    assert list(found.drift) == [f"{net}/{s}" for net in ("CNN", "MLP") for s in stability.SCHEDULES]
    _same(found.summary(), loaded.summary())
    _same(found.params, loaded.params)
    for key, result in found.drift.items():
        _same(result.activation_drift, loaded.drift[key].activation_drift)
        assert len(found.final_loss[key]) == 2
        assert found.final_loss[key][0] == found.histories[key].train_loss[-1]  # seed 0: the recorded run
    for net, floor in found.floor.items():
        assert floor.lr[0] == config.floor_lr
        assert floor.mean_activation_drift().mean() < 1e-3 * found.drift[f"{net}/constant"].mean_activation_drift().mean()
    assert stability.run(config, progress=False, out=tmp_path).summary() == found.summary()  # resumed from the checkpoints


def test_the_stability_experiment_refuses_settings_it_does_not_accept():
    with pytest.raises(ValueError, match="gamma must be a number in \\(0, 1\\).*gamma=2"):
        stability.prepare(stability.Config(gamma=2))
    with pytest.raises(ValueError, match="cnn_arch='lenet' is not allowed"):
        stability.prepare(stability.Config(cnn_arch="lenet"))


def test_stability_runs_the_gpu_preset_data_and_batchnorm_mlp_on_stand_in_data(tmp_path):
    """The gpu preset's stability settings on a few stand-in examples: every schedule, the floor control and the
    probe with batch statistics, through the paper's MLP (BatchNorm) and, for speed, the small CNN in place of
    ResNet-18 (tests/test_gpu_preset_smoke.py records ResNet-18's drift)."""
    from sgdlab import standin
    standin.write_standins(tmp_path, sizes={"mnist": (32, 8), "cifar10": (32, 8)})
    gpu = sgdlab.get_preset("gpu").stability
    data = {name: sgdlab.load_dataset(name, root=tmp_path, device="cpu") for name in (gpu.cnn_dataset, gpu.mlp_dataset)}
    config = dataclasses.replace(gpu, cnn_arch="cnn", batch_size=16, probe=8, seeds=1)
    try:
        found = stability.run(config, progress=False, data=data)
    finally:
        standin.loaded.clear()  # other tests' scoreboard records must not see these stand-ins
    for net in ("CNN", "MLP"):
        step = found.drift[f"{net}/step"]
        assert np.isfinite(step.mean_activation_drift()).all() and (step.mean_activation_drift() > 0).all()
        assert np.isfinite(step.gradient_norm).all()
        floor = found.floor[net].mean_activation_drift().mean()
        assert floor < 1e-3 * found.drift[f"{net}/constant"].mean_activation_drift().mean(), net  # batch statistics: no floor
