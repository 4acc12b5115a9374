"""The reproduction scoreboard: each claim of the papers, what we measured, and whether it agrees.

Every chapter's hidden check cell calls :func:`record` with the numbers behind one claim of
the papers it reproduces. :func:`record` keeps them in ``results/<preset>.json`` (the results
of one preset: ``quick``, ``gpu`` or ``paper``) and :func:`scoreboard_table` draws the
scoreboard page from those files, without running anything.

What :func:`record` does with a value:

* stored results are the reference: when ``results/<preset>.json`` already holds the claim,
  the new value must match it (each number within 5%, or 1e-3 absolutely, and the same
  verdict), or :func:`record` raises ``ResultsChanged`` naming the claim, both values and
  how to re-record. So the book build and the notebook tests fail when a stored result no
  longer follows from the code;
* a claim not stored yet is written (a ``gpu`` run on Colab records its own results; copy
  the file into the repository's ``results/`` to show them on the page). When the
  ``quick`` file exists but lacks the claim, that is an error instead: the repository
  commits ``results/quick.json``, and its results are checked, not created, by the tests;
* with the environment variable ``SGDLAB_RESULTS=update``, every value is written over the
  stored one (after a change that moves a number on purpose: ``SGDLAB_RESULTS=update make book``).

A paper-preset sweep (:mod:`sgdlab.sweep`) fills the ``paper`` column with
:func:`record_sweep`: each claim computed per seed from the sweep's key numbers, averaged
over the seeds, and stored with their number, which the table shows.

Files live in ``SGDLAB_RESULTS_DIR`` when set, else in ``results/`` of the repository sgdlab
runs from, else in ``./sgdlab-results/`` (an installed copy, as on Colab).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import platform
from pathlib import Path
from typing import Callable

from . import standin
from .walk import RARE_BARRIER_SHARE

PRESET_NAMES = ("quick", "gpu", "paper")
RELATIVE_TOLERANCE, ABSOLUTE_TOLERANCE = 0.05, 1e-3


class ResultsChanged(AssertionError):
    """A measured value no longer matches the stored result of its claim."""


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim of a paper, and how our numbers test it.

    ``values`` names the numbers :func:`record` takes (lists of numbers are allowed);
    ``agrees(values)`` says whether they support the claim; ``show(values)`` writes them
    for the table, with units.
    """

    key: str
    chapter: str                         # the notebook (book/<chapter>.ipynb) that measures it
    source: str                          # paper, and where in it
    paper: str                           # what the paper reports, in our words
    values: tuple[str, ...]
    agrees: Callable[[dict], bool]
    show: Callable[[dict], str]


def _increasing(xs) -> bool:
    return all(a < b for a, b in zip(xs, xs[1:]))


def _listed(names, xs, fmt) -> str:
    return ", ".join(f"{n}: {format(x, fmt)}" for n, x in zip(names, xs))


