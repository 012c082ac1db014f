"""Many stacks on dask.distributed: one task per stack, one model per worker.

:func:`track_many` runs a list of :class:`~.manifest.Job` (stack, prompts, output, options) on a
dask.distributed cluster: a ``LocalCluster`` of worker processes on this machine by default, or
any running cluster (``scheduler=`` an address such as ``tcp://host:8786``, a ``Client``, or a
cluster object such as dask-jobqueue's ``SLURMCluster``).

- Every job is checked on the client before anything is submitted (:func:`~.batch.prepare_track`:
  inputs readable, prompts fit, output writable); jobs whose output is already complete (see
  :mod:`.manifest`) are skipped.
- One task per stack. With ``resources={"GPU": 1}`` each task asks for one unit of the workers'
  ``GPU`` resource, so a worker runs one stack per GPU it declares (workers are started with
  ``--resources GPU=1``; the LocalCluster made here declares it on each worker).
- One model per worker process, built on the first task and kept for the next ones (a
  process-level cache keyed by the model); tasks on one worker run one at a time.
- A stack that fails is reported with its message and does not stop the others; a worker that
  dies (out of memory) fails only the task it ran (after distributed's retries).

The paths must be valid on the client and on every worker (a shared file system).
"""

from __future__ import annotations

import importlib
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_sam2.engine.batch.manifest import (
    DIRECTIONS,
    Job,
    ManifestError,
    duplicate_outputs,
    make_job,
    output_state,
    write_done_record,
)
from napari_sam2.engine.track.session import ModelSpec
from napari_sam2.errors import AlreadyExistsError, InputError, InputTypeError

__all__ = ["BatchReport", "JobResult", "track_many", "validate_jobs"]


@dataclass(frozen=True)
class JobResult:
    """What became of one job: ``status`` is ``"done"``, ``"skipped"`` (complete already),
    ``"failed"`` (it ran and failed) or ``"invalid"`` (refused before submitting)."""

    job: Job
    status: str
    message: str = ""
    written: str | None = None
    seconds: float | None = None
    worker: str | None = None
    model_loads: int | None = None
    #: the traceback of a failed job, for a bug report
    details: str = field(default="", repr=False)


@dataclass
class BatchReport:
    """The results of a :func:`track_many` run, one per job, in the jobs' order."""

    results: list[JobResult] = field(default_factory=list)

    def _with(self, status: str) -> list[JobResult]:
        return [r for r in self.results if r.status == status]

    @property
    def done(self) -> list[JobResult]:
        return self._with("done")

    @property
    def skipped(self) -> list[JobResult]:
        return self._with("skipped")

    @property
    def failed(self) -> list[JobResult]:
        """Jobs that ran and failed, and jobs refused before submitting."""
        return self._with("failed") + self._with("invalid")

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        counts = {s: len(self._with(s)) for s in ("done", "skipped", "failed", "invalid")}
        return ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no jobs"

    def to_csv(self, path: str | Path) -> Path:
        """One row per job: stack, output, status, message, written, seconds, worker."""
        import csv

        path = Path(path)
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["stack", "output", "status", "message", "written", "seconds", "worker"])
            for r in self.results:
                seconds = "" if r.seconds is None else f"{r.seconds:.1f}"
                w.writerow(
                    [r.job.stack, r.job.output, r.status, r.message, r.written or "", seconds, r.worker or ""]
                )
        return path


