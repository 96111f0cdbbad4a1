"""One batch job: resume by parameter hash, the shared backends and targets, and its outcome.

Each output embeds the hash of everything that decides its pixels (the options and the input
files' bytes), so a rerun skips the jobs whose output exists with the same hash and redoes the
rest; outputs are written atomically, so a job killed midway leaves no file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._device import resolve_device
from .._errors import ImageError, StyleforgeError
from .._files import remove_stale_temporaries, sha256_file, write_json_atomic
from .._image import load_image, read_metadata, save_image
from ..backends import Backend, backend_for, backend_key
from ..rendering import TargetCache, plan_for, render
from ._manifest import BatchJob

__all__ = ["BackendPool", "JobOutcome", "job_hash", "run_job", "summarize", "write_report"]

_HASH_KEY = "job_hash"


def job_hash(job: BatchJob) -> str:
    """sha256 of everything that decides the job's pixels: options and input file bytes."""
    spec = {
        "config": job.config.to_dict(),
        "inputs": {role: sha256_file(path) if path is not None else None for role, path in (
            ("content", job.content), ("content_map", job.content_map))},
        "styles": [sha256_file(path) for path in job.styles],
        "style_maps": [sha256_file(path) for path in job.style_maps] if job.style_maps else None,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class BackendPool:
    """Backends built once per worker and shared by its jobs, keyed by backends.backend_key (the
    config's runtime group, taps and device), so a job never runs on a backend built for
    another precision, graph mode or model."""

    backends: dict[tuple, Backend] = field(default_factory=dict)

    def get(self, config, device: torch.device, sizes) -> Backend:
        key = backend_key(config, device)
        if key not in self.backends:
            self.backends[key] = backend_for(config, device, sizes)
        return self.backends[key]


@dataclass(frozen=True)
class JobOutcome:
    line: int
    output: str
    status: str  # "done", "skipped" or "failed"
    reason: str | None = None
    seconds: float = 0.0


def run_job(job: BatchJob, *, overwrite: bool = False, cache: TargetCache | None = None,
            backends: BackendPool | None = None, device: str | None = None,
            callback: Callable | None = None) -> JobOutcome:
    """Render one job unless its output already holds the same parameters' hash.

    Never raises for a job's own problem (bad input, NaN): the outcome says what went wrong.
    ``backends`` shares built backends across jobs (graphs and engines built once); ``device``
    overrides the job's (a worker's own GPU, ``cuda:N``) without changing its parameters.
    """
    try:
        remove_stale_temporaries(job.output)
        digest = job_hash(job)
        if job.output.exists():
            existing = _existing_hash(job.output)
            if existing == digest:
                return JobOutcome(job.line, str(job.output), "skipped")
            if not overwrite:
                return JobOutcome(job.line, str(job.output), "failed",
                                  "output exists with other parameters; pass --overwrite to replace it")
        config = job.config
        target = resolve_device(device or config.runtime.device)
        content = load_image(job.content) if job.content else None
        styles = [load_image(path) for path in job.styles]
        content_map = load_image(job.content_map) if job.content_map else None
        style_maps = [load_image(path) for path in job.style_maps] if job.style_maps else None
        backend = None
        if backends is not None:
            reference = content if content is not None else content_map
            backend = backends.get(config, target, plan_for(config, reference, target).shapes)
        result = render(config, content, styles, backend=backend, callback=callback, content_map=content_map,
                        style_maps=style_maps, target_cache=cache)
        job.output.parent.mkdir(parents=True, exist_ok=True)
        metadata = {"content": str(job.content) if job.content else None, "styles": [str(s) for s in job.styles],
                    "config": config.to_dict(), _HASH_KEY: digest, "iterations_done": result.iterations}
        save_image(result.image, job.output, metadata=metadata, overwrite=True)
        return JobOutcome(job.line, str(job.output), "done", seconds=round(result.elapsed, 3))
    except StyleforgeError as error:
        return JobOutcome(job.line, str(job.output), "failed", str(error))
    except (OSError, RuntimeError, ValueError) as error:  # a full disk, a CUDA error: this job's, not the batch's
        return JobOutcome(job.line, str(job.output), "failed", f"{type(error).__name__}: {error}")


def _existing_hash(path: Path) -> str | None:
    try:
        metadata = read_metadata(path)
    except ImageError:
        return None
    return metadata.get(_HASH_KEY) if isinstance(metadata, dict) else None


def summarize(outcomes: Iterable[JobOutcome]) -> dict[str, Any]:
    outcomes = list(outcomes)
    return {
        "done": sum(o.status == "done" for o in outcomes),
        "skipped": sum(o.status == "skipped" for o in outcomes),
        "failed": sum(o.status == "failed" for o in outcomes),
        "jobs": [o.__dict__ for o in outcomes],
    }


def write_report(path: str | Path, outcomes: Iterable[JobOutcome], **extra: Any) -> dict[str, Any]:
    """Write the batch's report (summarize's dict and ``extra``) atomically; returns it."""
    report = {**summarize(outcomes), **extra}
    write_json_atomic(path, report)
    return report