CLAIMS = (
    Claim("walk-rare-barriers", "walk", "Xing et al. 2018, Table 1 and Figure 4",
          "SGD rarely crosses a barrier between consecutive iterates: few of an epoch's 450 updates do "
          "(VGG-11 and ResNet-56 on CIFAR-10, an MLP on MNIST)",
          ("largest_share", "steps"),
          lambda v: v["largest_share"] <= RARE_BARRIER_SHARE,
          lambda v: f"at most {v['largest_share']:.1%} of the updates of any recorded epoch ({v['steps']:.0f} updates in all)"),
    Claim("walk-floor-moves", "walk", "Xing et al. 2018, Figures 1-3 and section 3",
          "the lowest loss between consecutive iterates (the valley floor) goes up and down along SGD's path "
          "(the paper reads each rise as SGD moving over a barrier; we test only the ups and downs: the lines "
          "through successive pairs of iterates point different ways, so a rise alone shows no barrier)",
          ("rises", "falls"),
          lambda v: v["rises"] > 0 and v["falls"] > 0,
          lambda v: f"the floor rose {v['rises']:.0f} and fell {v['falls']:.0f} times"),
    Claim("walk-valley-every-step", "walk", "Xing et al. 2018, Figure 1 caption and section 3",
          "the loss between consecutive iterates has a minimum in between in all cases",
          ("smallest_share", "largest_share"),
          lambda v: v["smallest_share"] >= 0.9,
          lambda v: f"a valley inside {v['smallest_share']:.0%} to {v['largest_share']:.0%} of the updates of a "
                    "recorded epoch (the MLP and the CNN)"),
    Claim("walk-step-size-valley", "walk", "Xing et al. 2018, sections 4.1 and 5 (under-damping)",
          "steps oscillate across a valley when the learning rate is large for the curvature along them "
          "(the under-damped regime of a quadratic)",
          ("agreement", "below_one", "above_one"),
          lambda v: v["agreement"] >= 0.9 and v["below_one"] < 0.5 < v["above_one"],
          lambda v: f"the quadratic model along the step (lr g_B.H.g_B / g.g_B > 1) predicts the valley of "
                    f"{v['agreement']:.0%} of the steps (GD and SGD, several rates); a valley inside "
                    f"{v['below_one']:.0%} of the steps below 1, {v['above_one']:.0%} above"),
    Claim("batch-alignment", "curvature", "Xing et al. 2018, Figures 5 and 6",
          "the alignment g_Bᵀ H g_B / ‖g_B‖² of mini-batch gradients with the Hessian grows with the batch size "
          "(B = 100 to 45,000)",
          ("batch_sizes", "alignment"),
          lambda v: _increasing(v["alignment"]),
          lambda v: "alignment (nats per squared parameter unit) " + _listed([f"B={b:.0f}" for b in v["batch_sizes"]], v["alignment"], ".2f")),
    Claim("batch-cosine", "curvature", "Xing et al. 2018, Figure 7",
          "the cosine between consecutive mini-batch gradients is lower for larger batches",
          ("batch_sizes", "mean_cosine"),
          lambda v: _increasing([-c for c in v["mean_cosine"]]),
          lambda v: "mean cosine " + _listed([f"B={b:.0f}" for b in v["batch_sizes"]], v["mean_cosine"], "+.2f")),
    Claim("distance-log-law", "curvature", "Hoffer, Hubara and Soudry 2017 (cited by Xing et al. 2018)",
          "the distance from initialisation grows like log t (better than a power law, each fitted and scored in "
          "the same space, on d and on log d), and less for larger batches at equal iterations",
          ("batch_sizes", "distance", "distance_sd", "log_r2", "power_r2", "log_r2_logspace", "power_r2_logspace"),
          lambda v: (_increasing([-d for d in v["distance"]])
                     and all(a > b for a, b in zip(v["log_r2"], v["power_r2"]))
                     and all(a > b for a, b in zip(v["log_r2_logspace"], v["power_r2_logspace"]))),
          lambda v: "‖w_t − w_0‖ " + _listed([f"B={b:.0f}" for b in v["batch_sizes"]],
                                             [f"{d:.2f} ± {s:.2f}" for d, s in zip(v["distance"], v["distance_sd"])], "s")
          + f" (mean ± std over seeds); R² on d: log law {min(v['log_r2']):.2f}–{max(v['log_r2']):.2f}, "
          f"power law {min(v['power_r2']):.2f}–{max(v['power_r2']):.2f}; on log d: log law "
          f"{min(v['log_r2_logspace']):.2f}–{max(v['log_r2_logspace']):.2f}, power law "
          f"{min(v['power_r2_logspace']):.2f}–{max(v['power_r2_logspace']):.2f}"),
    Claim("smoothing-escape", "smoothing", "Kleinberg, Li and Yuan 2018, abstract and Sections 1 and 3",
          "SGD finds better solutions than GD: on a loss with sharp local minima it works on a smoothed loss, "
          "escapes them, and gets close to the good minimum x* and stays near it with constant probability",
          ("gd_loss", "sgd_loss", "gd_near", "sgd_near"),
          lambda v: v["sgd_loss"] < v["gd_loss"] and v["sgd_near"] > v["gd_near"],
          lambda v: f"each at its own tuned step, 200 random starts on the rippled toy: mean loss over the second half "
                    f"GD {v['gd_loss']:.3f}, SGD {v['sgd_loss']:.3f}; time within 0.5 of x*: "
                    f"GD {v['gd_near']:.0%}, SGD {v['sgd_near']:.0%}"),
    Claim("one-point-convexity", "smoothing", "Kleinberg, Li and Yuan 2018, Section 5",
          "along SGD's trajectory on a network, <-∇L(x_t), x_T - x_t> > 0: the loss looks one-point convex "
          "towards the solution SGD finds (the theorem asks it of the smoothed loss, with a margin c|x* - x|^2)",
          ("share_on_path", "share_nearby", "c_on_path"),
          lambda v: v["share_on_path"] >= 0.9 and v["share_nearby"] >= 0.9 and v["c_on_path"] > 0,
          lambda v: f"positive at {v['share_on_path']:.0%} of epoch starts after the first, {v['share_nearby']:.0%} at "
                    f"random points near them; smallest ratio to |x_T - x_t|^2: c = {v['c_on_path']:.4f} "
                    f"(unsmoothed loss, target chosen after the fact)"),
    Claim("permutation-barrier", "trajectory", "Entezari et al. 2022; Ainsworth, Hayase and Srinivasa 2023 (Git Re-Basin)",
          "the loss barrier on the straight line between two independently trained networks mostly disappears once "
          "one is permuted to match the other",
          ("barrier_before", "barrier_after"),
          lambda v: v["barrier_after"] < 0.5 * v["barrier_before"],
          lambda v: f"barrier (above the line) {v['barrier_before']:.3f} nats as trained, {v['barrier_after']:.3f} after weight matching"),
    Claim("no-hopping", "trajectory", "the 2017 question this book starts from (asked, not answered there)",
          "asked: after the loss stops improving, does SGD still move, and does it hop between permuted copies of the "
          "network? Agrees when SGD moves and weight matching maps w_M back onto w_N with the identity (no hop); the "
          "distance is compared with the nearest permuted copy, not a random one",
          ("distance", "aligned_distance", "nearest_live_swap", "nearest_copy"),
          lambda v: v["distance"] > 0 and abs(v["aligned_distance"] - v["distance"]) < 1e-6 * max(1.0, v["distance"]),
          lambda v: f"d(w_N, w_M) = {v['distance']:.2f}, the same after weight matching ({v['aligned_distance']:.2f}): "
          f"no hop; the nearest permuted copy of w_N is {'closer' if v['nearest_copy'] < v['distance'] else 'farther'}, "
          f"{v['nearest_copy']:.2f} away (weight matching without the identity; {v['nearest_live_swap']:.2f} swapping "
          f"two live units)"),
    Claim("decay-stability", "stability", "\"Proposing a new effect of learning rate decay: network stability\" (article)",
          "learning-rate decay makes the network stable: once the rate drops, the activations and gradients on a fixed "
          "input change far less from one update to the next",
          ("rate_fall", "drift_fall"),
          lambda v: min(v["drift_fall"]) >= v["rate_fall"],
          lambda v: f"the rate fell {v['rate_fall']:.0f}x; the activation drift per step fell "
          + _listed(["CNN", "MLP"], v["drift_fall"], ".1f") + " (x, the epoch before over the epoch after)"),
    Claim("decay-lowers-loss", "stability", "\"Proposing a new effect of learning rate decay: network stability\" (article)",
          "the usual account it starts from: decaying the rate lets the weights settle into a minimum, so training "
          "ends with a lower loss",
          ("constant", "step", "cosine"),
          lambda v: all(s < c and k < c for c, s, k in zip(v["constant"], v["step"], v["cosine"])),
          lambda v: "median final training loss (nats) at an equal number of steps, constant / step / cosine: "
          + "; ".join(f"{net} {c:.3f} / {s:.3f} / {k:.3f}"
                      for net, c, s, k in zip(("CNN", "MLP"), v["constant"], v["step"], v["cosine"]))),
)
CLAIMS_BY_KEY = {c.key: c for c in CLAIMS}


