"""Where a sweep's points run: a process pool on this machine, or a submitit job array (Slurm).

Both take the points as ``(experiment, preset, settings, run directory, download, threads)``
tuples for :func:`sgdlab.sweep.run_point` and return one outcome per point (``state``,
``message``). They schedule; everything else (the grid, the manifest, which points to run,
resuming) is :mod:`sgdlab.sweep`'s.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from pathlib import Path

from .sweep import Options, SweepError, point_state, run_point

def _slots(workers: int) -> list[dict]:
    """Per worker: the GPU it owns (``CUDA_VISIBLE_DEVICES``), or the CPU cores it is pinned to."""
    import torch
    if torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        gpus = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
        return [dict(gpu=gpus[i % len(gpus)]) for i in range(workers)]
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    size = max(1, len(cores) // workers)
    return [dict(cores=cores[(i * size) % len(cores):][:size]) for i in range(workers)]


def _claim_slot(slots) -> None:
    """Pool initializer: this worker takes one GPU or one group of cores."""
    slot = slots.get()
    if "gpu" in slot:
        os.environ["CUDA_VISIBLE_DEVICES"] = slot["gpu"]
    else:
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, slot["cores"])
        import torch
        torch.set_num_threads(len(slot["cores"]))


def _default_workers() -> int:
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 1


def runner(backend: str):
    """The function that runs a sweep's jobs on ``backend``: ``"local"`` (:func:`run_local`) or
    ``"slurm"`` (:func:`run_submitit`); :func:`sgdlab.sweep.sweep` takes it as ``run_jobs``."""
    return run_local if backend == "local" else run_submitit


def run_local(jobs: list[tuple], directory: Path, options: Options) -> list[dict]:
    """Run the points on a process pool of ``options.workers`` workers, each owning a GPU or a group of
    cores. A worker that dies (SIGKILL, out of memory) breaks the pool: the points left are reported
    ``stopped``, and running the sweep again resumes them."""
    workers = min(options.workers or _default_workers(), len(jobs))
    # forkserver: workers start from a clean process that imported sgdlab once (no fork of a process
    # that has run torch's thread pools); spawn where it does not exist
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(["sgdlab.runs", "sgdlab.sweep", "sgdlab.backends"])
    slots = context.Queue()
    for slot in _slots(workers):
        slots.put(slot)
    results = []
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_claim_slot,
                                                initargs=(slots,)) as pool:
        futures = [pool.submit(run_point, *job) for job in jobs]
        for future in futures:
            try:
                results.append(future.result())
            except concurrent.futures.process.BrokenProcessPool:
                results.append(dict(state="stopped", message="a worker of the pool died (killed?); run the same "
                                                             "sweep again to resume"))
            except Exception as error:  # noqa: BLE001 -- reported per point, the other points go on
                results.append(dict(state="failed", message=f"{type(error).__name__}: {error}"))
    return results


class PointJob:
    """One point as a submitit job. Its ``checkpoint`` (submitit's protocol, as in
    ``submitit.helpers.Checkpointable``) asks submitit to requeue the same call on pre-emption or
    time-out; the run directory's own checkpoints make the requeued call resume, not restart."""

    def __call__(self, *job) -> dict:
        return run_point(*job)

    def checkpoint(self, *job):
        import submitit
        return submitit.helpers.DelayedSubmission(self, *job)


def run_submitit(jobs: list[tuple], directory: Path, options: Options) -> list[dict]:
    """Submit the points as one job array (Slurm, or submitit's local executor with ``cluster="local"``);
    with ``options.wait`` (always, for the local cluster) wait for them."""
    try:
        import submitit
    except ImportError:
        raise SweepError("the slurm backend needs submitit: pip install 'sgdlab[cluster]' (or pip install submitit)") from None
    executor = submitit.AutoExecutor(folder=directory / ".submitit" / "%j", cluster=options.cluster)
    parameters = dict(name=f"sgdlab-{directory.name}", timeout_min=options.time_min,
                      slurm_array_parallelism=options.workers or len(jobs))
    if options.cluster == "slurm":
        parameters.update(gpus_per_node=options.gpus, tasks_per_node=1, slurm_partition=options.partition,
                          cpus_per_task=options.cpus, mem_gb=options.mem_gb)
    executor.update_parameters(**{k: v for k, v in parameters.items() if v is not None})
    submitted = executor.map_array(PointJob(), *zip(*jobs))
    if not (options.wait or options.cluster == "local"):
        return [dict(state="submitted", message=f"job {job.job_id}", job=job.job_id) for job in submitted]
    results = []
    for job, point in zip(submitted, jobs):
        job.wait()
        if job.paths.result_pickle.exists():  # run_point returned (or raised): its outcome
            try:
                results.append(dict(job.result(), job=job.job_id))
                continue
            except Exception as error:  # noqa: BLE001 -- reported per point, resubmitted next time
                reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        else:  # killed: no result will come (job.result() would wait for one); the run directory says the rest
            if point_state(Path(point[3]))["state"] == "finished":
                results.append(dict(state="finished", message="", job=job.job_id))
                continue
            reason = f"state {job.state}"
        results.append(dict(state="stopped", message=f"job {job.job_id} ended without a result ({reason}); run the "
                                                     "same sweep again to resume", job=job.job_id))
    return results
