"""The networks of the book, built by name: ``make_model(arch, dataset, **options)``.

Every model maps a float32 batch ``(B, *input_shape)`` to logits ``(B, num_classes)``.
Initialisation is PyTorch's default, drawn from ``seed`` (default 0) without touching the
global random generator, so the same seed gives the same network; no dropout anywhere.

- ``mlp``: flatten; per entry of ``hidden`` (default ``(64,)``) a Linear, BatchNorm1d if
  ``batchnorm`` (default off), ReLU; a Linear to the classes.
- ``mlp-paper``: the MLP of Xing et al. 2018, "A Walk with SGD": hidden (500, 350) with
  BatchNorm (784-500-350-10 on MNIST). Only ``batchnorm`` may be changed.
- ``cnn``: a small CNN for CPU runs, Conv1d on signals ``(C, L)``, Conv2d on images
  ``(C, H, W)``: per entry of ``channels`` (default ``(16, 32)``) a conv of width 3 with
  padding 1, BatchNorm if ``batchnorm`` (default off), ReLU, max-pool 2; global average
  pooling; a Linear to the classes.
- ``vgg11``: VGG configuration A (Simonyan & Zisserman 2015) for 32x32 images: 3x3 convs
  64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M (M: 2x2 max-pool), each followed by
  BatchNorm if ``batchnorm`` (default on) and ReLU; classifier 512-512-classes with ReLU,
  no dropout, as in Xing et al. ``width`` (default 1.0) scales every hidden width.
- ``resnet20``, ``resnet56``: the CIFAR ResNets of He et al. 2016 (section 4.2): 3x3 conv
  stem with 16 channels + BN + ReLU; three stages of n = 3 (resp. 9) basic blocks with 16,
  32, 64 channels, stride 2 at the first block of stages 2 and 3; global average pooling;
  a Linear to the classes. Shortcuts are identities, or 1x1 conv + BN where the shape
  changes (option B). Any image size works.
- ``resnet18``: ResNet-18 (He et al. 2016) in its CIFAR form: the same with a 64-channel
  stem (stride 1, no max-pool) and four stages of 2 blocks with 64, 128, 256, 512 channels.
  The ResNets take an integer ``width`` (default 1) multiplying every channel count.

Parameter names are regular, because ``permutation.py`` describes symmetries by name
(i counts from 1, j from 0; convs followed by BatchNorm have no bias, Linears do):

- mlp, mlp-paper: ``fc{i}``, ``bn{i}`` for hidden layer i; ``out`` for the last Linear.
- cnn: ``conv{i}``, ``bn{i}`` for block i; ``out``.
- vgg11: ``conv{i}``, ``bn{i}`` for conv i = 1..8; ``fc1``, ``fc2``, ``out``.
- ResNets: ``stem.conv``, ``stem.bn``; block j of stage i has ``stage{i}.{j}.conv1``,
  ``.bn1``, ``.conv2``, ``.bn2`` and, where the shape changes, ``.shortcut.conv`` and
  ``.shortcut.bn``; ``head`` is the Linear.
"""

import math
from collections import OrderedDict

import torch
from torch import nn

from .checks import check_seed

# name -> (shape of one example, number of classes)
DATASET_SHAPES = {
    "digits": ((1, 8, 8), 10),
    "mnist1d": ((1, 40), 10),
    "moons": ((2,), 2),
    "spirals": ((2,), 3),
    "mnist": ((1, 28, 28), 10),
    "fashion-mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
}

ARCHITECTURES = ("mlp", "mlp-paper", "cnn", "vgg11", "resnet20", "resnet56", "resnet18")

# arch -> the options it accepts, with their defaults
OPTIONS = {
    "mlp": {"hidden": (64,), "batchnorm": False},
    "mlp-paper": {"batchnorm": True},
    "cnn": {"channels": (16, 32), "batchnorm": False},
    "vgg11": {"width": 1.0, "batchnorm": True},
    "resnet20": {"width": 1},
    "resnet56": {"width": 1},
    "resnet18": {"width": 1},
}

PAPER_MLP_HIDDEN = (500, 350)
VGG11_LAYERS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
VGG11_CLASSIFIER = (512, 512)
# arch -> (basic blocks per stage, channels per stage at width 1)
RESNET_STAGES = {
    "resnet20": ((3, 3, 3), (16, 32, 64)),
    "resnet56": ((9, 9, 9), (16, 32, 64)),
    "resnet18": ((2, 2, 2, 2), (64, 128, 256, 512)),
}