def results_dir() -> Path:
    """Where the results files live (see the module docstring)."""
    if os.environ.get("SGDLAB_RESULTS_DIR"):
        return Path(os.environ["SGDLAB_RESULTS_DIR"])
    repository = Path(__file__).resolve().parents[1]
    if (repository / "_toc.yml").exists():
        return repository / "results"
    return Path.cwd() / "sgdlab-results"


def load_results(preset: str, directory: Path | None = None) -> dict:
    """The stored results of ``preset``: claim key -> entry (``values``, ``agrees``, ``recorded``); {} if none."""
    if preset not in PRESET_NAMES:
        raise ValueError(f"preset={preset!r} is not known; choose one of: {', '.join(PRESET_NAMES)}")
    path = (directory or results_dir()) / f"{preset}.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())["claims"]
    except (json.JSONDecodeError, KeyError) as error:
        raise ValueError(f"{path} is not a results file ({error!r}); re-record it with SGDLAB_RESULTS=update") from None


def _check_values(claim: Claim, values: dict) -> dict:
    if set(values) != set(claim.values):
        raise ValueError(f"claim {claim.key!r} takes the values {', '.join(claim.values)}; got {', '.join(sorted(values))}")
    clean = {}
    for name, value in values.items():
        listed = isinstance(value, (list, tuple))
        numbers = [_number(x) for x in (value if listed else [value])]
        if not numbers or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in numbers):
            raise ValueError(f"{name}={value!r} for claim {claim.key!r} must be a finite number or a list of them")
        clean[name] = numbers if listed else numbers[0]
    return clean