class BatchValidationError(ManifestError):
    """Jobs refused before anything was submitted; ``problems`` lists them (job: message)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
        super().__init__(
            f"{len(problems)} job(s) cannot run; nothing was started:\n  " + "\n  ".join(problems[:20]) + more
        )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if isinstance(exc, (ValueError, OSError, RuntimeError)) else f"{type(exc).__name__}: {text}"


def model_key(spec: ModelSpec) -> dict[str, Any]:
    """What of the model a done-record names (device and compile do not change the labels)."""
    checkpoint = None
    if spec.checkpoint is not None:
        if not Path(spec.checkpoint).expanduser().is_file():
            raise InputError(f"checkpoint {spec.checkpoint}: no such file")
        st = Path(spec.checkpoint).expanduser().stat()
        checkpoint = {"path": str(Path(spec.checkpoint).expanduser().resolve()), "bytes": st.st_size}
    return {"config": spec.config_name, "checkpoint": checkpoint, "precision": spec.precision}


def validate_jobs(
    jobs: Iterable[Job], model: Mapping[str, Any], overwrite: bool = False
) -> tuple[dict[int, bool], dict[int, JobResult]]:
    """``({index: overwrite} of the jobs to run, {index: result} of the others)``: complete jobs
    are skipped, stale ones (:func:`~.manifest.output_state`) are redone, and every job to run is
    checked by :func:`~.batch.prepare_track` (nothing computed); the refused ones are invalid."""
    from napari_sam2.engine.batch.track_stack import prepare_track

    jobs = list(jobs)
    duplicates = duplicate_outputs(jobs)
    to_run: dict[int, bool] = {}
    results: dict[int, JobResult] = {}
    for i, job in enumerate(jobs):
        state, why = output_state(job, model)
        if state == "complete" and not overwrite:
            results[i] = JobResult(job, "skipped", "complete already")
            continue
        redo = overwrite or state == "stale"
        try:
            if i in duplicates:
                raise InputError(duplicates[i])
            if job.direction not in DIRECTIONS:
                raise InputError(f"direction must be forward, backward or both, not {job.direction!r}")
            if state == "foreign" and not redo:
                raise AlreadyExistsError(f"{why}; pass --overwrite (overwrite=True) to replace it")
            prepare_track(job.stack, job.prompts, job.output, overwrite=redo, **_check_options(job)).close()
        except Exception as exc:  # noqa: BLE001 - every refusal is reported with its message
            results[i] = JobResult(job, "invalid", _one_line(exc))
            continue
        to_run[i] = redo
    return to_run, results


def _check_options(job: Job) -> dict[str, Any]:
    options = job.options()
    options.pop("direction")
    return options


# --------------------------------------------------------------------------------------------
# on the workers

_CACHE: dict[str, Any] = {"loads": 0}
_CACHE_LOCK = threading.Lock()


def _import_builder(path: str) -> Callable[[ModelSpec], Any]:
    module, _, name = path.partition(":")
    if not module or not name:
        raise InputError(f"a builder is given as 'module:function'; got {path!r}")
    return getattr(importlib.import_module(module), name)


def _default_builder(spec: ModelSpec) -> Any:
    from napari_sam2.engine.track.session import build_predictor
    from napari_sam2.engine.weights.download import ensure_checkpoint

    ensure_checkpoint(spec.config_name, spec.checkpoint, download=True)
    return build_predictor(spec)


def _worker_device(device: str) -> str:
    """On a machine with several GPUs, LocalCluster worker k uses GPU k (mod their number)."""
    if device not in ("auto", "cuda"):
        return device
    try:
        import torch
        from distributed import get_worker

        count = torch.cuda.device_count()
        name = get_worker().name
    except (ImportError, ValueError, RuntimeError):
        return device
    if count > 1 and isinstance(name, int):
        return f"cuda:{name % count}"
    return device


def cached_predictor(spec: ModelSpec, builder: str | Callable | None = None) -> tuple[Any, int]:
    """The predictor of this worker process for ``spec``: built once, kept for the next tasks
    (one model per worker: a different spec replaces it). Returns it and how many models this
    process has built."""
    key = (
        spec,
        builder if isinstance(builder, (str, type(None))) else f"{builder.__module__}.{builder.__qualname__}",
    )
    with _CACHE_LOCK:
        if _CACHE.get("key") != key:
            _CACHE.pop("predictor", None)  # the old model goes before the new one is built
            _CACHE.pop("key", None)
            build = _import_builder(builder) if isinstance(builder, str) else builder or _default_builder
            _CACHE["predictor"] = build(spec)
            _CACHE["key"] = key
            _CACHE["loads"] += 1
        return _CACHE["predictor"], _CACHE["loads"]


_RUN_LOCK = threading.Lock()


def run_job(
    job: Job,
    spec: ModelSpec,
    builder: str | Callable | None,
    overwrite: bool,
    torch_threads: int | None,
    model: Mapping[str, Any],
) -> dict[str, Any]:
    """One task: track ``job`` with this worker's model, write its labels and its done-record.
    Never raises for a failing stack: the result says ``failed`` with the message."""
    from napari_sam2.engine.batch.track_stack import track_files

    start = time.perf_counter()
    worker = None
    try:
        from distributed import get_worker

        worker = str(get_worker().name)
    except (ImportError, ValueError):
        pass
    result: dict[str, Any] = {"worker": worker}
    import dask

    # the frames' dask graphs are read here, not sent back to the cluster (their file handles
    # do not travel): the worker's own synchronous scheduler
    with _RUN_LOCK, dask.config.set(scheduler="synchronous"):  # one stack at a time: the model is shared
        try:
            if torch_threads:
                import torch

                torch.set_num_threads(int(torch_threads))
            device_spec = ModelSpec(
                spec.config_name, spec.checkpoint, _worker_device(spec.device), spec.precision, spec.compile
            )
            predictor, loads = cached_predictor(device_spec, builder)
            result["model_loads"] = loads
            written = track_files(
                job.stack,
                job.prompts,
                job.output,
                config_name=spec.config_name,
                checkpoint=spec.checkpoint,
                device=device_spec.device,
                overwrite=overwrite,
                progress=False,
                precision=spec.precision,
                compile=spec.compile,
                builder=lambda _spec: predictor,
                **job.options(),
            )
            seconds = time.perf_counter() - start
            write_done_record(job, model, written, {"seconds": round(seconds, 3), "worker": worker})
            result.update(status="done", written=str(written), seconds=seconds)
        except Exception as exc:  # noqa: BLE001 - a failing stack is reported, the others go on
            result.update(
                status="failed",
                message=_one_line(exc),
                traceback=traceback.format_exc(),
                seconds=time.perf_counter() - start,
            )
    return result


# --------------------------------------------------------------------------------------------
# on the client


def default_workers(num_jobs: int) -> int:
    """One worker per GPU; on CPU one per 4 cores (each worker's torch uses those cores)."""
    try:
        import torch

        gpus = torch.cuda.device_count()
    except ImportError:  # pragma: no cover - torch is a dependency
        gpus = 0
    n = gpus if gpus else max(1, (os.cpu_count() or 1) // 4)
    return max(1, min(n, num_jobs))


def _client(scheduler: Any, n_workers: int, resources: Mapping[str, float] | None):
    """``(client, things to close)`` for ``scheduler``: None (a new LocalCluster), an address,
    a Client, or a cluster object (anything with ``scheduler_address``)."""
    import logging

    from distributed import Client, LocalCluster

    if scheduler is None:
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            resources=dict(resources) if resources else None,
            dashboard_address=None,
            memory_limit=0,  # the tasks bound their own memory (feature cache, spill to disk)
            silence_logs=logging.ERROR,
        )
        client = Client(cluster)
        return client, [client, cluster]
    if isinstance(scheduler, Client):
        return scheduler, []
    if isinstance(scheduler, str):
        client = Client(scheduler, timeout="30s")
        return client, [client]
    if hasattr(scheduler, "scheduler_address"):
        client = Client(scheduler)
        return client, [client]
    raise InputTypeError(
        f"scheduler must be an address, a Client or a cluster; got a {type(scheduler).__name__}"
    )


def track_many(
    jobs: Iterable[Job | Mapping[str, Any]],
    *,
    model: ModelSpec | str = "sam2.1_hiera_t",
    scheduler: Any = None,
    n_workers: int | None = None,
    resources: Mapping[str, float] | None = None,
    overwrite: bool = False,
    skip_invalid: bool = False,
    progress: bool = True,
    builder: str | Callable[[ModelSpec], Any] | None = None,
    on_result: Callable[[JobResult], None] | None = None,
    torch_threads: int | None = None,
) -> BatchReport:
    """Track many stacks on dask.distributed (module doc); returns a :class:`BatchReport`.

    Args:
        jobs: :class:`~.manifest.Job` objects, or mappings with their fields (``stack``,
            ``prompts``, ``output``, options); see :func:`~.manifest.load_manifest`.
        model: a :class:`~.session.ModelSpec` (variant, checkpoint, device, precision, compile)
            or a variant name.
        scheduler: None (a LocalCluster of ``n_workers`` processes, one thread each), a
            scheduler address, a ``distributed.Client``, or a cluster object.
        n_workers: workers of the LocalCluster (default :func:`default_workers`).
        resources: what each task needs, e.g. ``{"GPU": 1}``; the LocalCluster's workers each
            declare it once; on your own cluster start workers with ``--resources GPU=1``.
        overwrite: recompute and replace outputs, complete or not.
        skip_invalid: run the valid jobs when some are refused (default: refuse to start,
            raising :class:`BatchValidationError` with every problem).
        builder: builds the predictor from a ModelSpec on each worker (``"module:function"`` or
            an importable function); default: the official model of ``model``.
        on_result: called on the client with each job's result as it arrives.
        torch_threads: CPU threads torch uses in each worker (dask starts workers with one);
            default: for the LocalCluster this machine's cores shared out, on your own cluster
            left as the workers have it (give your CPU workers' cores here).
    """

    spec = ModelSpec(model) if isinstance(model, str) else model
    jobs = [j if isinstance(j, Job) else make_job(j, f"job {i}") for i, j in enumerate(jobs)]
    key = model_key(spec)
    to_run, results = validate_jobs(jobs, key, overwrite)
    invalid = [r for r in results.values() if r.status == "invalid"]
    if invalid and not skip_invalid:
        raise BatchValidationError([f"{r.job.name}: {r.message}" for r in invalid])
    if on_result is not None:
        for r in results.values():
            on_result(r)

    def record(index: int, result: JobResult) -> None:
        results[index] = result
        if on_result is not None:
            on_result(result)

    if to_run:
        if builder is None:
            from napari_sam2.engine.weights.download import ensure_checkpoint

            if scheduler is None:  # the workers are this machine: its devices are theirs
                from napari_sam2.engine.weights.build import resolve_device

                resolve_device(spec.device)  # a bad device fails now, not on every worker
            # downloaded once, here, into the cache the workers share (cluster nodes often have no internet)
            ensure_checkpoint(spec.config_name, spec.checkpoint, download=True)
        todo = {i: (jobs[i], redo) for i, redo in to_run.items()}
        _run(
            todo,
            spec,
            key,
            builder,
            scheduler,
            n_workers,
            resources,
            progress,
            record,
            torch_threads,
            show_failures=on_result is None,
        )
    return BatchReport([results[i] for i in range(len(jobs))])


def _run(
    todo,
    spec,
    key,
    builder,
    scheduler,
    n_workers,
    resources,
    progress,
    record,
    torch_threads,
    show_failures=True,
) -> None:
    from distributed import as_completed

    n = n_workers or default_workers(len(todo))
    client, owned = _client(scheduler, n, resources)
    # torch in a LocalCluster worker gets this machine's cores shared out (the nanny sets one thread)
    threads = torch_threads or (max(1, (os.cpu_count() or 1) // n) if scheduler is None else None)
    bar = None
    try:
        futures = {}
        for index, (job, redo) in todo.items():
            future = client.submit(
                run_job, job, spec, builder, redo, threads, key, resources=resources, pure=False
            )
            futures[future] = index
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(futures), desc="stacks", unit="stack")
        for future in as_completed(futures):
            index = futures[future]
            job = todo[index][0]
            try:
                out = future.result()
                result = JobResult(
                    job,
                    out["status"],
                    out.get("message", ""),
                    out.get("written"),
                    out.get("seconds"),
                    out.get("worker"),
                    out.get("model_loads"),
                    out.get("traceback", ""),
                )
            except Exception as exc:  # noqa: BLE001 - a worker died, or the task could not run
                result = JobResult(job, "failed", f"the task did not finish: {_one_line(exc)}")
            if bar is not None:
                bar.update(1)
                if result.status == "failed" and show_failures:  # else on_result's owner says it, once
                    bar.write(f"failed: {job.name}: {result.message}")
            record(index, result)
    finally:
        if bar is not None:
            bar.close()
        for thing in owned:
            thing.close()