class MLP(nn.Sequential):
    """Flatten; Linear ``fc{i}`` (+ BatchNorm1d ``bn{i}``) + ReLU per hidden size; ``out``."""

    def __init__(self, in_features, hidden, num_classes, batchnorm):
        layers = OrderedDict(flatten=nn.Flatten())
        for i, width in enumerate(hidden, start=1):
            layers[f"fc{i}"] = nn.Linear(in_features, width)
            if batchnorm:
                layers[f"bn{i}"] = nn.BatchNorm1d(width)
            layers[f"relu{i}"] = nn.ReLU()
            in_features = width
        layers["out"] = nn.Linear(in_features, num_classes)
        super().__init__(layers)


class SmallCNN(nn.Sequential):
    """The ``cnn``; ``spatial_dims`` is 1 for signals ``(C, L)``, 2 for images ``(C, H, W)``."""

    def __init__(self, in_channels, spatial_dims, channels, num_classes, batchnorm):
        conv, norm, pool, average = {
            1: (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d, nn.AdaptiveAvgPool1d),
            2: (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d),
        }[spatial_dims]
        layers = OrderedDict()
        for i, width in enumerate(channels, start=1):
            layers[f"conv{i}"] = conv(in_channels, width, 3, padding=1, bias=not batchnorm)
            if batchnorm:
                layers[f"bn{i}"] = norm(width)
            layers[f"relu{i}"] = nn.ReLU()
            layers[f"pool{i}"] = pool(2)
            in_channels = width
        layers["average"] = average(1)  # (B, C, *spatial) -> (B, C, 1...)
        layers["flatten"] = nn.Flatten()
        layers["out"] = nn.Linear(in_channels, num_classes)
        super().__init__(layers)