def _number(x):
    """A Python number from a Python, NumPy or 0-d torch number."""
    return x.item() if hasattr(x, "item") else x


def _same(a, b) -> bool:
    if isinstance(a, list) or isinstance(b, list):
        return isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    return math.isclose(a, b, rel_tol=RELATIVE_TOLERANCE, abs_tol=ABSOLUTE_TOLERANCE)


def record(key: str, preset: str, **values) -> bool:
    """Record (or check against the stored result) the numbers behind claim ``key`` for ``preset``.

    Returns whether they agree with the paper's claim. See the module docstring for when a
    value is written and when it is checked. Nothing is written or checked once a stand-in
    data set (:mod:`sgdlab.standin`) has been loaded in this process.
    """
    return _record(key, preset, values)


def _record(key: str, preset: str, values: dict, seeds: int | None = None) -> bool:
    if key not in CLAIMS_BY_KEY:
        raise ValueError(f"key={key!r} is not a claim of the scoreboard; choose one of: {', '.join(CLAIMS_BY_KEY)}")
    claim = CLAIMS_BY_KEY[key]
    values = _check_values(claim, values)
    agrees = bool(claim.agrees(values))
    if standin.loaded:  # synthetic data: neither written nor compared with a stored result
        print(f"claim {key!r} not recorded: this run used stand-in data ({', '.join(sorted(standin.loaded))})")
        return agrees
    stored = load_results(preset).get(key)
    update = os.environ.get("SGDLAB_RESULTS") == "update"
    if stored is not None and not update:
        if stored["agrees"] != agrees or not all(_same(values[n], stored["values"].get(n)) for n in claim.values):
            raise ResultsChanged(
                f"claim {key!r} ({preset} preset): measured {values} (agrees: {agrees}), but results/{preset}.json holds "
                f"{stored['values']} (agrees: {stored['agrees']}). If the change is intended, re-record with "
                f"SGDLAB_RESULTS=update make book and commit results/{preset}.json")
        return agrees
    if stored is None and preset == "quick" and not update and (results_dir() / "quick.json").exists():
        raise ResultsChanged(f"claim {key!r} has no stored quick result; record it with SGDLAB_RESULTS=update make book")
    entry = dict(values=values, agrees=agrees, recorded=dict(
        date=datetime.date.today().isoformat(), machine=platform.platform(), python=platform.python_version()))
    if seeds is not None:
        entry["seeds"] = seeds
    _write(preset, key, entry)
    return agrees


def _walk_claims(numbers: dict) -> dict:
    epochs = sorted(int(name.split("@")[1]) for name in numbers if name.startswith("steps@"))
    return {"walk-rare-barriers": dict(largest_share=max(numbers[f"barriers@{e}"] / numbers[f"steps@{e}"] for e in epochs),
                                       steps=sum(numbers[f"steps@{e}"] for e in epochs)),
            "walk-floor-moves": dict(rises=sum(numbers[f"rises@{e}"] for e in epochs),
                                     falls=sum(numbers[f"falls@{e}"] for e in epochs)),
            "walk-valley-every-step": dict(smallest_share=min(numbers[f"inside@{e}"] for e in epochs),
                                           largest_share=max(numbers[f"inside@{e}"] for e in epochs))}


def _curvature_claims(numbers: dict, sizes: list) -> dict:
    return {"batch-alignment": dict(batch_sizes=sizes, alignment=[numbers[f"alignment@{b}"] for b in sizes]),
            "batch-cosine": dict(batch_sizes=sizes, mean_cosine=[numbers[f"cosine@{b}"] for b in sizes])}


