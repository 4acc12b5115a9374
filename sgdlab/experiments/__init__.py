"""The book's long experiments, each written once for the chapters, the command line and the tests.

Each module (``walk``, ``curvature``, ``trajectory``, ``stability``) holds

* ``Config``    a frozen dataclass: every setting, typed, with its default (the ``quick``
                scale); a preset holds one per experiment (:mod:`sgdlab.presets`);
* ``run(config, *, out=None, progress=None, data=None, download=False) -> Result``: the
                experiment. With ``out`` (a directory) it checkpoints there and leaves its
                results and ``final.pt`` there, so that a killed run resumes; a chapter calls
                it without;
* ``prepare(config, *, data=None, download=False)``: every setting checked and the data
                loaded, nothing written (``run`` calls it; the command line calls it first);
* ``Result``    what the experiment found: ``save(directory)``, ``Result.load(directory)``,
                ``summary()`` (plain JSON) and the figures, through :mod:`sgdlab.plots`;
* ``NAME``, ``CHOICES`` (the allowed values of text settings) and ``RESULTS`` (the files a
                finished run directory holds besides ``final.pt`` and ``summary.json``).

:mod:`sgdlab.runs` wraps ``run`` in a run directory (locked, resumable, verified) for
``python -m sgdlab run NAME``; it knows nothing else about an experiment.
"""

from . import curvature, stability, trajectory, walk

EXPERIMENTS = {module.NAME: module for module in (walk, curvature, trajectory, stability)}
