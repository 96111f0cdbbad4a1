"""Batch jobs: manifests validated before any work, jobs resumed by parameter hash, failures
isolated and reported; run in this process, in worker processes (one per GPU or CPU slot) or
as Ray tasks, with style targets and backends shared across a worker's jobs."""

from ._job import STATUSES, BackendPool, BatchInterrupted, JobOutcome, job_hash, run_job, summarize, write_report
from ._local import run_batch
from ._manifest import BatchJob, ManifestError, glob_jobs, load_manifest, parse_option_value
from ._ray import run_on_ray

__all__ = [
    "load_manifest", "glob_jobs", "BatchJob", "ManifestError", "parse_option_value",
    "run_batch", "run_job", "run_on_ray", "JobOutcome", "STATUSES", "BatchInterrupted", "summarize", "write_report",
    "job_hash", "BackendPool",
]
