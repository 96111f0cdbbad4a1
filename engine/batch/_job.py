"""One batch job: resume by parameter hash, the shared backends and targets, and its outcome.

Each output embeds the hash of everything that decides its pixels (the options and the input
files' bytes), so a rerun skips the jobs whose output exists with the same hash and redoes the
rest; outputs are written atomically, so a job killed midway leaves no file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._device import resolve_device
from .._config import RenderConfig
from .._errors import ConfigError, ImageError, RenderInterrupted, StyleforgeError
from .._files import probe_writable, remove_stale_temporaries, sha256_file, write_json_atomic
from .._image import DEFAULT_MAX_PIXELS, load_image, read_metadata, save_image
from .._plate import Plate, read_plate
from .._maps import is_color, load_map, load_style_maps
from ..backends import Backend, backend_for, backend_key, resolve_precision
from ..rendering import TargetCache, crop_to_frame, plan_for, render
from ..video import frame_store, open_frames, render_shot
from ._manifest import BatchJob

__all__ = ["STATUSES", "BackendPool", "BatchInterrupted", "JobOutcome", "PreparedJob", "RenderedJob",
           "complete_outcomes", "guarded", "job_hash", "read_job", "render_job", "run_job", "summarize", "write_job",
           "write_report"]

_HASH_KEY = "job_hash"


def job_hash(job: BatchJob) -> str:
    """sha256 of everything that decides the job's pixels: options (``--precision auto`` as the
    precision it runs in here, so a machine that resolves it otherwise does not take another's
    output for its own) and input file bytes."""
    spec: dict[str, object] = {
        "config": resolve_precision(job.config, resolve_device(job.config.runtime.device)).hashed(),
        "inputs": {role: sha256_file(path) if path is not None else None for role, path in (
            ("content", job.content), ("content_map", job.content_map))},
        "styles": [sha256_file(path) for path in job.styles],
        "style_maps": [str(path) if is_color(path) else sha256_file(path) for path in job.style_maps]
        if job.style_maps else None,
    }
    if job.config.optimization.init_image is not None:  # only then: earlier outputs keep their hashes
        spec["init_image"] = sha256_file(job.config.optimization.init_image)
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class BackendPool:
    """Backends built once per worker and shared by its jobs, keyed by backends.backend_key (the
    config's runtime group, taps and device), so a job never runs on a backend built for
    another precision, graph mode or model."""

    backends: dict[tuple[object, ...], Backend] = field(default_factory=dict)

    def get(self, config: RenderConfig, device: torch.device, sizes: Sequence[tuple[int, int]]) -> Backend:
        key = backend_key(config, device)
        if key not in self.backends:
            self.backends[key] = backend_for(config, device, sizes)
        return self.backends[key]


#: A job's outcome: rendered, skipped (its output holds the same hash), failed (the reason says
#: why), interrupted (Ctrl-C while it ran) or not run (the batch stopped before it).
STATUSES = ("done", "skipped", "failed", "interrupted", "not run")


@dataclass(frozen=True)
class JobOutcome:
    line: int
    output: str
    status: str  # one of STATUSES
    reason: str | None = None
    seconds: float = 0.0


class BatchInterrupted(StyleforgeError):
    """Ctrl-C stopped the batch; ``outcomes`` has one per job, in the jobs' order (the running
    ones "interrupted", the rest "not run")."""

    def __init__(self, outcomes: list[JobOutcome]) -> None:
        self.outcomes = outcomes
        finished = sum(o.status in ("done", "skipped", "failed") for o in outcomes)
        super().__init__(f"interrupted after {finished} of {len(outcomes)} jobs")


def complete_outcomes(jobs: Sequence[BatchJob], outcomes: dict[int, JobOutcome],
                      missing: str = "not run") -> list[JobOutcome]:
    """One outcome per job in the jobs' order, ``missing`` for those without one."""
    return [outcomes.get(index) or JobOutcome(job.line, str(job.output), missing) for index, job in enumerate(jobs)]


@dataclass
class PreparedJob:
    """A still job's read phase done: its parameters' hash and its decoded inputs."""

    digest: str
    content: torch.Tensor | None
    styles: list[torch.Tensor]
    content_map: torch.Tensor | None
    style_maps: list[torch.Tensor] | None
    plate: Plate | None = None  # an EXR content: rendered display-referred, written back to its scene values


