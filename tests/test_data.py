"""Tests of sgdlab.data: the data sets, their splits and scaling, mini-batches and augmentation.

The torchvision sets go through torchvision's own readers: tiny files in the real on-disk
formats are written under a temporary root. No test downloads anything (sockets are refused).
"""

import socket
import struct

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd

import sgdlab
from sgdlab import data
from sgdlab.data import Augmentation, Dataset, epoch_batches, steps_per_epoch


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("tests/test_data.py must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# --------------------------------------------------------------------------------------------
# Writers for the on-disk formats torchvision reads


def write_idx(path, array):
    """An IDX file as distributed by LeCun: magic 0x0800 | ndim (2049 labels, 2051 images), big-endian sizes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


def python2_pickle(mapping):
    """``mapping`` (str -> int or list of str) pickled byte for byte as Python 2's cPickle (protocol 2) did.

    The CIFAR ``batches.meta`` / ``meta`` files are such pickles, and torchvision checks their md5
    sums with a module-level function we may not replace, so the fixtures write the real bytes.
    """
    out, memo = [b"\x80\x02}q\x01("], 1

    def put(blob):
        nonlocal memo
        memo += 1
        assert memo < 256
        out.append(blob + b"q" + bytes([memo]))

    def string(s):
        put(b"U" + bytes([len(s)]) + s.encode("ascii"))

    for key, value in mapping.items():
        string(key)
        if isinstance(value, int):
            out.append(b"M" + struct.pack("<H", value))
        else:
            put(b"]")
            out.append(b"(")
            for item in value:
                string(item)
            out.append(b"e")
    out.append(b"u.")
    return b"".join(out)


CIFAR10_NAMES = "airplane automobile bird cat deer dog frog horse ship truck".split()
CIFAR100_FINE = """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile
cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower
leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter
palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket
rose sea seal shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper
table tank telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf
woman worm""".split()
CIFAR100_COARSE = """aquatic_mammals fish flowers food_containers fruit_and_vegetables
household_electrical_devices household_furniture insects large_carnivores large_man-made_outdoor_things
large_natural_outdoor_scenes large_omnivores_and_herbivores medium_mammals non-insect_invertebrates
people reptiles small_mammals trees vehicles_1 vehicles_2""".split()


def write_batch(path, images, labels_key, labels):
    """A CIFAR batch: ``data`` uint8 (N, 3072) in R, G, B planes of 32 x 32, row-major; labels a list.

    The originals are Python 2 pickles whose str keys torchvision reads back as str
    (``encoding="latin1"``), so the keys here are str too.
    """
    import pickle

    entry = {"data": images.reshape(len(images), 3072), labels_key: [int(v) for v in labels]}
    path.write_bytes(pickle.dumps(entry, protocol=2))


def random_images(rng, n, shape):
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    images[0] = 0      # one all-black image: it must come out as the augmentation's fill value
    images[1] = 255
    return images


@pytest.fixture
def mnist_like_files(tmp_path):
    """Writes 12 training and 5 test images in the IDX layout of ``torchvision.datasets.<cls>``."""

    def write(cls):
        rng = np.random.default_rng(0)
        raw = tmp_path / cls.__name__ / "raw"      # torchvision: root/<ClassName>/raw
        raw.mkdir(parents=True)
        files = {
            "train": (random_images(rng, 12, (28, 28)), rng.integers(0, 10, 12)),
            "t10k": (random_images(rng, 5, (28, 28)), rng.integers(0, 10, 5)),
        }
        for prefix, (images, labels) in files.items():
            write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
            write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        return tmp_path, files

    return write


@pytest.fixture
def cifar_files(tmp_path, monkeypatch):
    """Writes tiny CIFAR-10 (5 batches of 4 + 6 test) and CIFAR-100 (20 + 6) sets under tmp_path.

    Only the md5 check of the data batches is bypassed; the meta files carry their real bytes.
    """
    monkeypatch.setattr(tvd.CIFAR10, "_check_integrity", lambda self: True)  # CIFAR100 inherits it
    rng = np.random.default_rng(1)

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    train10 = random_images(rng, 20, (3, 32, 32)), rng.integers(0, 10, 20)
    test10 = random_images(rng, 6, (3, 32, 32)), rng.integers(0, 10, 6)
    for i in range(5):
        part = slice(4 * i, 4 * i + 4)
        write_batch(folder / f"data_batch_{i + 1}", train10[0][part], "labels", train10[1][part])
    write_batch(folder / "test_batch", *test10[:1], "labels", test10[1])
    meta = {"num_cases_per_batch": 10000, "label_names": CIFAR10_NAMES, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(python2_pickle(meta))

    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    train100 = random_images(rng, 20, (3, 32, 32)), rng.integers(0, 100, 20)
    test100 = random_images(rng, 6, (3, 32, 32)), rng.integers(0, 100, 6)
    write_batch(folder / "train", train100[0], "fine_labels", train100[1])
    write_batch(folder / "test", test100[0], "fine_labels", test100[1])
    meta = {"fine_label_names": CIFAR100_FINE, "coarse_label_names": CIFAR100_COARSE}
    (folder / "meta").write_bytes(python2_pickle(meta))

    return tmp_path, {"cifar10": (train10, test10), "cifar100": (train100, test100)}


# --------------------------------------------------------------------------------------------
# torchvision sets


@pytest.mark.parametrize("name, cls", [("mnist", tvd.MNIST), ("fashion-mnist", tvd.FashionMNIST)])
def test_mnist_like_sets_are_read_from_sgdlab_data_and_scaled_to_pixels_over_255_minus_half(
    name, cls, mnist_like_files, monkeypatch
):
    """$SGDLAB_DATA is the root; x = pixel / 255 - 0.5, shape (N, 1, 28, 28); labels as written."""
    root, files = mnist_like_files(cls)
    monkeypatch.setenv("SGDLAB_DATA", str(root))
    monkeypatch.setattr(data, "PAPER_TRAIN_SIZE", 1_000)  # more than the file holds: all 12 train
    ds = sgdlab.load_dataset(name, device="cpu")

    (train_images, train_labels), (test_images, test_labels) = files["train"], files["t10k"]
    assert ds.name == name and ds.num_classes == 10 and ds.augmentation is None
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.x_test.shape == (5, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    expected = torch.from_numpy(train_images / 255.0 - 0.5).float()[:, None]
    assert torch.allclose(ds.x_train, expected, atol=1e-7)
    assert torch.allclose(ds.x_test, torch.from_numpy(test_images / 255.0 - 0.5).float()[:, None], atol=1e-7)
    assert ds.x_train[0].eq(-0.5).all() and ds.x_train[1].eq(0.5).all()
    assert ds.y_train.tolist() == train_labels.tolist() and ds.y_test.tolist() == test_labels.tolist()


@pytest.mark.parametrize("name, cls", [("mnist", tvd.MNIST), ("fashion-mnist", tvd.FashionMNIST)])
def test_mnist_like_training_set_keeps_only_the_first_paper_train_size_images(
    name, cls, mnist_like_files, monkeypatch
):
    """The paper split: training images 0 .. PAPER_TRAIN_SIZE-1 in file order; the test set whole."""
    root, files = mnist_like_files(cls)
    monkeypatch.setattr(data, "PAPER_TRAIN_SIZE", 3)  # fewer than the 5 test images, which all stay
    ds = sgdlab.load_dataset(name, device="cpu", root=root)

    train_images, train_labels = files["train"]
    assert ds.n_train == 3 and len(ds.x_test) == 5
    assert torch.allclose(ds.x_train, torch.from_numpy(train_images[:3] / 255.0 - 0.5).float()[:, None], atol=1e-7)
    assert ds.y_train.tolist() == train_labels[:3].tolist()


@pytest.mark.parametrize("name, classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_pixels_round_trip_in_channel_order_with_per_channel_standardisation(name, classes, cifar_files):
    """x[i, c, h, w] = (pixel(c, h, w) / 255 - mean[c]) / std[c] for the pixel stored in the batch files."""
    root, files = cifar_files
    (train_images, train_labels), (test_images, test_labels) = files[name]
    ds = sgdlab.load_dataset(name, device="cpu", root=root)

    mean = np.array(data.CIFAR_MEAN[name])[:, None, None]
    std = np.array(data.CIFAR_STD[name])[:, None, None]
    assert ds.num_classes == classes and ds.input_shape == (3, 32, 32)
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (6, 3, 32, 32)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert torch.allclose(ds.x_train, torch.from_numpy((train_images / 255.0 - mean) / std).float(), atol=1e-6)
    assert torch.allclose(ds.x_test, torch.from_numpy((test_images / 255.0 - mean) / std).float(), atol=1e-6)
    assert ds.y_train.tolist() == train_labels.tolist() and ds.y_test.tolist() == test_labels.tolist()


def test_cifar_red_green_and_blue_planes_are_not_swapped(cifar_files):
    """A pure-red image (R plane 255, G and B 0) comes out bright in channel 0 only."""
    root, _ = cifar_files
    image = np.zeros((1, 3, 32, 32), dtype=np.uint8)
    image[0, 0] = 255
    write_batch(root / "cifar-10-batches-py" / "test_batch", image, "labels", [3])
    ds = sgdlab.load_dataset("cifar10", device="cpu", root=root)
    mean, std = data.CIFAR_MEAN["cifar10"], data.CIFAR_STD["cifar10"]
    for c in range(3):
        pixel = 1.0 if c == 0 else 0.0
        assert torch.allclose(ds.x_test[0, c], torch.full((32, 32), (pixel - mean[c]) / std[c]))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_augmentation_is_crop_4_and_flip_padding_with_normalised_black(name, cifar_files):
    """The augmentation pads with the value a black pixel takes after normalisation (image 0 is black)."""
    root, _ = cifar_files
    ds = sgdlab.load_dataset(name, device="cpu", root=root)
    aug = ds.augmentation
    assert isinstance(aug, Augmentation) and aug.padding == 4 and aug.flip
    assert torch.allclose(ds.x_train[0], torch.tensor(aug.fill).view(3, 1, 1).expand(3, 32, 32))


def test_cifar_training_set_keeps_only_the_first_paper_train_size_images(cifar_files, monkeypatch):
    """Images 0 .. PAPER_TRAIN_SIZE-1 of the concatenated data_batch_1..5 train; the test batch is whole."""
    root, files = cifar_files
    (train_images, train_labels), _ = files["cifar10"]
    monkeypatch.setattr(data, "PAPER_TRAIN_SIZE", 5)  # cuts inside data_batch_2; fewer than the 6 test images
    ds = sgdlab.load_dataset("cifar10", device="cpu", root=root)
    assert ds.n_train == 5 and len(ds.x_test) == 6
    assert ds.y_train.tolist() == train_labels[:5].tolist()
    mean = np.array(data.CIFAR_MEAN["cifar10"])[:, None, None]
    std = np.array(data.CIFAR_STD["cifar10"])[:, None, None]
    assert torch.allclose(ds.x_train, torch.from_numpy((train_images[:5] / 255.0 - mean) / std).float(), atol=1e-6)


@pytest.mark.parametrize("name", data.TORCHVISION_DATASETS)
def test_missing_files_raise_file_not_found_naming_set_root_and_download(name, tmp_path):
    """Without download=True a missing set is a FileNotFoundError saying which set, where, and how to fetch it."""
    with pytest.raises(FileNotFoundError) as error:
        sgdlab.load_dataset(name, device="cpu", root=tmp_path)
    message = str(error.value)
    assert repr(name) in message and str(tmp_path) in message and "download=True" in message
    assert list(tmp_path.iterdir()) == []  # nothing fetched, nothing created


def test_data_root_prefers_argument_then_sgdlab_data_then_home_cache(monkeypatch, tmp_path):
    """root= wins over $SGDLAB_DATA, which wins over ~/.cache/sgdlab."""
    monkeypatch.setenv("SGDLAB_DATA", str(tmp_path / "env"))
    assert data.data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data.data_root() == tmp_path / "env"
    monkeypatch.delenv("SGDLAB_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.data_root() == tmp_path / "home" / ".cache" / "sgdlab"


def test_unknown_name_is_a_value_error_listing_the_allowed_names():
    """A misspelt name is rejected before anything is loaded, with every allowed name in the message."""
    with pytest.raises(ValueError) as error:
        sgdlab.load_dataset("cifar-10", device="cpu")
    message = str(error.value)
    assert "'cifar-10'" in message
    assert all(name in message for name in sgdlab.DATASETS)


# --------------------------------------------------------------------------------------------
# Bundled and generated sets


def test_digits_is_a_fixed_stratified_split_of_1347_and_450_scaled_to_unit_interval(digits):
    """Pixels / 16 in [0, 1]; 1,347 / 450; each class's share is the same in train and test."""
    assert digits.x_train.shape == (1347, 1, 8, 8) and digits.x_test.shape == (450, 1, 8, 8)
    assert digits.x_train.dtype == torch.float32 and digits.num_classes == 10
    assert digits.x_train.min() == 0.0 and digits.x_train.max() == 1.0
    train = torch.bincount(digits.y_train, minlength=10).double()
    test = torch.bincount(digits.y_test, minlength=10).double()
    everything = train + test
    assert torch.all((test - everything * 450 / 1797).abs() <= 1)
    again = sgdlab.load_dataset("digits", device="cpu", seed=7)  # the split ignores seed
    assert torch.equal(again.x_train, digits.x_train) and torch.equal(again.y_test, digits.y_test)


def test_mnist1d_has_4000_and_1000_examples_of_shape_1_by_40_reproducible_from_seed():
    """Same seed, regenerated from scratch (not from the cache): identical tensors."""
    ds = sgdlab.load_dataset("mnist1d", device="cpu", seed=0)
    assert ds.x_train.shape == (4000, 1, 40) and ds.x_test.shape == (1000, 1, 40)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert set(ds.y_train.tolist()) == set(range(10)) and ds.num_classes == 10
    fresh = data._mnist1d_arrays.__wrapped__(0)  # bypasses the lru_cache
    assert torch.equal(ds.x_train[:, 0], torch.as_tensor(fresh["x"], dtype=torch.float32))
    assert torch.equal(ds.y_train, torch.as_tensor(fresh["y"]))


def test_mnist1d_seed_changes_the_generated_data():
    """``seed`` reaches the generator: seed 1 is not seed 0."""
    a = sgdlab.load_dataset("mnist1d", device="cpu", seed=0)
    b = sgdlab.load_dataset("mnist1d", device="cpu", seed=1)
    assert not torch.equal(a.x_train, b.x_train)


def test_two_loads_of_mnist1d_share_no_memory():
    """Each Dataset owns its tensors, so editing one in place (say, relabelling) cannot change a later load.

    Checked without editing anything: an in-place edit here would leak into the cached arrays
    and into every other test of this process.
    """
    first = sgdlab.load_dataset("mnist1d", device="cpu", seed=0)
    again = sgdlab.load_dataset("mnist1d", device="cpu", seed=0)
    for field in ("x_train", "y_train", "x_test", "y_test"):
        a, b = getattr(first, field), getattr(again, field)
        assert a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr(), field


@pytest.mark.parametrize("name, n_train, n_test, classes", [("moons", 1000, 500, 2), ("spirals", 1050, 450, 3)])
def test_toy_2d_sets_have_documented_sizes_and_standardised_training_inputs(name, n_train, n_test, classes):
    """Two features; training inputs have mean 0 and standard deviation 1 per feature; every class present."""
    ds = sgdlab.load_dataset(name, device="cpu")
    assert ds.x_train.shape == (n_train, 2) and ds.x_test.shape == (n_test, 2)
    assert ds.num_classes == classes and set(ds.y_train.tolist()) == set(range(classes))
    assert torch.allclose(ds.x_train.double().mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(ds.x_train.double().std(0, unbiased=False), torch.ones(2, dtype=torch.float64), atol=1e-6)


@pytest.mark.parametrize("name", ["moons", "spirals"])
def test_toy_2d_sets_are_a_function_of_the_seed(name):
    """Same seed twice: identical tensors; another seed: different points."""
    a, b = sgdlab.load_dataset(name, device="cpu", seed=3), sgdlab.load_dataset(name, device="cpu", seed=3)
    c = sgdlab.load_dataset(name, device="cpu", seed=4)
    for field in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert not torch.equal(a.x_train, c.x_train)


# --------------------------------------------------------------------------------------------
# Mini-batches


def numbered_dataset(n=10, augmentation=None):
    """Example i has every input equal to i and label i, so a batch says which examples it holds."""
    x = torch.arange(n, dtype=torch.float32)[:, None, None, None].expand(n, 1, 4, 4).contiguous()
    y = torch.arange(n)
    return Dataset("numbered", x, y, x[:2], y[:2], n, augmentation)


def test_every_example_appears_exactly_once_per_epoch_with_inputs_matching_labels():
    """The batches of one epoch partition the training set, and x stays paired with y."""
    ds = numbered_dataset(10)
    batches = list(epoch_batches(ds, 4, torch.Generator().manual_seed(0)))
    seen = torch.cat([y for _, y in batches])
    assert sorted(seen.tolist()) == list(range(10))
    for x, y in batches:
        assert torch.equal(x[:, 0, 0, 0].long(), y)


def test_last_batch_is_the_remainder_and_steps_per_epoch_counts_it():
    """10 examples in batches of 4: sizes 4, 4, 2 (as a DataLoader with drop_last=False)."""
    batches = list(epoch_batches(numbered_dataset(10), 4, torch.Generator().manual_seed(0)))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    assert steps_per_epoch(10, 4) == 3 and steps_per_epoch(12, 4) == 3


def test_shuffling_is_seeded_and_fresh_each_epoch():
    """Same seed: same order; other seed: other order; the next epoch from one generator: a new order."""
    def order(generator):
        return torch.cat([y for _, y in epoch_batches(numbered_dataset(20), 6, generator)]).tolist()

    g = torch.Generator().manual_seed(0)
    first, second = order(g), order(g)
    assert first == order(torch.Generator().manual_seed(0))
    assert first != order(torch.Generator().manual_seed(1))
    assert first != second and first != list(range(20))


def test_shuffle_false_gives_the_stored_order():
    """shuffle=False walks the training set in order."""
    batches = epoch_batches(numbered_dataset(10), 3, torch.Generator().manual_seed(0), shuffle=False)
    assert torch.cat([y for _, y in batches]).tolist() == list(range(10))


def test_training_batches_are_augmented_reproducibly_from_the_same_generator():
    """A set with an augmentation gets augmented batches; one seed fixes order and augmentation."""
    ds = Dataset("images", torch.randn(8, 3, 6, 6, generator=torch.Generator().manual_seed(5)), torch.arange(8),
                 torch.zeros(1, 3, 6, 6), torch.zeros(1, dtype=torch.int64), 8,
                 Augmentation(padding=2, flip=True, fill=(0.0, 0.0, 0.0)))
    a = list(epoch_batches(ds, 8, torch.Generator().manual_seed(0)))
    b = list(epoch_batches(ds, 8, torch.Generator().manual_seed(0)))
    assert torch.equal(a[0][0], b[0][0]) and torch.equal(a[0][1], b[0][1])
    assert not torch.equal(a[0][0], ds.x_train[a[0][1]])  # augmented, not the stored images
    in_order = [next(epoch_batches(ds, 8, torch.Generator().manual_seed(s), shuffle=False))[0] for s in (0, 1)]
    assert not torch.equal(*in_order)  # the generator, not some other source, draws the crops and flips


# --------------------------------------------------------------------------------------------
# Augmentation


FILL = (-1.0, -2.0, -3.0)


def images(n=64, seed=0):
    """Random (n, 3, 8, 8) images, values far from FILL so that padding is recognisable."""
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) + 1.0


def window_offsets(out, x, padding, mirrored):
    """For each example, the (dy, dx) such that out is that window of the padded x (mirrored if asked), or None."""
    padded = torch.tensor(FILL).view(1, 3, 1, 1).expand(len(x), 3, 8 + 2 * padding, 8 + 2 * padding).clone()
    padded[:, :, padding:padding + 8, padding:padding + 8] = x
    found = []
    for i in range(len(x)):
        match = None
        for dy in range(2 * padding + 1):
            for dx in range(2 * padding + 1):
                window = padded[i, :, dy:dy + 8, dx:dx + 8]
                if torch.equal(out[i], window.flip(-1) if mirrored else window):
                    match = (dy, dx)
        found.append(match)
    return found


def test_augmentation_keeps_shape_and_dtype():
    """(B, C, H, W) in, (B, C, H, W) out, same dtype."""
    x = images(5)
    out = Augmentation(padding=4, flip=True, fill=FILL)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype


def test_random_crop_shifts_each_image_by_at_most_padding_and_fills_the_border():
    """Without flips every output is a window of the fill-padded image, offset -4..4, drawn per example."""
    x = images(200)
    out = Augmentation(padding=4, flip=False, fill=FILL)(x, torch.Generator().manual_seed(0))
    offsets = window_offsets(out, x, padding=4, mirrored=False)
    assert None not in offsets
    dys, dxs = {dy for dy, _ in offsets}, {dx for _, dx in offsets}
    assert dys == set(range(9)) and dxs == set(range(9))  # every shift from -4 to 4 occurs


def test_horizontal_flip_gives_exact_mirror_images_about_half_the_time():
    """With no padding each output is the image or its exact left-right mirror, and both occur."""
    x = images(64)
    out = Augmentation(padding=0, flip=True, fill=FILL)(x, torch.Generator().manual_seed(0))
    same = [torch.equal(o, i) for o, i in zip(out, x)]
    mirrored = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 16 <= sum(mirrored) <= 48


def test_crop_and_flip_together_give_a_mirrored_or_plain_window():
    """Each output is a window of the padded image, left as is or mirrored."""
    x = images(64)
    out = Augmentation(padding=4, flip=True, fill=FILL)(x, torch.Generator().manual_seed(1))
    plain = window_offsets(out, x, padding=4, mirrored=False)
    mirror = window_offsets(out, x, padding=4, mirrored=True)
    assert all(p is not None or m is not None for p, m in zip(plain, mirror))
    assert any(m is not None and p is None for p, m in zip(plain, mirror))


def test_augmentation_is_reproducible_from_the_generator_seed():
    """Same seed: identical output; another seed: different output."""
    x = images(16)
    aug = Augmentation(padding=4, flip=True, fill=FILL)
    a = aug(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, aug(x, torch.Generator().manual_seed(3)))
    assert not torch.equal(a, aug(x, torch.Generator().manual_seed(4)))


def test_dataset_to_keeps_everything_but_the_device():
    """Dataset.to moves the tensors and keeps name, classes and augmentation."""
    aug = Augmentation(padding=4, flip=True, fill=FILL)
    ds = numbered_dataset(6, aug)
    moved = ds.to("cpu")
    assert moved.augmentation is aug and moved.num_classes == 6 and moved.name == "numbered"
    assert torch.equal(moved.x_train, ds.x_train) and moved.input_shape == (1, 4, 4)
