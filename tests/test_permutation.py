import functools

import pytest
import torch
from torch import nn
from torch.func import functional_call

import sgdlab
from sgdlab.landscape import lmc_barrier
from sgdlab.permutation import (
    activation_matching, apply_permutation, identity_permutation, inverse_permutation, permutation_spec, random_permutation,
    weight_matching,
)

# (arch, options, data): digits for the MLPs, MNIST-1D-shaped signals for the cnn, 3x32x32 images for the rest
CASES = [
    ("mlp", {}, "digits"),
    ("mlp", {"hidden": (32, 16), "batchnorm": True}, "digits"),
    ("mlp-paper", {}, "digits"),
    ("cnn", {}, "mnist1d"),
    ("cnn", {"batchnorm": True}, "mnist1d"),
    ("cnn", {"batchnorm": True}, "digits"),
    ("vgg11", {}, "images"),
    ("vgg11", {"batchnorm": False}, "images"),
    ("resnet20", {}, "images"),
    ("resnet56", {}, "images"),
    ("resnet18", {}, "images"),
]
CASE_IDS = [f"{arch}-{'-'.join(f'{k}={v}' for k, v in options.items()) or 'default'}-{data}" for arch, options, data in CASES]


def tiny_images(n=8):
    """A stand-in for CIFAR-10: n random 3x32x32 images."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)
    return sgdlab.data.Dataset("cifar10", x, y, x.clone(), y.clone(), 10)


@functools.lru_cache(maxsize=None)
def network(arch, options, data):
    """(model, params with non-trivial BatchNorm weights and statistics, 8 inputs); ``options`` as a tuple of items."""
    if data == "digits":
        dataset = sgdlab.load_dataset("digits", device="cpu")
        x = dataset.x_train[:8]
    elif data == "mnist1d":
        dataset, x = "mnist1d", torch.randn(8, 1, 40, generator=torch.Generator().manual_seed(0))
    else:
        dataset = tiny_images()
        x = dataset.x_train
    model = sgdlab.make_model(arch, dataset, seed=0, **dict(options))
    g = torch.Generator().manual_seed(1)
    params = sgdlab.clone_params(sgdlab.model_params(model))
    for name, tensor in params.items():
        if name.endswith(("running_mean", "bias")):
            params[name] = 0.1 * torch.randn(tensor.shape, generator=g)
        elif name.endswith("running_var") or (name.endswith("weight") and tensor.dim() == 1):  # BatchNorm scale
            params[name] = 0.5 + torch.rand(tensor.shape, generator=g)
    return model, params, x


def case(arch, options, data):
    return network(arch, tuple(options.items()), data)


def outputs(model, params, x, mode):
    """Logits in eval mode, or with batch statistics in train mode (on copies of the buffers)."""
    model.train(mode == "batch")
    with torch.no_grad():
        return functional_call(model, sgdlab.clone_params(params), (x,))


@pytest.mark.parametrize("arch, options, data", CASES, ids=CASE_IDS)
def test_spec_names_every_tensor_and_its_sizes_fit(arch, options, data):
    model, params, _ = case(arch, options, data)
    spec = permutation_spec(model)
    assert list(spec.axes) == list(model.state_dict())
    for name, tensor in params.items():
        assert len(spec.axes[name]) == tensor.dim(), name
        for axis, p in enumerate(spec.axes[name]):
            assert p is None or tensor.shape[axis] == spec.sizes[p], (name, axis)
    # every permutation reorders the outputs of some layer and the inputs of another
    for p in spec.sizes:
        assert {axis for key, axis in spec.axes_permuted_by(p) if key.endswith("weight")} >= {0, 1}, p
    assert all(spec.axes[name] == () for name in params if name.endswith("num_batches_tracked"))


def test_mlp_spec_is_the_one_in_the_module_docstring(digits):
    spec = permutation_spec(sgdlab.make_model("mlp", digits, batchnorm=True))
    assert spec.sizes == {"fc1": 64}
    assert spec.axes == {
        "fc1.weight": ("fc1", None), "fc1.bias": ("fc1",),
        "bn1.weight": ("fc1",), "bn1.bias": ("fc1",), "bn1.running_mean": ("fc1",), "bn1.running_var": ("fc1",),
        "bn1.num_batches_tracked": (),
        "out.weight": (None, "fc1"), "out.bias": (None,),
    }
    assert spec.buffers == {"bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked"}


def test_residual_stream_has_one_permutation_per_stage():
    spec = permutation_spec(case("resnet20", {}, "images")[0])
    stream = {"stem.conv.weight": 0, "stem.bn.running_var": 0, "stage1.2.conv2.weight": 0, "stage1.2.bn2.bias": 0,
              "stage2.0.conv1.weight": 1, "stage2.0.shortcut.conv.weight": 1}
    assert {key: spec.axes[key][axis] for key, axis in stream.items()} == {
        "stem.conv.weight": "stage1.stream", "stem.bn.running_var": "stage1.stream",
        "stage1.2.conv2.weight": "stage1.stream", "stage1.2.bn2.bias": "stage1.stream",
        "stage2.0.conv1.weight": "stage1.stream", "stage2.0.shortcut.conv.weight": "stage1.stream",
    }
    assert spec.axes["stage2.0.shortcut.conv.weight"] == ("stage2.stream", "stage1.stream", None, None)
    assert spec.axes["stage2.0.shortcut.bn.running_mean"] == ("stage2.stream",)
    assert spec.axes["stage2.1.conv2.weight"] == ("stage2.stream", "stage2.1.conv1", None, None)
    assert spec.axes["stage2.1.bn1.weight"] == ("stage2.1.conv1",)
    assert spec.axes["head.weight"] == (None, "stage3.stream")
    streams = {p: n for p, n in spec.sizes.items() if p.endswith("stream")}
    assert streams == {"stage1.stream": 16, "stage2.stream": 32, "stage3.stream": 64}
    for arch, blocks, stages in (("resnet20", 9, 3), ("resnet56", 27, 3), ("resnet18", 8, 4)):
        sizes = permutation_spec(case(arch, {}, "images")[0]).sizes
        assert len(sizes) == blocks + stages, arch  # one inner permutation per block, one stream per stage


@pytest.mark.parametrize("arch, options, data", CASES, ids=CASE_IDS)
def test_random_permutation_keeps_the_function_and_moves_the_weights(arch, options, data):
    model, params, x = case(arch, options, data)
    spec = permutation_spec(model)
    permuted = apply_permutation(spec, random_permutation(spec, seed=0), params)
    for mode in ("eval", "batch"):
        torch.testing.assert_close(outputs(model, permuted, x, mode), outputs(model, params, x, mode),
                                   rtol=1e-4, atol=1e-5, msg=mode)
    for name, names in spec.axes.items():
        if any(names):
            assert not torch.equal(permuted[name], params[name]), name
        else:
            assert permuted[name] is params[name], name


@pytest.mark.parametrize("arch, options, data", CASES, ids=CASE_IDS)
def test_the_inverse_restores_the_parameters_exactly(arch, options, data):
    model, params, _ = case(arch, options, data)
    spec = permutation_spec(model)
    perm = random_permutation(spec, seed=1)
    restored = apply_permutation(spec, inverse_permutation(perm), apply_permutation(spec, perm, params))
    assert all(torch.equal(restored[name], params[name]) for name in params)


def test_applying_two_permutations_is_applying_their_composition():
    model, params, _ = case("mlp", {"hidden": (32, 16), "batchnorm": True}, "digits")
    spec = permutation_spec(model)
    first, then = random_permutation(spec, seed=2), random_permutation(spec, seed=3)
    composed = {name: first[name][then[name]] for name in spec.sizes}
    twice = apply_permutation(spec, then, apply_permutation(spec, first, params))
    once = apply_permutation(spec, composed, params)
    assert all(torch.equal(twice[name], once[name]) for name in params)


@pytest.mark.parametrize("arch, options, data", [
    ("mlp", {}, "digits"), ("mlp", {"hidden": (32, 16), "batchnorm": True}, "digits"),
    ("cnn", {}, "mnist1d"), ("cnn", {"batchnorm": True}, "digits"), ("vgg11", {}, "images"), ("resnet20", {}, "images"),
])
def test_planted_permutation_is_recovered_exactly_by_weight_matching(arch, options, data):
    model, params, _ = case(arch, options, data)
    spec = permutation_spec(model)
    planted = random_permutation(spec, seed=4)
    found = weight_matching(spec, params, apply_permutation(spec, planted, params))
    assert all(torch.equal(found[name], inverse_permutation(planted)[name]) for name in spec.sizes)
    aligned = apply_permutation(spec, found, apply_permutation(spec, planted, params))
    assert sgdlab.distance(aligned, params) == 0.0


def test_a_single_hidden_layer_is_matched_in_one_pass():
    model, params, _ = case("mlp", {}, "digits")
    spec = permutation_spec(model)
    planted = random_permutation(spec, seed=5)
    found = weight_matching(spec, params, apply_permutation(spec, planted, params), max_iter=1)
    assert torch.equal(found["fc1"], inverse_permutation(planted)["fc1"])


def test_matching_a_network_to_itself_gives_the_identity():
    model, params, _ = case("resnet20", {}, "images")
    spec = permutation_spec(model)
    found = weight_matching(spec, params, params, seed=7)
    assert all(torch.equal(found[name], pi) for name, pi in identity_permutation(spec).items())


def varying_units(model, spec, params, x):
    """Permutation name -> mask of its units whose activation (after ReLU) varies over ``x`` somewhere it is seen."""
    seen, sites = {}, {site for sites in spec.activations.values() for site in sites}
    hooks = [model.get_submodule(site).register_forward_hook(
        lambda module, inputs, out, site=site: seen.update({site: out.relu().movedim(1, -1).flatten(0, -2)}))
        for site in sites]
    outputs(model, params, x, "eval")
    for hook in hooks:
        hook.remove()
    return {p: torch.stack([seen[site].std(0) > 0 for site in spec.activations[p]]).any(0) for p in spec.sizes}


@pytest.mark.parametrize("arch, options, data", [
    ("mlp", {}, "digits"), ("mlp", {"hidden": (32, 16), "batchnorm": True}, "digits"),
    ("cnn", {"batchnorm": True}, "digits"), ("resnet20", {}, "images"),
])
def test_planted_permutation_is_recovered_by_activation_matching_on_every_unit_that_fires(digits, arch, options, data):
    model, params, x = case(arch, options, data)
    if data == "digits":
        x = digits.x_train
    spec = permutation_spec(model)
    planted = random_permutation(spec, seed=6)
    found = activation_matching(model, params, apply_permutation(spec, planted, params), x, chunk_size=500)
    expected = inverse_permutation(planted)
    for name, varies in varying_units(model, spec, params, x).items():
        assert varies.sum() > len(varies) / 2, name  # most units fire: the test says something
        assert torch.equal(found[name][varies], expected[name][varies]), name
        # units that never vary carry no information: they can only be paired among themselves
        assert set(found[name][~varies].tolist()) == set(expected[name][~varies].tolist()), name


@pytest.fixture(scope="module")
def two_trained_mlps(digits):
    """The same MLP trained from two initialisations and data orders (5 epochs each)."""
    model, trained = sgdlab.make_model("mlp", digits), []
    for seed in (0, 1):
        net = sgdlab.make_model("mlp", digits, seed=seed)
        sgdlab.train(net, digits, lr=0.1, batch_size=32, epochs=5, seed=seed, progress=False, evaluate=False)
        trained.append(sgdlab.clone_params(sgdlab.model_params(net)))
    return model, *trained


def test_weight_matching_two_trained_mlps_brings_them_closer_without_raising_the_barrier(digits, two_trained_mlps):
    model, a, b = two_trained_mlps
    spec = permutation_spec(model)
    aligned = apply_permutation(spec, weight_matching(spec, a, b), b)
    assert sgdlab.distance(a, aligned) < sgdlab.distance(a, b)
    before = lmc_barrier(model, a, b, digits.x_train, digits.y_train)
    after = lmc_barrier(model, a, aligned, digits.x_train, digits.y_train)
    assert after.curve[-1] == pytest.approx(before.curve[-1], rel=1e-5)  # b itself computes the same
    assert after.above_line <= before.above_line


def test_activation_matching_two_trained_mlps_brings_them_closer(digits, two_trained_mlps):
    model, a, b = two_trained_mlps
    spec = permutation_spec(model)
    aligned = apply_permutation(spec, activation_matching(model, a, b, digits.x_train), b)
    assert sgdlab.distance(a, aligned) < sgdlab.distance(a, b)


@pytest.mark.parametrize("model, message", [
    (nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)), "module '1' of this Sequential is a Tanh"),
    (nn.Linear(4, 2), "got a Linear"),
    (nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 4, 2)),
     "module '2' takes 32 inputs but follows 8 units of permutation '0'"),
])
def test_models_it_cannot_describe_are_refused_by_name(model, message):
    with pytest.raises(ValueError, match=message):
        permutation_spec(model)


def test_parameters_that_do_not_fit_the_spec_are_named():
    model, params, _ = case("mlp", {}, "digits")
    spec, perm = permutation_spec(model), random_permutation(permutation_spec(model), seed=0)
    with pytest.raises(ValueError, match=r"params does not fit the spec: missing keys \['out.bias'\], unexpected keys \[\]"):
        apply_permutation(spec, perm, {k: v for k, v in params.items() if k != "out.bias"})
    with pytest.raises(ValueError, match=r"unexpected keys \['extra'\]"):
        apply_permutation(spec, perm, {**params, "extra": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"params\['fc1.weight'\] has shape \(32, 64\); axis 0 is reordered by permutation 'fc1' of 64 units"):
        apply_permutation(spec, perm, {**params, "fc1.weight": torch.zeros(32, 64)})
    with pytest.raises(ValueError, match=r"params_b\['fc1.bias'\] has shape \(64, 1\); the spec needs a tensor with 1 axes"):
        weight_matching(spec, params, {**params, "fc1.bias": torch.zeros(64, 1)})


@pytest.mark.parametrize("bad, message", [
    ({"fc1": torch.arange(63)}, r"perm\['fc1'\] must be 64 integers .* shape \(63,\)"),
    ({"fc1": torch.arange(64.0)}, r"perm\['fc1'\] must be 64 integers .* dtype torch.float32"),
    ({"fc1": torch.zeros(64, dtype=torch.long)}, r"perm\['fc1'\] = \[0, 0, .* is not a permutation of 0..63"),
    ({}, r"missing permutations \['fc1'\], unknown permutations \[\]"),
    ({"fc1": torch.arange(64), "fc2": torch.arange(3)}, r"unknown permutations \['fc2'\]"),
])
def test_bad_permutations_are_refused_by_name(bad, message):
    model, params, _ = case("mlp", {}, "digits")
    with pytest.raises(ValueError, match=message):
        apply_permutation(permutation_spec(model), bad, params)


def test_bad_options_are_refused():
    model, params, x = case("mlp", {}, "digits")
    spec = permutation_spec(model)
    with pytest.raises(ValueError, match="max_iter=0 must be a positive int"):
        weight_matching(spec, params, params, max_iter=0)
    with pytest.raises(ValueError, match="seed='1' must be an int"):
        random_permutation(spec, "1")
    with pytest.raises(ValueError, match="x holds no examples"):
        activation_matching(model, params, params, x[:0])
    with pytest.raises(ValueError, match="permutation 'fc9' is not in this spec"):
        spec.axes_permuted_by("fc9")


def test_restarts_keep_the_best_of_several_local_optima(digits):
    """Coordinate descent stops in a local optimum that depends on the layer matched first."""
    trained = []
    for seed in (0, 1):
        net = sgdlab.make_model("mlp", digits, seed=seed, hidden=(32, 32, 32))
        sgdlab.train(net, digits, lr=0.1, batch_size=50, epochs=3, seed=seed, progress=False, evaluate=False)
        trained.append(sgdlab.model_params(net))
    a, b = trained
    spec = permutation_spec(net)
    aligned = lambda perm: sgdlab.distance(a, apply_permutation(spec, perm, b))
    runs = {r: aligned(weight_matching(spec, a, b, restarts=r)) for r in (1, 2, 3)}
    assert runs[3] <= runs[2] <= runs[1]  # restart 0 is the single start: more restarts never match worse
    problem = sgdlab.permutation.MatchingProblem(spec, a, b)
    each_start = [aligned({p: torch.from_numpy(pi) for p, pi in problem.coordinate_descent(100, 0, shift).items()})
                  for shift in range(3)]
    assert len(set(each_start)) > 1  # the starts end in different optima: the test says something
    assert runs[1] == each_start[0]
    assert runs[3] == pytest.approx(min(each_start), rel=1e-9)
    with pytest.raises(ValueError, match="restarts=0 must be a positive int"):
        weight_matching(spec, a, b, restarts=0)


def test_the_first_pass_matches_layer_by_layer_from_the_input():
    """Each layer is matched once the layer before it is: a planted permutation of a deep MLP is found in one pass."""
    model, params, _ = case("mlp", {"hidden": (32, 16), "batchnorm": True}, "digits")
    deeper = sgdlab.make_model("mlp", "digits", seed=0, hidden=(48, 32, 24, 16))
    for model, params in ((model, params), (deeper, sgdlab.model_params(deeper))):
        spec = permutation_spec(model)
        planted = random_permutation(spec, seed=8)
        found = weight_matching(spec, params, apply_permutation(spec, planted, params), max_iter=1)
        assert all(torch.equal(found[name], inverse_permutation(planted)[name]) for name in spec.sizes)
