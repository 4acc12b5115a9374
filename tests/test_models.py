import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from sgdlab.models import ARCHITECTURES, DATASET_SHAPES, make_model

# Every dataset each architecture supports, with small widths to keep the tests fast.
IMAGES = ["digits", "mnist", "fashion-mnist", "cifar10", "cifar100"]
SUPPORTED = [
    ("mlp", list(DATASET_SHAPES), {}),
    ("mlp", list(DATASET_SHAPES), {"hidden": (8, 8), "batchnorm": True}),
    ("mlp-paper", list(DATASET_SHAPES), {}),
    ("cnn", ["mnist1d", *IMAGES], {"channels": (4, 8)}),
    ("cnn", ["mnist1d", *IMAGES], {"batchnorm": True}),
    ("vgg11", ["cifar10", "cifar100"], {"width": 0.125}),
    ("resnet20", IMAGES, {}),
    ("resnet56", IMAGES, {}),
    ("resnet18", IMAGES, {}),
]
CASES = [(arch, name, opts) for arch, names, opts in SUPPORTED for name in names]


def n_parameters(model):
    return sum(p.numel() for p in model.parameters())


def weighted_convs(model):
    """3x3 convs (the stem and the blocks), leaving out 1x1 projection shortcuts."""
    return [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]


@pytest.mark.parametrize("arch, name, options", CASES, ids=str)
def test_every_arch_gives_logits_of_shape_batch_by_classes(arch, name, options):
    torch.manual_seed(0)
    shape, num_classes = DATASET_SHAPES[name]
    model = make_model(arch, name, **options)
    logits = model(torch.randn(3, *shape))
    assert logits.shape == (3, num_classes)
    assert logits.dtype == torch.float32


def test_every_arch_is_tested():
    assert {arch for arch, _, _ in SUPPORTED} == set(ARCHITECTURES)


def test_mlp_paper_on_mnist_is_784_500_350_10_with_batchnorm():
    model = make_model("mlp-paper", "mnist")
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert shapes == {
        "fc1.weight": (500, 784), "fc1.bias": (500,), "bn1.weight": (500,), "bn1.bias": (500,),
        "fc2.weight": (350, 500), "fc2.bias": (350,), "bn2.weight": (350,), "bn2.bias": (350,),
        "out.weight": (10, 350), "out.bias": (10,),
    }
    assert "bn1.running_mean" in model.state_dict()
    linear = 784 * 500 + 500 + 500 * 350 + 350 + 350 * 10 + 10
    batchnorm = 2 * (500 + 350)
    assert n_parameters(model) == linear + batchnorm == 573_060


def test_mlp_paper_batchnorm_can_be_turned_off_but_not_its_sizes():
    model = make_model("mlp-paper", "mnist", batchnorm=False)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in model.modules())
    with pytest.raises(ValueError, match="'hidden'"):
        make_model("mlp-paper", "mnist", hidden=(10,))


def test_mlp_parameter_names_are_fc_bn_out():
    names = set(make_model("mlp", "moons", hidden=(5, 6), batchnorm=True).state_dict())
    assert {"fc1.weight", "bn1.running_mean", "fc2.bias", "bn2.weight", "out.bias"} <= names


def test_vgg11_on_cifar10_is_configuration_a_with_512_512_10_classifier():
    model = make_model("vgg11", "cifar10")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 256, 512, 512, 512, 512]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 5
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 512), (512, 512), (512, 10)]
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())
    conv_sizes = [(3, 64), (64, 128), (128, 256), (256, 256),
                  (256, 512), (512, 512), (512, 512), (512, 512)]
    conv = sum(c_in * c_out * 9 for c_in, c_out in conv_sizes)  # no bias before BatchNorm
    batchnorm = sum(2 * c_out for _, c_out in conv_sizes)
    classifier = (512 * 512 + 512) * 2 + 512 * 10 + 10
    assert n_parameters(model) == conv + batchnorm + classifier == 9_753_674


@pytest.mark.parametrize("arch, convs", [("resnet20", 19), ("resnet56", 55), ("resnet18", 17)])
def test_resnet_depth_counts_stem_and_block_convs_plus_the_linear(arch, convs):
    model = make_model(arch, "cifar10")
    assert len(weighted_convs(model)) == convs
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 1


