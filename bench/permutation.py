"""Weight matching: ``sgdlab.weight_matching`` against the PyPI package ``rebasin``, and the memory of
d(w_N, w_M) over a long trajectory.

What is measured
----------------
* Pairs of MLPs (the quick MLP widened to hidden (128, 128), on ``digits``), each trained 3
  epochs of SGD from its own seed: seconds to find the permutation of b that brings it closest
  to a, and the L2 distance after alignment, for
  - sgdlab: ``weight_matching(permutation_spec(model), params_a, params_b)``, its defaults (one
    start: a layer-wise first pass from the input, then coordinate descent), and, to show what
    more starts buy, the best of two starts (``restarts=2``, recorded as ``sgdlab_two_starts``);
  - rebasin: ``PermutationCoordinateDescent(model_a, model_b, x[:8]).rebasin()`` (its set-up,
    which traces the model, is timed separately from the matching itself).
  Both maximise sum over layers of <W_a, P W_b> by coordinate descent with
  ``scipy.optimize.linear_sum_assignment`` (in rebasin 0.0.47 a bias adds the same number to
  every entry of its cost matrix, so biases do not vote); they stop in different local optima.
  rebasin visits its permutations in an order drawn from torch's global generator, so its
  result can change from one repetition to the next: its ``distances_after`` lists every
  repetition's, and ``distance_ratio`` compares sgdlab with the smallest of them.
* Planted permutations: b = a with a random permutation applied; both must return distance 0.
* sgdlab's matching time for VGG-11 and ResNet-20 (random initialisations, CIFAR-10 shapes).
* Memory: a trajectory of ``--snapshots`` snapshots (default 2,000) of a 1M-parameter model is
  written in the on-disk format of :class:`sgdlab.trajectory.SnapshotRecorder`; a fresh process
  computes d(w_0, w_M) for all M and reports its resident memory after ``import sgdlab`` and its
  peak while computing (Linux: the peak is reset after the import through /proc/self/clear_refs);
  the target (< 500 MB) applies to what the distances add.

Targets (recorded, never asserted), on every pair: sgdlab (its defaults) at least 2x faster than
rebasin's matching on the CPU (``speedup``: median seconds, set-up excluded), with the same or a
smaller final distance (``distance_ratio`` <= 1). Medians of 9 repetitions (1 with ``--quick``),
the ways alternating within each; one torch thread.

Run:  .venv/bin/python bench/permutation.py [--quick] [--out PATH]
"""

import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import torch

import sgdlab
from machine import bench_arguments, describe_machine, write_result
from sgdlab.data import Dataset
from sgdlab.trajectory import META_FILE, SNAPSHOT_FILE, _record_dtype

try:
    from rebasin import PermutationCoordinateDescent
    PEER_ERROR = None
except ImportError as error:  # recorded in the JSON; sgdlab's numbers are still measured
    PermutationCoordinateDescent, PEER_ERROR = None, repr(error)

THREADS = 1
HIDDEN = (128, 128)
SPEED_TARGET = 2.0
MEMORY_TARGET_MB = 500


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def trained_pair(data, seed_a, seed_b):
    models = []
    for seed in (seed_a, seed_b):
        model = sgdlab.make_model("mlp", data, seed=seed, hidden=HIDDEN)
        sgdlab.train(model, data, lr=0.1, batch_size=100, epochs=3, seed=seed, progress=False, evaluate=False)
        models.append(model)
    return models


def ours(model_a, model_b, restarts=1):
    spec = sgdlab.permutation_spec(model_a)
    a, b = sgdlab.model_params(model_a), sgdlab.model_params(model_b)
    seconds, perm = timed(lambda: sgdlab.weight_matching(spec, a, b, restarts=restarts))
    return seconds, 0.0, sgdlab.distance(a, sgdlab.apply_permutation(spec, perm, b))


def peer(model_a, model_b, x):
    b = copy.deepcopy(model_b)
    setup, matcher = timed(PermutationCoordinateDescent, model_a, b, x[:8])
    seconds, _ = timed(matcher.rebasin)
    return seconds, setup, sgdlab.distance(sgdlab.model_params(model_a), sgdlab.model_params(b))


def compare(name, model_a, model_b, x, repetitions):
    ways = {"sgdlab": lambda: ours(model_a, model_b), "sgdlab_two_starts": lambda: ours(model_a, model_b, restarts=2)}
    if PermutationCoordinateDescent is not None:
        ways["rebasin"] = lambda: peer(model_a, model_b, x)
    runs = {w: [] for w in ways}
    for _ in range(repetitions):
        for way, fn in ways.items():
            runs[way].append(fn())
    row = dict(name=name, before=sgdlab.distance(sgdlab.model_params(model_a), sgdlab.model_params(model_b)))
    for way, results in runs.items():
        row[way] = dict(median_seconds=statistics.median(r[0] for r in results),
                        median_setup_seconds=statistics.median(r[1] for r in results),
                        distance_after=results[-1][2])
    if "rebasin" in row:
        row["rebasin"]["distances_after"] = [r[2] for r in runs["rebasin"]]
        smallest = min(row["rebasin"]["distances_after"])
        row["speedup"] = row["rebasin"]["median_seconds"] / row["sgdlab"]["median_seconds"]
        row["speedup_with_setup"] = ((row["rebasin"]["median_seconds"] + row["rebasin"]["median_setup_seconds"])
                                     / row["sgdlab"]["median_seconds"])
        row["distance_ratio"] = row["sgdlab"]["distance_after"] / smallest \
            if smallest > 0 else (0.0 if row["sgdlab"]["distance_after"] == 0 else float("inf"))
    return row