@dataclass
class RenderedJob:
    """A still job's render done, its image not yet written."""

    image: torch.Tensor
    metadata: dict[str, Any]
    seconds: float
    plate: Plate | None = None


def run_job(job: BatchJob, *, overwrite: bool = False, cache: TargetCache | None = None,
            backends: BackendPool | None = None, device: str | None = None,
            callback: Callable | None = None) -> JobOutcome:
    """Render one job unless its output already holds the same parameters' hash.

    Never raises for a job's own problem, of any kind (bad input, NaN, a full disk, a bug on one
    job's path): the outcome says what went wrong. Ctrl-C (KeyboardInterrupt, RenderInterrupted)
    is not the job's: it propagates, and the caller stops the batch. ``backends`` shares built
    backends across jobs (graphs and engines built once); ``device`` overrides the job's (a
    worker's own GPU, ``cuda:N``) without changing its parameters.

    The three phases (``read_job``, ``render_job``, ``write_job``) are public so a batch can
    overlap one job's reading and another's writing with a render (run_batch does).
    """
    if job.kind == "video":
        return guarded(job, lambda: _run_shot(job, overwrite=overwrite, cache=cache, backends=backends,
                                              device=device, callback=callback))
    prepared = guarded(job, lambda: read_job(job, overwrite=overwrite))
    if isinstance(prepared, JobOutcome):
        return prepared
    rendered = guarded(job, lambda: render_job(job, prepared, cache=cache, backends=backends, device=device,
                                               callback=callback))
    return rendered if isinstance(rendered, JobOutcome) else write_job(job, rendered)


def guarded(job: BatchJob, step: Callable[[], Any]) -> Any:
    """``step()``, or the failed outcome its exception means for ``job`` (Ctrl-C propagates)."""
    try:
        return step()
    except RenderInterrupted:  # a shot's ShotInterrupted too
        raise
    except StyleforgeError as error:
        return JobOutcome(job.line, str(job.output), "failed", str(error))
    except OSError as error:  # a full disk, a folder that cannot be made: this job's, not the batch's
        where = f"{error.filename}: " if error.filename else ""
        return JobOutcome(job.line, str(job.output), "failed", f"{where}{error.strerror or error}")
    except Exception as error:  # a CUDA error, a bug on one job's path: recorded, and the batch goes on
        return JobOutcome(job.line, str(job.output), "failed", f"{type(error).__name__}: {error}")


def read_job(job: BatchJob, *, overwrite: bool = False) -> PreparedJob | JobOutcome:
    """A still job's read phase: its hash, the outcome already decided by an existing output
    (skipped, or refused without ``overwrite``), a check that the output can be written, and
    its decoded inputs. Raises on the job's own problems (``guarded`` turns them into outcomes)."""
    remove_stale_temporaries(job.output)
    digest = job_hash(job)
    if job.output.exists():
        existing = _existing_hash(job.output)
        if existing == digest:
            return JobOutcome(job.line, str(job.output), "skipped")
        if not overwrite:
            return JobOutcome(job.line, str(job.output), "failed",
                              "output exists with other parameters; pass --overwrite to replace it")
    # Before the work: a folder that cannot be made or written fails this job, not its render.
    probe_writable(job.output)
    colors = job.config.color_management

    def load(path: Path) -> torch.Tensor:
        return load_image(path, colorspace=colors.input_colorspace, view=colors.view)

    plate = read_plate(job.content, colorspace=colors.input_colorspace, view=colors.view, max_pixels=DEFAULT_MAX_PIXELS,
                       size=job.config.pyramid.size) if job.content and job.content.suffix.lower() == ".exr" else None
    styles = [load(path) for path in job.styles]
    content = plate.display if plate is not None else load(job.content) if job.content else None
    return PreparedJob(digest, content, styles, load_map(job.content_map) if job.content_map else None,
                       load_style_maps(job.style_maps, styles) if job.style_maps else None, plate)


