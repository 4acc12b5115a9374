"""Training throughput: ``sgdlab.train`` against the DataLoader loop a student would write.

What is measured
----------------
Wall-clock seconds for ``epochs`` epochs of mini-batch SGD (lr 0.1, no momentum, batch size
100, cross-entropy), done two ways on the same model (``make_model(arch, data, seed=0)``,
rebuilt before every run so both start from the same weights), the same tensors and the
same optimiser (``torch.optim.SGD``):

* sgdlab: ``sgdlab.train(model, data, ..., evaluate=False, progress=False)``, with the data
  resident on the device and batches sliced there;
* plain: ``for x, y in DataLoader(TensorDataset(x, y), batch_size=100, shuffle=True)``, with
  each batch moved by ``x.to(device), y.to(device)``.

Each way is warmed up once (a few steps), then both are timed ``repetitions`` times,
alternating. For each case the JSON holds the median seconds, examples/s and steps/s of
each way and ``ratio = plain seconds / sgdlab seconds`` (above 1: sgdlab is faster), with
the issue's target (ratio >= 1 on the CPU, >= 5 on a GPU with the paper MLP on MNIST) and
whether it is met. Targets are recorded, never asserted.

Cases: the quick MLP on ``digits`` (CPU); the paper MLP on MNIST (CPU, and the GPU when
CUDA is present). Without MNIST on disk, MNIST is replaced by random data of the same
shapes (45,000 training images of 1x28x28); the JSON says so.

Run:  .venv/bin/python bench/train.py [--quick] [--out PATH]
"""

import statistics
import time
from itertools import islice

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import sgdlab
from machine import bench_arguments, describe_machine, write_result
from sgdlab.data import PAPER_TRAIN_SIZE, Dataset, steps_per_epoch

LR, BATCH_SIZE = 0.1, 100
WARMUP_STEPS = 20
CPU_TARGET, GPU_TARGET = 1.0, 5.0


def train_plain(model, data, device, epochs, max_steps=None):
    """The idiomatic loop; ``data`` stays where it is and each batch is moved to ``device``."""
    loader = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=BATCH_SIZE, shuffle=True)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.0)
    model.to(device).train()
    for _ in range(epochs):
        for x, y in islice(loader, max_steps):  # max_steps=None: the whole epoch
            x, y = x.to(device), y.to(device)
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()


def train_sgdlab(model, data, device, epochs, max_steps=None):
    """``sgdlab.train`` on ``data`` (already on ``device``), without evaluation or progress bar."""
    length = dict(steps=max_steps) if max_steps else dict(epochs=epochs)
    sgdlab.train(model, data, lr=LR, batch_size=BATCH_SIZE, momentum=0.0, evaluate=False, progress=False, **length)