def big_models():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(8, 3, 32, 32, generator=g)
    data = Dataset("cifar10", images, torch.arange(8) % 10, images, torch.arange(8) % 10, 10)
    rows = []
    for arch in ("vgg11", "resnet20"):
        a, b = sgdlab.make_model(arch, data, seed=0), sgdlab.make_model(arch, data, seed=1)
        seconds, _, after = ours(a, b)
        rows.append(dict(arch=arch, parameters=sum(p.numel() for p in a.parameters()), seconds=seconds,
                         before=sgdlab.distance(sgdlab.model_params(a), sgdlab.model_params(b)), distance_after=after))
    return rows


def write_trajectory(folder: Path, snapshots: int, size: int):
    """A trajectory in SnapshotRecorder's format: a random walk, one record at a time."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / META_FILE).write_text(json.dumps(dict(format=1, every=1, names=["w"], shapes=[[size]])))
    record = np.zeros(1, dtype=_record_dtype(size))
    rng = np.random.default_rng(0)
    w = rng.standard_normal(size, dtype=np.float32)
    with open(folder / SNAPSHOT_FILE, "wb") as f:
        for step in range(snapshots):
            w += 0.01 * rng.standard_normal(size, dtype=np.float32)
            record["step"], record["weights"] = step, w
            record["crc"] = zlib.crc32(record["weights"].tobytes())
            f.write(record.tobytes())


MEASURE = """
import sys, time
from sgdlab.trajectory import Trajectory

def status(key):  # kB, from the kernel's account of this process
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))

baseline = status("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current size
start = time.perf_counter()
d = Trajectory(sys.argv[1]).distances(0)
print(len(d), float(d[-1]), time.perf_counter() - start, baseline, status("VmHWM:"))
"""


def memory(snapshots: int, size: int = 1_000_000):
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        write_trajectory(Path(folder), snapshots, size)
        written = time.perf_counter() - start
        out = subprocess.run([sys.executable, "-c", MEASURE, folder], capture_output=True, text=True, check=True)
        count, last, seconds, baseline_kb, max_rss_kb = out.stdout.split()
    baseline_mb, peak_mb = int(baseline_kb) / 1024, int(max_rss_kb) / 1024
    return dict(snapshots=int(count), parameters=size, file_gb=snapshots * (size * 4 + 12) / 1e9,
                write_seconds=written, distances_seconds=float(seconds), last_distance=float(last),
                resident_mb_after_importing_sgdlab=baseline_mb, peak_resident_mb=peak_mb,
                peak_increase_mb=peak_mb - baseline_mb, target_mb=MEMORY_TARGET_MB,
                meets_target=peak_mb - baseline_mb < MEMORY_TARGET_MB,
                note="the target applies to what the distances add; importing sgdlab (torch, CUDA build) is the baseline")



def main():
    parser = bench_arguments(__doc__, "permutation", "one pair, one repetition, 100 snapshots (a smoke test)")
    parser.add_argument("--snapshots", type=int, default=None, help="snapshots of the memory test (default 2,000)")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    reps = 1 if args.quick else 9
    started, host = time.perf_counter(), describe_machine('rebasin')
    data = sgdlab.load_dataset("digits", device="cpu")
    pairs = []
    for seed in range(1 if args.quick else 5):
        a, b = trained_pair(data, 2 * seed, 2 * seed + 1)
        pairs.append(compare(f"trained MLP pair {seed}", a, b, data.x_train, reps))
        spec = sgdlab.permutation_spec(a)
        planted = copy.deepcopy(a)
        planted.load_state_dict(sgdlab.apply_permutation(spec, sgdlab.random_permutation(spec, seed), sgdlab.model_params(a)))
        pairs.append(compare(f"planted permutation {seed}", a, planted, data.x_train, reps))
    summary = {}
    if PermutationCoordinateDescent is not None:
        summary = dict(median_speedup=statistics.median(p["speedup"] for p in pairs),
                       worst_speedup=min(p["speedup"] for p in pairs),
                       worst_distance_ratio=max(p["distance_ratio"] for p in pairs),
                       speed_target=SPEED_TARGET)
        summary["meets_speed_target"] = summary["worst_speedup"] >= SPEED_TARGET
        summary["same_or_smaller_distance_everywhere"] = summary["worst_distance_ratio"] <= 1 + 1e-9
    result = dict(benchmark="weight matching: sgdlab vs rebasin; memory of trajectory distances",
                  mlp_hidden=HIDDEN, rebasin_error=PEER_ERROR, machine=host, pairs=pairs, summary=summary,
                  large_models=big_models(),
                  memory=memory(args.snapshots or (100 if args.quick else 2000)))
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    write_result(args.out, result)
    for p in pairs:
        line = f"{p['name']:<24} before {p['before']:.3f}  sgdlab {p['sgdlab']['median_seconds'] * 1e3:7.1f} ms -> {p['sgdlab']['distance_after']:.4f}"
        if "rebasin" in p:
            line += (f"  rebasin {p['rebasin']['median_seconds'] * 1e3:7.1f} ms (+{p['rebasin']['median_setup_seconds'] * 1e3:.0f} ms set-up)"
                     f" -> {p['rebasin']['distance_after']:.4f}  speedup {p['speedup']:.1f}x")
        print(line)
    print("summary", json.dumps(summary))
    print("large models", json.dumps(result["large_models"]))
    print("memory", json.dumps(result["memory"]))
    print(f"{result['total_seconds']} s; written to {args.out}")


if __name__ == "__main__":
    main()
