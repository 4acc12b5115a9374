"""Ten seeds trained together: ``sgdlab.seeds.train_seeds`` against ten sequential ``sgdlab.train`` runs.

What is measured
----------------
The quick preset's MLP (``make_model("mlp", digits, seed=s)``: 64-64-10, ReLU) trained for
``EPOCHS`` epochs of plain SGD (lr 0.1, batch 100, momentum 0, no weight decay), with the
full training-set and test evaluation after every epoch, for seeds 0..9, two ways:

* sequential: for each seed, ``make_model(..., seed=s)`` then ``train(model, data, ...,
  seed=s, progress=False)``, one after the other;
* batched: ``train_seeds("mlp", data, range(10), ...)``: the ten seeds' parameters stacked,
  one ``vmap``-ed ``functional_call`` forward and one backward per step.

Both include building the models. The machine's cores are a resource either way may use:
each way is timed with ``torch.set_num_threads(t)`` for every ``t`` in ``THREADS`` (1 and
2), and judged at its best. Ten small sequential runs are bound by per-step overhead and
gain nothing from a second thread (they lose); the batched run's batched matrix products
are large enough to share out. For each thread count, each way is run once to warm up,
then timed ``repetitions`` times, alternating; medians are reported per thread count, and
the ratio (sequential / batched; above 1: batched is faster) of the best medians is the
judged speedup (the same-thread ratios are reported too). The final full training-set and
test losses of every seed are compared between the two ways (largest absolute
difference, goal 1e-5), and the final parameters (largest absolute difference, reported).
The same is done, reported but not judged, for the MLP with BatchNorm.

Targets (CPU): best sequential / best batched seconds >= 3 and final losses equal to 1e-5.
The load average is recorded: other work on the machine slows either way.

Run:  .venv/bin/python bench/seeds.py [--quick] [--out PATH]
"""

import os, statistics, time

import torch

import sgdlab
from machine import bench_arguments, describe_machine, write_result
from sgdlab.seeds import train_seeds

THREADS = (1, 2)
SEEDS = tuple(range(10))
LR, BATCH, EPOCHS = 0.1, 100, 20
TARGETS = {"speedup": 3.0, "final_loss_difference": 1e-5}


def sequential(data, options, epochs):
    """Ten ``sgdlab.train`` runs, one per seed: (histories, models)."""
    models = [sgdlab.make_model("mlp", data, seed=s, **options) for s in SEEDS]
    histories = [sgdlab.train(m, data, lr=LR, batch_size=BATCH, epochs=epochs, seed=s, progress=False)
                 for m, s in zip(models, SEEDS)]
    return histories, models


def batched(data, options, epochs):
    return train_seeds("mlp", data, SEEDS, lr=LR, batch_size=BATCH, epochs=epochs, **options)


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def run_case(name, data, options, epochs, repetitions):
    seconds, median = {}, {}
    for threads in THREADS:
        torch.set_num_threads(threads)
        (histories, models), result = sequential(data, options, epochs), batched(data, options, epochs)  # warm-up
        seconds[threads] = {"sequential": [], "batched": []}
        for _ in range(repetitions):
            seconds[threads]["sequential"].append(timed(sequential, data, options, epochs)[0])
            seconds[threads]["batched"].append(timed(batched, data, options, epochs)[0])
        median[threads] = {way: statistics.median(s) for way, s in seconds[threads].items()}
    best = {way: min((median[t][way], t) for t in THREADS) for way in ("sequential", "batched")}
    speedup = best["sequential"][0] / best["batched"][0]
    loss_difference = max(abs(getattr(a, f)[-1] - getattr(b, f)[-1])
                          for a, b in zip(histories, result.histories) for f in ("train_loss", "test_loss"))
    parameter_difference = max(float((m.state_dict()[k] - result.params_of(i)[k]).abs().max())
                               for i, m in enumerate(models) for k in result.params if result.params[k].is_floating_point())
    return dict(name=name, model_options=options, seeds=list(SEEDS), lr=LR, batch_size=BATCH, epochs=epochs,
                steps_per_run=histories[0].steps, parameters=sum(p.numel() for p in models[0].parameters()),
                final_train_loss={"sequential": [h.train_loss[-1] for h in histories], "batched": result.final("train_loss").tolist()},
                final_test_accuracy={"sequential": [h.test_accuracy[-1] for h in histories],
                                     "batched": result.final("test_accuracy").tolist()},
                final_loss_difference=loss_difference, final_parameter_difference=parameter_difference,
                seconds_by_threads=seconds, median_seconds_by_threads=median,
                best={way: dict(median_seconds=v[0], threads=v[1]) for way, v in best.items()},
                same_threads_speedup={t: m["sequential"] / m["batched"] for t, m in median.items()}, speedup=speedup,
                meets_target={"speedup": speedup >= TARGETS["speedup"],
                              "final_loss_difference": loss_difference <= TARGETS["final_loss_difference"]})


def main():
    parser = bench_arguments(__doc__, "seeds", "two epochs, one repetition (a smoke test)")
    args = parser.parse_args()
    epochs, reps = (2, 1) if args.quick else (EPOCHS, 7)
    data = sgdlab.load_dataset("digits", device="cpu")
    load_before = list(os.getloadavg())
    started = time.perf_counter()
    main_case = run_case("mlp / digits", data, {}, epochs, reps)
    bn_case = run_case("mlp + BatchNorm / digits (reported, not judged)", data, {"batchnorm": True}, epochs, max(1, reps // 2))
    total = time.perf_counter() - started
    result = dict(benchmark="ten seeds of the quick MLP: train_seeds (vmap over functional_call) vs ten sequential sgdlab.train runs",
                  quick=args.quick, targets=TARGETS,
                  speedup="best sequential median seconds / best batched median seconds over THREADS; above 1: batched is faster",
                  threads=list(THREADS),
                  meets_target=main_case["meets_target"], total_seconds=round(total, 1),
                  machine={**describe_machine(), "load_average_before": load_before}, cases=[main_case, bn_case])
    write_result(args.out, result)
    for c in (main_case, bn_case):
        b = c["best"]
        print(f"{c['name']:<50} best sequential {b['sequential']['median_seconds']:.3f} s ({b['sequential']['threads']} thread(s))  "
              f"best batched {b['batched']['median_seconds']:.3f} s ({b['batched']['threads']})  speedup {c['speedup']:.2f}x "
              f"(target {TARGETS['speedup']}; same threads: "
              + ", ".join(f"{t}: {v:.2f}x" for t, v in c["same_threads_speedup"].items())
              + f")  final-loss diff {c['final_loss_difference']:.1e}  params diff {c['final_parameter_difference']:.1e}")
    print(f"{total:.0f} s in all; load average {os.getloadavg()[0]:.2f}; written to {args.out}")


if __name__ == "__main__":
    main()