def seconds(run, arch, data, device, epochs, max_steps=None):
    """Wall-clock seconds of one run, from a fresh model with the seed-0 weights."""
    model = sgdlab.make_model(arch, data, seed=0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    run(model, data, device, epochs, max_steps)
    if device.type == "cuda":
        torch.cuda.synchronize()  # the GPU may still be working when the loop returns
    return time.perf_counter() - start


def mnist_on_cpu():
    """(MNIST on the CPU, False), or (random data with MNIST's paper-split shapes, True) when it is not on disk."""
    try:
        return sgdlab.load_dataset("mnist", device="cpu"), False
    except FileNotFoundError:
        generator = torch.Generator().manual_seed(0)
        images = lambda n: torch.rand(n, 1, 28, 28, generator=generator) - 0.5  # MNIST's range after scaling
        labels = lambda n: torch.randint(0, 10, (n,), generator=generator)
        return Dataset("mnist", images(PAPER_TRAIN_SIZE), labels(PAPER_TRAIN_SIZE), images(10_000), labels(10_000), 10), True


def run_case(name, arch, data, synthetic, device, epochs, repetitions, target):
    """Warm up, time both loops alternately, and return the case's record."""
    device = torch.device(device)
    on_device = data.to(device)  # sgdlab keeps the data on the device; the plain loop reads `data` (CPU)
    runs = {"sgdlab": (train_sgdlab, on_device), "plain": (train_plain, data)}
    for run, run_data in runs.values():
        seconds(run, arch, run_data, device, 1, max_steps=WARMUP_STEPS)
    times = {way: [] for way in runs}
    for _ in range(repetitions):
        for way, (run, run_data) in runs.items():
            times[way].append(seconds(run, arch, run_data, device, epochs))
    steps = epochs * steps_per_epoch(data.n_train, BATCH_SIZE)
    record = dict(name=name, device=str(device), model=arch, dataset=data.name, synthetic=synthetic,
                  n_train=data.n_train, batch_size=BATCH_SIZE, epochs=epochs, steps=steps, repetitions=repetitions)
    for way, ts in times.items():
        median = statistics.median(ts)
        record[way] = dict(median_seconds=median, examples_per_second=epochs * data.n_train / median,
                           steps_per_second=steps / median, seconds=ts)
    record["ratio"] = record["plain"]["median_seconds"] / record["sgdlab"]["median_seconds"]
    record["target_ratio"] = target
    record["meets_target"] = record["ratio"] >= target
    return record



def print_table(cases):
    header = f"{'case':<30} {'device':<7} {'sgdlab s':>9} {'plain s':>9} {'sgdlab ex/s':>12} {'plain ex/s':>11} {'ratio':>6} {'target':>7}  met"
    print(header, "-" * len(header), sep="\n")
    for c in cases:
        s, p = c["sgdlab"], c["plain"]
        print(f"{c['name']:<30} {c['device']:<7} {s['median_seconds']:>9.3f} {p['median_seconds']:>9.3f} "
              f"{s['examples_per_second']:>12,.0f} {p['examples_per_second']:>11,.0f} {c['ratio']:>6.2f} "
              f"{'>= ' + format(c['target_ratio'], 'g'):>7}  {'yes' if c['meets_target'] else 'NO'}")


def main():
    parser = bench_arguments(__doc__, "train", "one timed repetition per case (a smoke test)")
    args = parser.parse_args()
    repetitions = 1 if args.quick else 5
    started, host = time.perf_counter(), describe_machine()  # the load average before we add ours

    digits = sgdlab.load_dataset("digits", device="cpu")
    mnist, synthetic = mnist_on_cpu()
    mnist_name = "mnist (synthetic)" if synthetic else "mnist"
    cases = [
        run_case("mlp / digits", "mlp", digits, False, "cpu", 10, repetitions, CPU_TARGET),
        run_case(f"mlp-paper / {mnist_name}", "mlp-paper", mnist, synthetic, "cpu", 1, repetitions, CPU_TARGET),
    ]
    if torch.cuda.is_available():
        cases.append(run_case(f"mlp-paper / {mnist_name}", "mlp-paper", mnist, synthetic, "cuda", 3, repetitions, GPU_TARGET))

    total = time.perf_counter() - started
    note = ("synthetic: random float32 images in [-0.5, 0.5) and random labels, with the shapes of "
            "MNIST's 45,000-image paper split (1x28x28, 10 classes), used because MNIST is not on disk")
    result = dict(benchmark="training throughput: sgdlab.train vs a DataLoader loop",
                  ratio="plain median seconds / sgdlab median seconds; above 1 means sgdlab is faster",
                  optimizer=f"torch.optim.SGD lr={LR} momentum=0", warmup_steps=WARMUP_STEPS,
                  synthetic_data=note if synthetic else None, total_seconds=round(total, 1),
                  machine=host, cases=cases)
    write_result(args.out, result)
    print_table(cases)
    print(f"\n{total:.0f} s in all; written to {args.out}")


if __name__ == "__main__":
    main()
