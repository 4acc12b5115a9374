"""The "A Walk with SGD" census: seconds per recorded SGD step, ``WalkRecorder`` against three other ways.

What is measured
----------------
For each of K consecutive SGD steps of epoch 1, the mean cross-entropy over the WHOLE
training set at the 11 points alpha = 0, 0.1, ..., 1 between the iterate before and after
the step (eval mode, no augmentation). Same model (``make_model(arch, data, seed=0)``), data,
lr and batch size, and so the same steps, for:

* ours: ``sgdlab.train(..., steps=K, callbacks=[WalkRecorder(epochs=[1], steps=K)])``;
  ``raw`` is that run's time / K, ``net`` subtracts the same run without the recorder.
  Ratios and targets use ``net`` (the census alone, like the others); ``raw`` ratios are kept too.
* naive: per step, deep-copy the model; per alpha, ``load_state_dict`` of the interpolated
  state and a full-set forward in chunks of ``CHUNK`` (the recorder's default chunk size).
* authors: the pipeline of Xing et al.: ``torch.save(model.state_dict())`` after every
  iteration during training (the saves are timed), then reload consecutive pairs and
  evaluate each point through ``DataLoader(TensorDataset(x, y), batch_size=100)`` with the
  data on the CPU and each batch moved to the device, as their code did.
* loss_landscapes: ``linear_interpolation(start, end, metric, steps=10)`` from PyPI, whose grid
  is alpha = 1/steps, ..., 1 (it omits 0), plus ``point(start, metric)`` for alpha = 0; the
  metric is the chunked full-set mean loss in eval mode. It moves parameters only, so the
  wrapper adds the floating buffers (BatchNorm statistics) to match the others in eval mode.

The iterates for the last three come from one training run that keeps every iterate. Each
way is warmed up on two steps, then timed ``repetitions`` times, alternating; medians are
reported. Losses are checked against the naive loop (max relative difference, goal 1e-5).
On CUDA, VGG-11 on CIFAR-10 (random data of its shapes when it is not on disk) is added, with
the census' FLOP rate against a measured large float32 matmul (with and without TF32).

Run:  .venv/bin/python bench/walk.py [--quick] [--out PATH]
"""

import copy, statistics, tempfile, time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import sgdlab
from machine import bench_arguments, describe_machine, write_result
from sgdlab.data import PAPER_TRAIN_SIZE, Dataset
from sgdlab.walk import WalkRecorder
from sgdlab.params import clone_params, model_params
from sgdlab.callbacks import Callback

try:
    import loss_landscapes
    from loss_landscapes.metrics.metric import Metric
    from loss_landscapes.model_interface.model_parameters import ModelParameters
    from loss_landscapes.model_interface.model_wrapper import SimpleModelWrapper
    PEER_ERROR = None
except ImportError as error:  # recorded in the JSON; the other ways still run
    loss_landscapes, PEER_ERROR, Metric, SimpleModelWrapper = None, repr(error), object, object

ALPHAS = tuple(i / 10 for i in range(11))
CHUNK = 4096            # WalkRecorder's default chunk_size
AUTHORS_BATCH = 100     # the authors' evaluation DataLoader batch size
TARGETS = {"cpu": {"naive": 1.25, "authors": 2.0, "loss_landscapes": 1.5}, "cuda": {"naive": 10.0}}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(device, fn, *args):
    """(seconds, result) of ``fn(*args)``, with the GPU's queued work included."""
    sync(device)
    start = time.perf_counter()
    result = fn(*args)
    sync(device)
    return time.perf_counter() - start, result


def train(c, k, callbacks=()):
    model = sgdlab.make_model(c["arch"], c["data"], seed=0)
    sgdlab.train(model, c["data"], lr=c["lr"], batch_size=c["batch"], steps=k, callbacks=list(callbacks),
                 evaluate=False, progress=False)