def render_job(job: BatchJob, prepared: PreparedJob, *, cache: TargetCache | None = None,
               backends: BackendPool | None = None, device: str | None = None,
               callback: Callable | None = None) -> RenderedJob:
    """A still job's render from its read inputs; its metadata records the precision that ran."""
    target = resolve_device(device or job.config.runtime.device)
    config = resolve_precision(job.config, target)
    backend = None
    if backends is not None:
        reference = prepared.content if prepared.content is not None else prepared.content_map
        backend = backends.get(config, target, plan_for(config, reference, target).shapes)
    result = render(config, prepared.content, prepared.styles, backend=backend, callback=callback,
                    content_map=prepared.content_map, style_maps=prepared.style_maps, target_cache=cache)
    metadata = {"content": str(job.content) if job.content else None, "styles": [str(s) for s in job.styles],
                "config": config.to_dict(), _HASH_KEY: prepared.digest, "iterations_done": result.iterations}
    if prepared.plate is not None:
        metadata["color"] = prepared.plate.pipeline.describe()
    return RenderedJob(result.image.cpu(), metadata, result.elapsed, prepared.plate)


def write_job(job: BatchJob, rendered: RenderedJob) -> JobOutcome:
    """A still job's write phase: its image, atomically, with the hash that lets a rerun skip it."""

    def write() -> JobOutcome:
        try:
            job.output.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # save_image fails on it and keeps the image in the cache, saying where
        colors = job.config.color_management
        save_image(rendered.image, job.output, metadata=rendered.metadata, overwrite=True, recover=True,
                   plate=rendered.plate, colorspace=colors.output_colorspace or colors.input_colorspace,
                   view=colors.view)
        return JobOutcome(job.line, str(job.output), "done", seconds=round(rendered.seconds, 3))

    return guarded(job, write)


def _run_shot(job: BatchJob, *, overwrite: bool, cache: TargetCache | None, backends: BackendPool | None,
              device: str | None, callback: Callable | None) -> JobOutcome:
    """A video job: render_shot resumes by its frames' own hashes ("skipped": every frame and the
    video were finished by an earlier run). ``callback`` gets each frame's RenderEvents."""
    config = job.config
    store = frame_store(job.output)
    if job.content is None:  # load_manifest refuses such a job; one built in Python may not have been
        raise ConfigError("a video job needs a content: a video, a folder or a glob of frames", field="content")
    # The shot's own frames are not its input; a manifest's frames key picks a range of a sequence.
    source = open_frames(job.content, exclude=store.owns, frames=job.frames)
    colors = config.color_management  # an EXR style is read as a still job reads it
    styles = [load_image(path, colorspace=colors.input_colorspace, view=colors.view) for path in job.styles]
    backend = None
    if backends is not None:
        target = resolve_device(device or config.runtime.device)
        reference = crop_to_frame(torch.empty((3, source.height, source.width)), config)
        backend = backends.get(config, target, plan_for(config, reference, target).shapes)
    metadata = {"input": str(job.content), "styles": [str(s) for s in job.styles]}
    result = render_shot(config, source, styles, store, video=job.video, overwrite=overwrite,
                         metadata=metadata, backend=backend, target_cache=cache,
                         callback=(lambda event: callback(event.step) if event.step is not None else None)
                         if callback is not None else None)
    status = "skipped" if result.rendered == 0 else "done"
    return JobOutcome(job.line, str(job.output), status, seconds=round(result.seconds, 3))


def _existing_hash(path: Path) -> str | None:
    try:
        metadata = read_metadata(path)
    except ImageError:
        return None
    return metadata.get(_HASH_KEY) if isinstance(metadata, dict) else None


def summarize(outcomes: Iterable[JobOutcome]) -> dict[str, Any]:
    outcomes = list(outcomes)
    counts = {status.replace(" ", "_"): sum(o.status == status for o in outcomes) for status in STATUSES}
    return {**counts, "jobs": [o.__dict__ for o in outcomes]}


def write_report(path: str | Path, outcomes: Iterable[JobOutcome], **extra: Any) -> dict[str, Any]:
    """Write the batch's report (summarize's dict and ``extra``) atomically; returns it."""
    report = {**summarize(outcomes), **extra}
    write_json_atomic(path, report)
    return report
