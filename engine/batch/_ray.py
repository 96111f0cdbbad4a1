"""Batch jobs as Ray tasks: GPU resources, style targets shared through the object store, retries.

Each job is a Ray task (one GPU each when the cluster has GPUs, else one CPU). A task that dies
with its worker is retried by Ray (``max_retries``); its output is written atomically, so a retry
never finds half a file. Style targets go through Ray's object store: the first task to compute a
target puts it there and registers the reference in a small named actor; every later task on any
node fetches it instead of computing it again (and recomputes if the owner has gone).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from .._errors import BackendUnavailableError, RenderInterrupted
from ..rendering import TargetCache
from ._job import BackendPool, BatchInterrupted, JobOutcome, complete_outcomes, run_job
from ._manifest import BatchJob

__all__ = ["run_on_ray"]

_MAX_RETRIES = 3


def _ray() -> ModuleType:
    try:
        import ray
    except ImportError:
        raise BackendUnavailableError("--ray needs Ray: pip install 'styleforge[ray]'") from None
    return ray


class _SharedTargets(TargetCache):
    """A TargetCache whose misses are looked up in, and published to, the object store."""

    def __init__(self, registry: Any) -> None:  # a handle on _make_registry's actor
        super().__init__()
        self.registry = registry

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        ray = _ray()
        if key not in self.entries:
            found = ray.get(self.registry.lookup.remote(key))
            value = None
            if found is not None:
                try:
                    value = ray.get(found[0], timeout=60)
                except Exception:  # the owner died with its worker: compute it again
                    value = None
            if value is None:
                value = compute()
                self.computed += 1
                self.registry.publish.remote(key, [ray.put(value)])  # a list keeps the ref unresolved
            self.entries[key] = value
        return self.entries[key]


def _make_registry(ray: ModuleType) -> Any:
    """The registry's actor class, made by ray.remote when a batch runs. Any, as are the handles
    on it: typed as ActorHandle[Any], mypy read a call of ``registry.lookup.remote`` as never
    returning and the code after it as unreachable."""

    @ray.remote(num_cpus=0)
    class TargetRegistry:
        def __init__(self) -> None:
            self.refs: dict[str, list[Any]] = {}  # key -> [ObjectRef] (a list keeps it unresolved)
            self.computed = 0

        def lookup(self, key: str) -> list[Any] | None:
            return self.refs.get(key)

        def publish(self, key: str, ref: list[Any]) -> None:
            if key not in self.refs:
                self.refs[key] = ref
                self.computed += 1

        def count(self) -> int:
            return self.computed

    return TargetRegistry


def _task(job: BatchJob, overwrite: bool, registry: Any, runner: Callable[..., JobOutcome]) -> JobOutcome:
    try:
        return runner(job, overwrite=overwrite, cache=_SharedTargets(registry), backends=BackendPool())
    except (KeyboardInterrupt, RenderInterrupted):  # ray.cancel interrupts a running task
        return JobOutcome(job.line, str(job.output), "interrupted")


def _connect(ray: ModuleType, address: str) -> bool:
    """Join the cluster at ``address`` ("auto": a running one, else a local instance); True
    when the instance was started here."""
    try:
        if address == "auto":
            try:
                ray.init(address="auto", log_to_driver=False)
            except ConnectionError:
                ray.init(log_to_driver=False)
                return True
        else:
            ray.init(address=address, log_to_driver=False)
    except Exception as error:  # Ray raises ConnectionError, ValueError, RuntimeError, ... for a bad address
        raise BackendUnavailableError(f"--ray {address}: cannot start or reach Ray ({type(error).__name__}: "
                                      f"{error})") from None
    return False


def run_on_ray(jobs: Sequence[BatchJob], *, address: str, overwrite: bool = False,
               on_outcome: Callable[[JobOutcome], None] | None = None, cache: TargetCache | None = None,
               runner: Callable[..., JobOutcome] = run_job) -> list[JobOutcome]:
    """Run the jobs as Ray tasks on the cluster at ``address`` ("auto": a running cluster if one is
    found, else a local instance started for this batch). ``cache.computed`` gets the number of
    style targets computed across the cluster; ``runner`` runs one job in a task (run_job)."""
    ray = _ray()
    started_here = False if ray.is_initialized() else _connect(ray, address)
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        task = ray.remote(num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1, max_retries=_MAX_RETRIES,
                          retry_exceptions=False)(_task)
        registry = _make_registry(ray).remote()
        pending = {task.remote(job, overwrite, registry, runner): index for index, job in enumerate(jobs)}
        outcomes: dict[int, JobOutcome] = {}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                index = pending.pop(done[0])
                try:
                    outcomes[index] = ray.get(done[0])
                except Exception as error:  # retries exhausted: record it and go on
                    job = jobs[index]
                    outcomes[index] = JobOutcome(job.line, str(job.output), "failed",
                                                 f"Ray task failed: {type(error).__name__}: {error}")
                if on_outcome is not None:
                    on_outcome(outcomes[index])
        except KeyboardInterrupt:
            for ref in pending:  # a second Ctrl-C lands in here and ends it at once
                ray.cancel(ref)
            raise BatchInterrupted(complete_outcomes(jobs, outcomes, missing="interrupted")) from None
        if cache is not None:
            cache.computed += ray.get(registry.count.remote())
        return complete_outcomes(jobs, outcomes)
    finally:
        if started_here:
            ray.shutdown()