class KeepIterates(Callback):
    def __init__(self):
        self.params = []

    def on_train_begin(self, model, dataset):
        self.params.append(clone_params(model_params(model)))

    def on_step(self, step):
        self.params.append(clone_params(step.params_after))


class SaveEveryStep(Callback):
    """The authors' checkpointing: the whole state dict to disk after every iteration; saves are timed."""

    def __init__(self, folder, device):
        self.folder, self.device, self.seconds = Path(folder), device, 0.0

    def save(self, model, index):
        self.seconds += timed(self.device, torch.save, model.state_dict(), self.folder / f"{index}.pt")[0]

    def on_train_begin(self, model, dataset):
        self.save(model, 0)

    def on_step(self, step):
        self.save(step.model, step.index + 1)


def lerp_state(a, b, alpha):
    return {k: torch.lerp(a[k], b[k], alpha) if a[k].is_floating_point() else a[k] for k in a}


def ours(c, k):
    """(seconds with the recorder, seconds without, curves (k, 11))."""
    recorder = WalkRecorder(epochs=[1], steps=k, chunk_size=CHUNK)
    with_recorder = timed(c["device"], train, c, k, [recorder])[0]
    return with_recorder, timed(c["device"], train, c, k)[0], torch.as_tensor(recorder.result.curves_of(1))


def naive(c, iterates):
    x, y, curves = c["data"].x_train, c["data"].y_train, []
    for a, b in zip(iterates, iterates[1:]):
        model = copy.deepcopy(c["template"]).eval()
        row = []
        for alpha in ALPHAS:
            model.load_state_dict(lerp_state(a, b, alpha))
            total = 0.0
            with torch.no_grad():
                for s in range(0, len(x), CHUNK):
                    total += F.cross_entropy(model(x[s:s + CHUNK]), y[s:s + CHUNK], reduction="sum").item()
            row.append(total / len(x))
        curves.append(row)
    return torch.tensor(curves, dtype=torch.float64)


def authors(c, k):
    """(seconds: saving during training + everything after, curves)."""
    device, x, y = c["device"], c["data"].x_train.cpu(), c["data"].y_train.cpu()
    with tempfile.TemporaryDirectory() as folder:
        saver = SaveEveryStep(folder, device)
        train(c, k, [saver])

        def evaluate():
            model, loader, curves = copy.deepcopy(c["template"]).eval(), DataLoader(TensorDataset(x, y), batch_size=AUTHORS_BATCH), []
            for t in range(k):
                a, b = (torch.load(Path(folder) / f"{i}.pt", map_location=device, weights_only=True) for i in (t, t + 1))
                row = []
                for alpha in ALPHAS:
                    model.load_state_dict(lerp_state(a, b, alpha))
                    total = 0.0
                    with torch.no_grad():
                        for xb, yb in loader:
                            total += F.cross_entropy(model(xb.to(device)), yb.to(device), reduction="sum").item()
                    row.append(total / len(x))
                curves.append(row)
            return torch.tensor(curves, dtype=torch.float64)

        seconds, curves = timed(device, evaluate)
    return saver.seconds + seconds, curves


class WithBuffers(SimpleModelWrapper):
    """loss_landscapes moves ``parameters()`` only; BatchNorm's running statistics must move too."""

    def get_module_parameters(self):
        module = self.modules[0]
        return ModelParameters(list(module.parameters()) + [b for b in module.buffers() if b.is_floating_point()])


class FullSetLoss(Metric):
    """Mean cross-entropy over the whole set, in eval mode, in chunks of CHUNK."""

    def __init__(self, x, y):
        super().__init__()
        self.x, self.y = x, y

    def __call__(self, wrapper):
        wrapper.eval()
        with torch.no_grad():
            total = sum(F.cross_entropy(wrapper.forward(self.x[s:s + CHUNK]), self.y[s:s + CHUNK], reduction="sum").item()
                        for s in range(0, len(self.x), CHUNK))
        return total / len(self.x)


