"""Running a batch: in this process, in one worker process per GPU or CPU slot, or on Ray."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import torch

from .._errors import BackendUnavailableError
from ..rendering import TargetCache
from ._job import BackendPool, JobOutcome, run_job
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


#: Per-process state of a local worker: its device and the caches it keeps across jobs.
_WORKER: dict[str, Any] = {}


def _init_worker(devices, threads: int) -> None:
    device = devices.get() if devices is not None else None
    _WORKER.update(cache=TargetCache(), backends=BackendPool(), device=None)
    if device is not None:
        # The worker's GPU, named explicitly: torch, the onnxruntime session and its bindings agree.
        torch.cuda.set_device(int(device))
        _WORKER["device"] = f"cuda:{int(device)}"
    torch.set_num_threads(max(1, threads))


def _worker_job(job: BatchJob, overwrite: bool) -> JobOutcome:
    return run_job(job, overwrite=overwrite, cache=_WORKER["cache"], backends=_WORKER["backends"],
                   device=_WORKER["device"])


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
) -> list[JobOutcome]:
    """Run every job, isolating failures; returns one outcome per job, in the jobs' order.

    One process per device in ``devices`` (GPU indices), else ``workers`` CPU processes (1: in
    this process, sharing ``cache``), else Ray tasks when ``ray_address`` is given.
    ``on_event(job, RenderEvent)`` follows each render's iterations (in-process runs only).
    """
    if ray_address is not None:
        return run_on_ray(jobs, address=ray_address, overwrite=overwrite, on_outcome=on_outcome, cache=cache)
    if devices is not None:
        _check_devices(devices)
    outcomes: dict[int, JobOutcome] = {}
    if devices is None and workers <= 1:
        cache = cache if cache is not None else TargetCache()
        backends = BackendPool()
        for index, job in enumerate(jobs):
            follow = (lambda event, job=job: on_event(job, event)) if on_event is not None else None
            outcomes[index] = run_job(job, overwrite=overwrite, cache=cache, backends=backends, callback=follow)
            if on_outcome is not None:
                on_outcome(outcomes[index])
        return [outcomes[i] for i in range(len(jobs))]

    context = multiprocessing.get_context("spawn")  # CUDA cannot follow a fork
    queue = None
    count = workers
    if devices is not None:
        queue = context.Queue()
        for device in devices:
            queue.put(device)
        count = len(devices)
    threads = max(1, (os.cpu_count() or 1) // count)
    with ProcessPoolExecutor(max_workers=count, mp_context=context, initializer=_init_worker,
                             initargs=(queue, threads)) as pool:
        futures = {pool.submit(_worker_job, job, overwrite): index for index, job in enumerate(jobs)}
        for future in as_completed(futures):
            index = futures[future]
            try:
                outcomes[index] = future.result()
            except BrokenProcessPool as error:
                job = jobs[index]
                outcomes[index] = JobOutcome(job.line, str(job.output), "failed", f"worker died ({error})")
            if on_outcome is not None:
                on_outcome(outcomes[index])
    return [outcomes[i] for i in range(len(jobs))]