def test_resnet20_widths_strides_and_projection_shortcuts():
    model = make_model("resnet20", "cifar10", width=2)
    assert [b.conv2.out_channels for b in model.stage1] == [32] * 3
    assert model.stage2[0].conv1.stride == (2, 2) and model.stage3[0].conv1.stride == (2, 2)
    assert model.head.in_features == 128
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    projections = [c for c in convs if c.kernel_size == (1, 1)]
    assert len(projections) == 2 and all(p.stride == (2, 2) for p in projections)


def test_resnet18_widths_are_64_to_512_with_stride_1_stem():
    model = make_model("resnet18", "cifar10")
    assert model.stem.conv.stride == (1, 1)
    assert [stage[0].conv1.out_channels for stage in
            (model.stage1, model.stage2, model.stage3, model.stage4)] == [64, 128, 256, 512]
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())


def test_resnet_parameter_names_follow_the_documented_scheme():
    names = set(make_model("resnet20", "cifar10").state_dict())
    assert {
        "stem.conv.weight", "stem.bn.weight", "stem.bn.running_var",
        "stage1.0.conv1.weight", "stage1.0.bn1.bias", "stage1.2.conv2.weight",
        "stage1.2.bn2.running_mean", "stage2.0.shortcut.conv.weight",
        "stage2.0.shortcut.bn.running_mean", "stage3.2.bn2.weight", "head.weight", "head.bias",
    } <= names
    assert not any(name.startswith(("stage1.0.shortcut", "stage2.1.shortcut")) for name in names)
    assert not any("conv" in name and name.endswith(".bias") for name in names)


def test_make_model_accepts_a_dataset_object():
    torch.manual_seed(0)
    dataset = SimpleNamespace(name="tiny", input_shape=(3, 12, 12), num_classes=5)
    for arch in ("mlp", "cnn", "resnet20"):
        assert make_model(arch, dataset)(torch.randn(2, 3, 12, 12)).shape == (2, 5)


@pytest.mark.parametrize("call, bad", [
    (lambda: make_model("foo", "mnist"), "arch='foo'"),
    (lambda: make_model("mlp", "imagenet"), "dataset='imagenet'"),
    (lambda: make_model("mlp", "mnist", depth=3), "'depth'"),
    (lambda: make_model("mlp", "mnist", hidden=(64, 0)), "hidden=(64, 0)"),
    (lambda: make_model("mlp", "mnist", batchnorm="yes"), "batchnorm='yes'"),
    (lambda: make_model("cnn", "mnist", channels=()), "channels=()"),
    (lambda: make_model("vgg11", "cifar10", width=0), "width=0"),
    (lambda: make_model("resnet20", "cifar10", width=0.5), "width=0.5"),
    (lambda: make_model("cnn", "moons"), "(2,)"),
    (lambda: make_model("vgg11", "digits"), "(1, 8, 8)"),
    (lambda: make_model("resnet20", "mnist1d"), "(1, 40)"),
    (lambda: make_model("cnn", SimpleNamespace(name="short", input_shape=(1, 3), num_classes=2)),
     "(1, 3)"),
], ids=["arch", "dataset", "option", "hidden", "batchnorm", "channels", "vgg-width",
        "resnet-width", "cnn-on-moons", "vgg11-on-digits", "resnet-on-signal",
        "cnn-on-too-short-signal"])
def test_user_errors_raise_value_error_naming_the_bad_value(call, bad):
    with pytest.raises(ValueError, match=re.escape(bad)):
        call()


def test_error_messages_list_what_is_allowed():
    with pytest.raises(ValueError, match=", ".join(ARCHITECTURES)):
        make_model("foo", "mnist")
    with pytest.raises(ValueError, match="accepted: hidden, batchnorm"):
        make_model("mlp", "mnist", depth=3)
    with pytest.raises(ValueError, match="cifar10"):
        make_model("mlp", "imagenet")
    with pytest.raises(ValueError, match="32x32"):
        make_model("vgg11", "digits")


def test_dataset_without_shape_attributes_is_a_type_error_naming_what_is_missing():
    with pytest.raises(TypeError, match="input_shape, num_classes"):
        make_model("mlp", SimpleNamespace(name="half"))