def peer(c, iterates):
    metric, curves = FullSetLoss(c["data"].x_train, c["data"].y_train), []
    for a, b in zip(iterates, iterates[1:]):
        start, end = copy.deepcopy(c["template"]), copy.deepcopy(c["template"])
        start.load_state_dict(a)
        end.load_state_dict(b)
        start, end = WithBuffers(start), WithBuffers(end)
        first = loss_landscapes.point(start, metric)  # alpha = 0, which linear_interpolation leaves out
        line = loss_landscapes.linear_interpolation(start, end, metric, steps=len(ALPHAS) - 1)  # alpha = 0.1 .. 1
        curves.append([first, *line])
    return torch.tensor(curves, dtype=torch.float64)


def run_case(name, arch, data, lr, batch, k, repetitions, note=None):
    device = data.device
    c = dict(arch=arch, data=data, lr=lr, batch=batch, device=device,
             template=sgdlab.make_model(arch, data, seed=0).to(device))
    keeper = KeepIterates()
    train(c, k, [keeper])
    iterates = keeper.params
    ways = {"naive": lambda n: timed(device, naive, c, iterates[:n + 1]),
            "authors": lambda n: authors(c, n)}
    if loss_landscapes is not None:
        ways["loss_landscapes"] = lambda n: timed(device, peer, c, iterates[:n + 1])
    ours(c, 2)  # warm-up
    for way in ways.values():
        way(2)
    times, curves = {"ours_raw": [], "ours_without_recorder": [], **{w: [] for w in ways}}, {}
    for _ in range(repetitions):
        with_recorder, without, curves["ours"] = ours(c, k)
        times["ours_raw"].append(with_recorder)
        times["ours_without_recorder"].append(without)
        for way, fn in ways.items():
            seconds, curves[way] = fn(k)
            times[way].append(seconds)
    per_step = {way: statistics.median(ts) / k for way, ts in times.items()}
    per_step["ours_net"] = per_step["ours_raw"] - per_step["ours_without_recorder"]
    reference = curves["naive"]
    rel = {way: float(((cv - reference).abs() / reference.abs()).max()) for way, cv in curves.items()}
    targets = TARGETS[device.type]
    ratios = {way: per_step[way] / per_step["ours_net"] for way in ways}
    ratios_raw = {way: per_step[way] / per_step["ours_raw"] for way in ways}
    record = dict(name=name, model=arch, dataset=data.name, note=note, device=str(device), n_train=data.n_train,
                  lr=lr, batch_size=batch, steps=k, repetitions=repetitions, chunk_size=CHUNK,
                  seconds_per_step=per_step, seconds=times, ratio_to_ours_net=ratios, ratio_to_ours_raw=ratios_raw,
                  targets=targets, meets_target={w: ratios[w] >= t for w, t in targets.items() if w in ratios},
                  meets_target_raw={w: ratios_raw[w] >= t for w, t in targets.items() if w in ratios_raw},
                  max_relative_loss_difference_vs_naive=rel, losses_agree_to_1e5=all(r <= 1e-5 for r in rel.values()),
                  mean_curve=curves["ours"].mean(0).tolist())
    if device.type == "cuda":
        record["throughput"] = throughput(c, per_step["ours_net"])
    return record


def throughput(c, seconds_per_step):
    """The census' FLOP rate (10 new full-set evaluations per step) against large float32 matmuls."""
    from torch.utils.flop_counter import FlopCounterMode
    x = c["data"].x_train
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        c["template"].eval()(x[:CHUNK])
    per_evaluation = counter.get_total_flops() * len(x) / min(CHUNK, len(x))
    achieved = (len(ALPHAS) - 1) * per_evaluation / seconds_per_step
    a = torch.randn(8192, 8192, device=x.device)
    rates, tf32 = {}, torch.backends.cuda.matmul.allow_tf32
    for label, allow in (("fp32", False), ("tf32", True)):
        torch.backends.cuda.matmul.allow_tf32 = allow
        a @ a
        seconds = timed(x.device, lambda: [a @ a for _ in range(20)])[0]
        rates[label] = 20 * 2 * 8192 ** 3 / seconds
    torch.backends.cuda.matmul.allow_tf32 = tf32
    return dict(forward_flops_per_full_set=per_evaluation, census_flops_per_second=achieved,
                matmul_flops_per_second=rates, fraction_of_matmul={k: achieved / v for k, v in rates.items()},
                cudnn_allow_tf32=torch.backends.cudnn.allow_tf32, matmul_allow_tf32=tf32)