def sweep_claims(group: dict) -> dict:
    """The claims' values from one group of a sweep's aggregates (``sgdlab.sweep.show(DIR)["aggregates"]``):
    each claim computed per seed from that seed's key numbers, then averaged over the seeds.
    A walk sweep gives ``walk-rare-barriers``, ``walk-floor-moves`` and ``walk-valley-every-step``; a curvature sweep
    ``batch-alignment`` and ``batch-cosine``. Claim key -> values."""
    seeds = len(group["seeds"])
    if seeds == 0:
        raise ValueError(f"sweep group {group['name']!r} has no finished point: nothing to record")
    per_seed = [{name: entry["values"][i] for name, entry in group["numbers"].items()} for i in range(seeds)]
    if group["experiment"] == "walk":
        claims = [_walk_claims(numbers) for numbers in per_seed]
    elif group["experiment"] == "curvature":
        claims = [_curvature_claims(numbers, group["settings"]["batch_sizes"]) for numbers in per_seed]
    else:
        raise ValueError(f"a {group['experiment']} sweep measures no claim of the scoreboard; walk and curvature sweeps do")
    def mean(values):
        return [mean(list(v)) for v in zip(*values)] if isinstance(values[0], list) else sum(values) / len(values)
    return {key: {name: mean([c[key][name] for c in claims]) for name in claims[0][key]} for key in claims[0]}


def record_sweep(group: dict) -> dict:
    """Record a paper-preset sweep's aggregated numbers (one group of ``sgdlab.sweep.show(DIR)["aggregates"]``,
    e.g. the seeds of VGG-11's walk) as the scoreboard's ``paper`` column, with the number of seeds;
    checked against the stored result like :func:`record`. Claim key -> whether it agrees."""
    if group.get("preset") != "paper":
        raise ValueError(f"sweep group {group.get('name')!r} ran with preset {group.get('preset')!r}; only a paper-preset "
                         "sweep fills the scoreboard's paper column")
    return {key: _record(key, "paper", values, seeds=len(group["seeds"])) for key, values in sweep_claims(group).items()}


def _write(preset: str, key: str, entry: dict) -> None:
    directory = results_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{preset}.json"
    claims = load_results(preset)
    claims[key] = entry
    ordered = {c.key: claims[c.key] for c in CLAIMS if c.key in claims}
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(dict(preset=preset, claims=ordered), indent=1) + "\n")
    partial.replace(path)


def scoreboard_rows(directory: Path | None = None) -> list[dict]:
    """One row per claim: ``claim`` (what the paper reports), ``source``, and under each preset's name our
    numbers and verdict (None: not stored)."""
    stored = {preset: load_results(preset, directory) for preset in PRESET_NAMES}
    rows = []
    for claim in CLAIMS:
        row = dict(key=claim.key, chapter=claim.chapter, source=claim.source, claim=claim.paper)
        for preset in PRESET_NAMES:
            entry = stored[preset].get(claim.key)
            row[preset] = None if entry is None else dict(shown=claim.show(entry["values"]), agrees=entry["agrees"],
                                                          seeds=entry.get("seeds"))
        rows.append(row)
    return rows


MARKS = {True: "✓ agrees", False: "✗ differs"}  # the verdict as the table shows it


def scoreboard_table(directory: Path | None = None):
    """The scoreboard as a Markdown table for the book page: every claim, those our numbers support
    (``✓ agrees``) and those they do not (``✗ differs``: a discrepancy or a negative result, which
    its chapter explains) alike."""
    from IPython.display import Markdown

    def cell(result):
        if result is None:
            return "not run yet"
        seeds = f" (mean of {result['seeds']} seeds)" if result.get("seeds") else ""
        return f"{MARKS[result['agrees']]}: {result['shown']}{seeds}"

    lines = ["| the claim | where | our quick result (CPU) | gpu preset | paper preset |", "|---|---|---|---|---|"]
    for row in scoreboard_rows(directory):
        cells = [f"{row['claim']} (chapter: {row['chapter']})", row["source"],
                 *(cell(row[preset]) for preset in PRESET_NAMES)]
        lines.append("| " + " | ".join(text.replace("|", "\\|") for text in cells) + " |")  # a | in a text is not a column
    return Markdown("\n".join(lines))