class VGG(nn.Sequential):
    """``layers``: conv widths and "M" (2x2 max-pool), bringing the image to 1x1; then
    Linear + ReLU per ``classifier`` width, and ``out``."""

    def __init__(self, in_channels, layers, classifier, num_classes, batchnorm):
        modules, conv_index, pool_index = OrderedDict(), 0, 0
        for entry in layers:
            if entry == "M":
                pool_index += 1
                modules[f"pool{pool_index}"] = nn.MaxPool2d(2)
                continue
            conv_index += 1
            modules[f"conv{conv_index}"] = nn.Conv2d(
                in_channels, entry, 3, padding=1, bias=not batchnorm
            )
            if batchnorm:
                modules[f"bn{conv_index}"] = nn.BatchNorm2d(entry)
            modules[f"relu{conv_index}"] = nn.ReLU()
            in_channels = entry
        modules["flatten"] = nn.Flatten()  # (B, C, 1, 1) -> (B, C)
        for i, width in enumerate(classifier, start=1):
            modules[f"fc{i}"] = nn.Linear(in_channels, width)
            modules[f"relu_fc{i}"] = nn.ReLU()
            in_channels = width
        modules["out"] = nn.Linear(in_channels, num_classes)
        super().__init__(modules)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU. The first conv and the
    shortcut carry ``stride``; the shortcut is 1x1 conv + BN when the shape changes."""

    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(OrderedDict(
                conv=nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                bn=nn.BatchNorm2d(out_channels),
            ))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.shortcut(x))


class ResNet(nn.Sequential):
    """Stem; stage i of ``blocks[i-1]`` basic blocks with ``widths[i-1]`` channels, stride 2
    at the first block of every stage but the first; global average pooling; ``head``."""

    def __init__(self, in_channels, blocks, widths, num_classes):
        modules = OrderedDict(stem=nn.Sequential(OrderedDict(
            conv=nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            bn=nn.BatchNorm2d(widths[0]),
            relu=nn.ReLU(),
        )))
        in_channels = widths[0]
        for i, (count, width) in enumerate(zip(blocks, widths), start=1):
            first = BasicBlock(in_channels, width, stride=1 if i == 1 else 2)
            rest = [BasicBlock(width, width, stride=1) for _ in range(count - 1)]
            modules[f"stage{i}"] = nn.Sequential(first, *rest)
            in_channels = width
        modules["average"] = nn.AdaptiveAvgPool2d(1)  # (B, C, H, W) -> (B, C, 1, 1)
        modules["flatten"] = nn.Flatten()
        modules["head"] = nn.Linear(in_channels, num_classes)
        super().__init__(modules)


def make_model(arch, dataset, *, seed=0, **options):
    """Build network ``arch`` (one of ``ARCHITECTURES``) for ``dataset``, on the CPU.

    ``dataset`` is a name in ``DATASET_SHAPES`` or an object with ``name``,
    ``input_shape`` (one example, without the batch axis) and ``num_classes``.
    ``seed`` fixes the initial weights (``None``: draw from torch's global generator).
    ``options`` are the architecture's options (see ``OPTIONS`` and the module docstring).
    Returns an ``nn.Module`` mapping ``(B, *input_shape)`` float32 to ``(B, num_classes)``;
    move it with ``.to(dataset.device)``.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch={arch!r} is not known; choose one of: {', '.join(ARCHITECTURES)}")
    name, shape, num_classes = _describe(dataset)
    for option in options:
        if option not in OPTIONS[arch]:
            raise ValueError(
                f"option {option!r} is not accepted by arch={arch!r}; "
                f"accepted: {', '.join(OPTIONS[arch])}"
            )
    chosen = {**OPTIONS[arch], **options}
    if seed is None:
        return _build(arch, name, shape, num_classes, chosen)
    check_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _build(arch, name, shape, num_classes, chosen)


def _build(arch, name, shape, num_classes, chosen):
    """The network, once the arguments are known to be valid (options filled in)."""
    if not isinstance(chosen.get("batchnorm", False), bool):
        raise ValueError(
            f"option batchnorm={chosen['batchnorm']!r} for arch={arch!r} must be True or False"
        )

    if arch == "mlp":
        hidden = _positive_ints(arch, "hidden", chosen["hidden"], allow_empty=True)
        return MLP(math.prod(shape), hidden, num_classes, chosen["batchnorm"])
    if arch == "mlp-paper":
        return MLP(math.prod(shape), PAPER_MLP_HIDDEN, num_classes, chosen["batchnorm"])
    if arch == "cnn":
        channels = _positive_ints(arch, "channels", chosen["channels"], allow_empty=False)
        if len(shape) not in (2, 3):
            raise _shape_error(arch, "signals (C, L) or images (C, H, W)", name, shape)
        smallest = 2 ** len(channels)  # each block halves every spatial size
        if min(shape[1:]) < smallest:
            raise _shape_error(arch, f"spatial sizes >= {smallest} with {len(channels)} blocks",
                               name, shape)
        return SmallCNN(shape[0], len(shape) - 1, channels, num_classes, chosen["batchnorm"])
    if arch == "vgg11":
        width = chosen["width"]
        if isinstance(width, bool) or not isinstance(width, (int, float)) or width <= 0:
            raise ValueError(f"option width={width!r} for arch='vgg11' must be a positive number")
        if len(shape) != 3 or shape[1:] != (32, 32):
            raise _shape_error(arch, "32x32 images (C, 32, 32)", name, shape)
        layers = [c if c == "M" else max(1, round(c * width)) for c in VGG11_LAYERS]
        classifier = [max(1, round(units * width)) for units in VGG11_CLASSIFIER]
        return VGG(shape[0], layers, classifier, num_classes, chosen["batchnorm"])
    # the ResNets
    width = chosen["width"]
    if not _is_positive_int(width):
        raise ValueError(f"option width={width!r} for arch={arch!r} must be a positive int")
    if len(shape) != 3:
        raise _shape_error(arch, "images (C, H, W)", name, shape)
    blocks, widths = RESNET_STAGES[arch]
    return ResNet(shape[0], blocks, [channels * width for channels in widths], num_classes)


def _describe(dataset):
    """(name, input_shape, num_classes) of a dataset name or dataset-like object."""
    if isinstance(dataset, str):
        if dataset not in DATASET_SHAPES:
            raise ValueError(
                f"dataset={dataset!r} is not known; choose one of: {', '.join(DATASET_SHAPES)}, "
                f"or pass an object with name, input_shape and num_classes"
            )
        shape, num_classes = DATASET_SHAPES[dataset]
        return dataset, shape, num_classes
    missing = [a for a in ("name", "input_shape", "num_classes") if not hasattr(dataset, a)]
    if missing:
        raise TypeError(
            f"dataset={dataset!r} has no {', '.join(missing)}; pass a name "
            f"({', '.join(DATASET_SHAPES)}) or an object with name, input_shape and num_classes"
        )
    return dataset.name, tuple(int(size) for size in dataset.input_shape), int(dataset.num_classes)


def _shape_error(arch, needs, name, shape):
    return ValueError(f"arch={arch!r} needs {needs}; dataset {name!r} has input_shape {shape}")


def _is_positive_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _positive_ints(arch, option, value, allow_empty):
    """``value`` as a tuple of positive ints, or ValueError naming ``option``."""
    if not (
        isinstance(value, (tuple, list))
        and (allow_empty or len(value) > 0)
        and all(map(_is_positive_int, value))
    ):
        kind = "tuple" if allow_empty else "non-empty tuple"
        raise ValueError(
            f"option {option}={value!r} for arch={arch!r} must be a {kind} of positive ints"
        )
    return tuple(value)