def cifar10_on(device):
    try:
        return sgdlab.load_dataset("cifar10", device=device), None
    except FileNotFoundError:
        g = torch.Generator(device=device).manual_seed(0)
        images = lambda n: torch.randn(n, 3, 32, 32, generator=g, device=device)  # standardised pixels
        labels = lambda n: torch.randint(0, 10, (n,), generator=g, device=device)
        note = (f"synthetic: CIFAR-10 is not under {sgdlab.data.data_root()}; random N(0, 1) images and random labels "
                f"of the paper's shapes ({PAPER_TRAIN_SIZE:,} x 3 x 32 x 32, 10 classes), no augmentation")
        return Dataset("cifar10", images(PAPER_TRAIN_SIZE), labels(PAPER_TRAIN_SIZE), images(10_000), labels(10_000), 10), note




def print_table(cases):
    ways = ("naive", "authors", "loss_landscapes")
    header = (f"{'case':<22} {'dev':<5} {'K':>3} {'ours net':>9} {'ours raw':>9} " + " ".join(f"{w:>20}" for w in ways)
              + "   max rel diff")
    print(header, "-" * len(header), sep="\n")
    for c in cases:
        s, cells = c["seconds_per_step"], []
        for w in ways:
            if w not in s:
                cells.append(f"{'-':>20}")
                continue
            mark = "" if w not in c["meets_target"] else (" ok" if c["meets_target"][w] else " NO")
            cells.append(f"{s[w] * 1e3:>9.2f} {c['ratio_to_ours_net'][w]:>6.2f}x{mark:<3}")
        print(f"{c['name']:<22} {c['device']:<5} {c['steps']:>3} {s['ours_net'] * 1e3:>9.2f} {s['ours_raw'] * 1e3:>9.2f} "
              + " ".join(cells) + f"   {max(c['max_relative_loss_difference_vs_naive'].values()):.1e}")
    print("ms per recorded step; (x) = method / ours net; ok / NO: against the target")


def main():
    parser = bench_arguments(__doc__, "walk", "few steps, one repetition (a smoke test)")
    args = parser.parse_args()
    reps = 1 if args.quick else 5
    started, host = time.perf_counter(), describe_machine('loss-landscapes')
    cases = [run_case("mlp / digits", "mlp", sgdlab.load_dataset("digits", device="cpu"), 0.1, 20,
                      10 if args.quick else 60, reps),
             run_case("cnn / mnist1d", "cnn", sgdlab.load_dataset("mnist1d", device="cpu"), 0.1, 100,
                      3 if args.quick else 10, min(reps, 3))]
    if torch.cuda.is_available():
        cifar, note = cifar10_on("cuda")
        cases.append(run_case("vgg11 / cifar10" + (" (synth)" if note else ""), "vgg11", cifar, 0.1, 100,
                              3 if args.quick else 10, min(reps, 3), note))
    total = time.perf_counter() - started
    result = dict(benchmark="A Walk with SGD census: full-set loss at 11 points between consecutive iterates",
                  alphas=list(ALPHAS), ratio="method seconds per step / ours net seconds per step; above 1: ours is faster",
                  loss_landscapes_error=PEER_ERROR, total_seconds=round(total, 1), machine=host, cases=cases)
    write_result(args.out, result)
    print_table(cases)
    print(f"\n{total:.0f} s in all; written to {args.out}")


if __name__ == "__main__":
    main()
