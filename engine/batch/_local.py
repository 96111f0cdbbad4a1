"""Running a batch: in this process, in one worker process per GPU or CPU slot, or on Ray."""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.queues
import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from multiprocessing.synchronize import Event
from typing import Any

import torch

from .._errors import BackendUnavailableError, RenderInterrupted
from ..rendering import TargetCache
from ._job import (
    BackendPool,
    BatchInterrupted,
    JobOutcome,
    RenderedJob,
    complete_outcomes,
    guarded,
    read_job,
    render_job,
    run_job,
    write_job,
)
from ._manifest import BatchJob
from ._ray import run_on_ray

__all__ = ["run_batch"]


def _check_devices(devices: Sequence[int]) -> None:
    """Refuse --devices the machine does not have, before any worker starts."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = [device for device in devices if not 0 <= device < count]
    if missing:
        have = f"{count} CUDA device(s)" if count else "no CUDA device"
        raise BackendUnavailableError(f"--devices {','.join(map(str, devices))}: this machine has {have}")


#: Per-process state of a local worker: its device, the caches it keeps across jobs, and the
#: batch's stop flag.
_WORKER: dict[str, Any] = {}


def _init_worker(devices: multiprocessing.queues.Queue[int] | None, threads: int, stop: Event) -> None:
    # Idle, a worker ignores Ctrl-C (a traceback from its queue wait would be noise): the batch
    # stops it through ``stop`` and a SIGINT while a job runs, which ends that render.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    device = devices.get() if devices is not None else None
    _WORKER.update(cache=TargetCache(), backends=BackendPool(), device=None, stop=stop)
    if device is not None:
        # The worker's GPU, named explicitly: torch, the onnxruntime session and its bindings agree.
        torch.cuda.set_device(int(device))
        _WORKER["device"] = f"cuda:{int(device)}"
    torch.set_num_threads(max(1, threads))


def _worker_job(job: BatchJob, overwrite: bool) -> JobOutcome:
    if _WORKER["stop"].is_set():  # queued before Ctrl-C, reached after it
        return JobOutcome(job.line, str(job.output), "not run")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return run_job(job, overwrite=overwrite, cache=_WORKER["cache"], backends=_WORKER["backends"],
                       device=_WORKER["device"])
    except (KeyboardInterrupt, RenderInterrupted):
        return JobOutcome(job.line, str(job.output), "interrupted")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_batch(
    jobs: Sequence[BatchJob],
    *,
    overwrite: bool = False,
    workers: int = 1,
    devices: Sequence[int] | None = None,
    ray_address: str | None = None,
    on_outcome: Callable[[JobOutcome], None] | None = None,
    on_event: Callable[[BatchJob, Any], None] | None = None,
    cache: TargetCache | None = None,
    overlap: bool = True,
) -> list[JobOutcome]:
    """Run every job, isolating failures; returns one outcome per job, in the jobs' order.

    One process per device in ``devices`` (GPU indices), else ``workers`` CPU processes (1: in
    this process, sharing ``cache``), else Ray tasks when ``ray_address`` is given.
    ``on_event(job, RenderEvent)`` follows each render's iterations (in-process runs only);
    ``on_outcome`` hears of each finished job. Ctrl-C stops the batch: the running jobs end
    (a second Ctrl-C does not wait for them) and BatchInterrupted carries every outcome.
    In this process, ``overlap`` reads the next job's inputs and writes the last job's output in
    background threads while a render runs (False: one phase after another, the baseline).
    """
    if ray_address is not None:
        return run_on_ray(jobs, address=ray_address, overwrite=overwrite, on_outcome=on_outcome, cache=cache)
    if devices is not None:
        _check_devices(devices)
    outcomes: dict[int, JobOutcome] = {}
    workers = min(workers, len(jobs))  # never more processes than jobs
    if devices is None and workers <= 1:
        run = _run_overlapped if overlap else _run_in_turn
        return run(jobs, outcomes, overwrite, cache if cache is not None else TargetCache(), on_outcome, on_event)
    return _run_in_workers(jobs, outcomes, overwrite, workers, devices, on_outcome)


#: on_outcome(outcome) and on_event(job, event): what run_batch reports to its caller.
OnOutcome = Callable[[JobOutcome], None]
OnEvent = Callable[[BatchJob, Any], None]


def _follow(on_event: OnEvent | None, job: BatchJob) -> Callable[[Any], None] | None:
    return (lambda event: on_event(job, event)) if on_event is not None else None


def _run_in_turn(jobs: Sequence[BatchJob], outcomes: dict[int, JobOutcome], overwrite: bool, cache: TargetCache,
                 on_outcome: OnOutcome | None, on_event: OnEvent | None) -> list[JobOutcome]:
    backends = BackendPool()
    index = 0
    try:
        for index, job in enumerate(jobs):
            outcomes[index] = run_job(job, overwrite=overwrite, cache=cache, backends=backends,
                                      callback=_follow(on_event, job))
            if on_outcome is not None:
                on_outcome(outcomes[index])
    except (KeyboardInterrupt, RenderInterrupted):
        if index not in outcomes:
            outcomes[index] = JobOutcome(jobs[index].line, str(jobs[index].output), "interrupted")
        raise BatchInterrupted(complete_outcomes(jobs, outcomes)) from None
    return complete_outcomes(jobs, outcomes)


def _run_overlapped(jobs: Sequence[BatchJob], outcomes: dict[int, JobOutcome], overwrite: bool,
                    cache: TargetCache, on_outcome: OnOutcome | None, on_event: OnEvent | None) -> list[JobOutcome]:
    """One job after another in this process, with the I/O beside the renders: while job i
    renders, a reader thread decodes and hashes job i + 1's inputs and a writer thread encodes
    and writes job i - 1's output (image codecs and hashing release the GIL). A job's outcome is
    reported once its output is written; Ctrl-C waits for a write under way (a finished render
    is never lost), then stops the batch."""
    backends = BackendPool()
    writing: tuple[int, Future[JobOutcome]] | None = None

    def read(job: BatchJob) -> Any:
        return guarded(job, lambda: read_job(job, overwrite=overwrite)) if job.kind != "video" else None

    def settle(index: int, outcome: JobOutcome) -> None:
        outcomes[index] = outcome
        if on_outcome is not None:
            on_outcome(outcome)

    def settle_write() -> None:
        nonlocal writing
        if writing is not None:
            settle(writing[0], writing[1].result())
            writing = None

    index = 0
    with ThreadPoolExecutor(1, "styleforge-read") as reader, ThreadPoolExecutor(1, "styleforge-write") as writer:
        reading = reader.submit(read, jobs[0]) if jobs else None
        try:
            for index, job in enumerate(jobs):
                assert reading is not None  # submitted for this job on the turn before
                prepared = reading.result()
                reading = reader.submit(read, jobs[index + 1]) if index + 1 < len(jobs) else None
                follow = _follow(on_event, job)
                if job.kind == "video":  # a shot reads and writes frame by frame itself
                    result = run_job(job, overwrite=overwrite, cache=cache, backends=backends, callback=follow)
                elif isinstance(prepared, JobOutcome):  # skipped, or failed reading
                    result = prepared
                else:
                    result = guarded(job, lambda: render_job(job, prepared, cache=cache, backends=backends,
                                                             callback=follow))
                settle_write()
                if isinstance(result, RenderedJob):
                    writing = (index, writer.submit(write_job, job, result))
                else:
                    settle(index, result)
            settle_write()
        except (KeyboardInterrupt, RenderInterrupted):
            if reading is not None:
                reading.cancel()
            settle_write()
            if index not in outcomes:
                outcomes[index] = JobOutcome(jobs[index].line, str(jobs[index].output), "interrupted")
            raise BatchInterrupted(complete_outcomes(jobs, outcomes)) from None
    return complete_outcomes(jobs, outcomes)


def _run_in_workers(jobs: Sequence[BatchJob], outcomes: dict[int, JobOutcome], overwrite: bool, workers: int,
                    devices: Sequence[int] | None, on_outcome: OnOutcome | None) -> list[JobOutcome]:
    context = multiprocessing.get_context("spawn")  # CUDA cannot follow a fork
    queue: multiprocessing.queues.Queue[int] | None = None
    count = workers
    if devices is not None:
        queue = context.Queue()
        for device in devices:
            queue.put(device)
        count = len(devices)
    stop = context.Event()
    threads = max(1, (os.cpu_count() or 1) // count)
    pool = ProcessPoolExecutor(max_workers=count, mp_context=context, initializer=_init_worker,
                               initargs=(queue, threads, stop))
    futures: dict[Future[JobOutcome], int] = {}
    killed = False
    try:
        futures = {pool.submit(_worker_job, job, overwrite): index for index, job in enumerate(jobs)}
        for future in as_completed(futures):
            index = futures[future]
            outcomes[index] = _collect(future, jobs[index], "failed")
            if on_outcome is not None:
                on_outcome(outcomes[index])
    except KeyboardInterrupt:
        killed = _stop_workers(pool, futures, jobs, outcomes, stop)
        raise BatchInterrupted(complete_outcomes(jobs, outcomes)) from None
    finally:
        pool.shutdown(wait=not killed, cancel_futures=True)
    return complete_outcomes(jobs, outcomes)


def _collect(future: Future[JobOutcome], job: BatchJob, when_lost: str) -> JobOutcome:
    """A finished future's outcome; a worker that died (or was stopped) loses its job."""
    try:
        return future.result()
    except CancelledError:
        return JobOutcome(job.line, str(job.output), "not run")
    except BaseException as error:  # BrokenProcessPool, or a worker's own KeyboardInterrupt
        reason = f"worker died ({type(error).__name__}: {error})" if when_lost == "failed" else None
        return JobOutcome(job.line, str(job.output), when_lost, reason)


def _stop_workers(pool: ProcessPoolExecutor, futures: dict[Future[JobOutcome], int], jobs: Sequence[BatchJob],
                  outcomes: dict[int, JobOutcome], stop: Event) -> bool:
    """After a first Ctrl-C: no new job starts, running renders are interrupted (a Ctrl-C from a
    terminal reached them already; one sent to this process alone did not) and their outcomes
    are awaited. A second Ctrl-C kills the workers at once (returns True then)."""
    stop.set()
    for future in futures:
        future.cancel()
    # ProcessPoolExecutor keeps its processes in a private dict; there is no public handle on them.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        with contextlib.suppress(OSError):
            os.kill(process.pid, signal.SIGINT)
    running = [future for future, index in futures.items() if index not in outcomes and not future.cancelled()]
    killed = False
    try:
        for future in as_completed(running):
            index = futures[future]
            outcomes[index] = _collect(future, jobs[index], "interrupted")
    except KeyboardInterrupt:
        killed = True
        for process in processes:
            with contextlib.suppress(OSError):
                process.kill()
    for future, index in futures.items():
        if index not in outcomes:
            outcomes[index] = JobOutcome(jobs[index].line, str(jobs[index].output),
                                         "not run" if future.cancelled() else "interrupted")
    return killed
