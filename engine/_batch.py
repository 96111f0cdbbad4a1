"""Batch jobs: manifests, validation before any work, resume by parameter hash, shared targets.

A manifest is JSONL, CSV or TOML. Each job names a content image (or a content map), style
images (with optional blend weights and style maps), an output path and any render option;
defaults for the whole manifest come first:

- JSONL: an optional first line ``{"defaults": {...}}``, then one job object per line;
- CSV: optional ``# option = value`` lines, then a header row; several styles are separated by
  ``;`` in the ``style`` column;
- TOML: a ``[defaults]`` table and ``[[job]]`` tables.

Every job is checked (files present, options valid, outputs distinct) before any render starts,
and each problem is reported with its line number. Each output embeds the hash of everything
that decides its pixels (the options and the input files' bytes), so a rerun skips the jobs whose
output exists with the same hash and redoes the rest; outputs are written atomically, so a job
killed midway leaves no file.
"""

from __future__ import annotations

import csv
import glob as globbing
import hashlib
import io
import json
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ._config import RenderConfig
from ._errors import ConfigError, ImageError, InputError, StyleforgeError
from ._image import check_output_path, load_image, read_metadata, remove_stale_temporaries, save_image
from ._weights import sha256_file

__all__ = [
    "BatchJob",
    "JobOutcome",
    "ManifestError",
    "TargetCache",
    "glob_jobs",
    "job_hash",
    "load_manifest",
    "parse_option_value",
    "run_batch",
    "run_job",
    "summarize",
    "write_json_atomic",
]

#: Job keys that are not render options.
_JOB_FIELDS = {"content", "content_map", "style", "styles", "style_map", "style_maps", "output"}
_HASH_KEY = "job_hash"


class ManifestError(InputError):
    """One or more manifest lines are unusable; ``problems`` lists (line, message)."""

    def __init__(self, source: str, problems: Sequence[tuple[int, str]]) -> None:
        self.problems = list(problems)
        lines = "; ".join(f"line {line}: {message}" for line, message in self.problems[:20])
        more = f" (and {len(self.problems) - 20} more)" if len(self.problems) > 20 else ""
        super().__init__(f"{source}: {len(self.problems)} bad job(s): {lines}{more}")


@dataclass(frozen=True)
class BatchJob:
    """One render of a batch, resolved and validated."""

    line: int
    output: Path
    styles: tuple[Path, ...]
    config: RenderConfig
    content: Path | None = None
    content_map: Path | None = None
    style_maps: tuple[Path, ...] | None = None

    def inputs(self) -> list[Path]:
        paths = [self.content, self.content_map, *self.styles, *(self.style_maps or ())]
        return [path for path in paths if path is not None]


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


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(";") if part.strip()]
    return [str(part) for part in value]


def _build_job(line: int, entry: dict[str, Any], defaults: dict[str, Any], base: Path) -> BatchJob:
    merged = {key.replace("-", "_"): value for key, value in {**defaults, **entry}.items()
              if value not in (None, "")}
    options = {key: value for key, value in merged.items() if key not in _JOB_FIELDS}

    def resolve(value: Any) -> Path:
        path = Path(str(value)).expanduser()
        return path if path.is_absolute() else base / path

    styles = tuple(resolve(p) for p in _as_list(merged.get("styles", merged.get("style"))))
    style_maps = tuple(resolve(p) for p in _as_list(merged.get("style_maps", merged.get("style_map")))) or None
    content = resolve(merged["content"]) if merged.get("content") else None
    content_map = resolve(merged["content_map"]) if merged.get("content_map") else None
    if "output" not in merged:
        raise ConfigError("no output")
    if not styles:
        raise ConfigError("no style image")
    if content is None and content_map is None:
        raise ConfigError("no content image (or content_map)")
    base_config = RenderConfig.mrf() if options.get("method") == "mrf" else RenderConfig()
    config = base_config.replace(options, source="options")
    for path in [content, content_map, *styles, *(style_maps or ())]:
        if path is not None and not path.is_file():
            raise ImageError(path, "no such file")
    output = resolve(merged["output"])
    return BatchJob(line=line, output=output, styles=styles, config=config, content=content,
                    content_map=content_map, style_maps=style_maps)


def _parse_jsonl(text: str) -> tuple[dict, list[tuple[int, dict | str]]]:
    defaults: dict = {}
    entries: list[tuple[int, dict | str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as error:
            entries.append((number, f"invalid JSON ({error.msg})"))
            continue
        if not isinstance(value, dict):
            entries.append((number, "a job must be a JSON object"))
        elif not entries and set(value) == {"defaults"}:
            defaults = value["defaults"]
        else:
            entries.append((number, value))
    return defaults, entries


def _parse_csv(text: str) -> tuple[dict, list[tuple[int, dict | str]]]:
    defaults: dict = {}
    lines = text.splitlines()
    start = 0
    while start < len(lines) and (not lines[start].strip() or lines[start].lstrip().startswith("#")):
        match = re.match(r"\s*#\s*([\w-]+)\s*=\s*(.+?)\s*$", lines[start])
        if match:
            try:
                defaults[match.group(1)] = tomllib.loads(f"v = {match.group(2)}")["v"]
            except tomllib.TOMLDecodeError:
                defaults[match.group(1)] = match.group(2)
        start += 1
    reader = csv.DictReader(io.StringIO("\n".join(lines[start:])))
    entries: list[tuple[int, dict | str]] = []
    for row in reader:
        number = start + reader.line_num
        if None in row:
            entries.append((number, "more fields than the header has columns"))
            continue
        entries.append((number, {key: parse_option_value(value) for key, value in row.items() if key}))
    return defaults, entries


def parse_option_value(text: str | None) -> Any:
    """A value written as text (CSV cell, --option): numbers, booleans and lists read as TOML
    reads them, anything else as a string."""
    if text is None or text == "":
        return None
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _parse_toml(text: str) -> tuple[dict, list[tuple[int, dict | str]]]:
    data = tomllib.loads(text)
    job_lines = [number for number, raw in enumerate(text.splitlines(), start=1) if raw.strip() == "[[job]]"]
    jobs = data.get("job", [])
    return data.get("defaults", {}), [(job_lines[i] if i < len(job_lines) else 0, job) for i, job in enumerate(jobs)]


def load_manifest(path: str | os.PathLike, *, overrides: dict[str, Any] | None = None) -> list[BatchJob]:
    """Parse and validate a whole manifest; relative paths are relative to the manifest's folder.

    ``overrides`` (options from the command line) apply to every job. Raises ManifestError with
    every bad line before any work starts.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: manifest not found")
    text = path.read_text(encoding="utf-8")
    parsers = {".jsonl": _parse_jsonl, ".ndjson": _parse_jsonl, ".csv": _parse_csv, ".toml": _parse_toml}
    parser = parsers.get(path.suffix.lower())
    if parser is None:
        raise ConfigError(f"{path}: manifest must be .jsonl, .csv or .toml")
    try:
        defaults, entries = parser(text)
    except (tomllib.TOMLDecodeError, csv.Error) as error:
        raise ConfigError(f"{path}: {error}") from None
    return _validate(str(path), entries, {**defaults, **(overrides or {})}, path.parent)


def glob_jobs(pattern: str, *, styles: Sequence[str], output: str, options: dict[str, Any] | None = None,
              style_maps: Sequence[str] | None = None) -> list[BatchJob]:
    """Jobs for every file matching ``pattern``; ``output`` may use {stem}, {name} and {index}."""
    matches = sorted(globbing.glob(os.path.expanduser(pattern)))
    if not matches:
        raise ConfigError(f"--glob: no file matches {pattern!r}")
    entries = []
    for index, match in enumerate(matches, start=1):
        source = Path(match)
        target = output.format(stem=source.stem, name=source.name, index=index)
        entries.append((index, {"content": str(source), "style": list(styles), "output": target,
                                **({"style_map": list(style_maps)} if style_maps else {})}))
    return _validate("--glob", entries, dict(options or {}), Path.cwd())


def _validate(source: str, entries, defaults: dict[str, Any], base: Path) -> list[BatchJob]:
    jobs, problems = [], []
    for number, entry in entries:
        if isinstance(entry, str):
            problems.append((number, entry))
            continue
        try:
            jobs.append(_build_job(number, entry, defaults, base))
        except StyleforgeError as error:
            problems.append((number, str(error)))
    seen: dict[Path, int] = {}
    for job in jobs:
        resolved = job.output.resolve()
        if resolved in seen:
            problems.append((job.line, f"output {job.output} is also written by line {seen[resolved]}"))
        seen.setdefault(resolved, job.line)
        try:
            check_output_path(job.output, overwrite=True)
        except ImageError as error:
            if "does not exist" not in str(error):  # output folders are created when the batch runs
                problems.append((job.line, str(error)))
    if problems:
        raise ManifestError(source, sorted(problems))
    if not jobs:
        raise ConfigError(f"{source}: no jobs")
    return jobs


@dataclass
class TargetCache:
    """Style targets (Gram matrices, MRF patch banks) computed once per key and reused.

    The key covers what decides a target: the style pixels at their working size, the model and
    its weights, the layers and the method's parameters. ``computed`` counts the misses.
    """

    entries: dict[str, Any] = field(default_factory=dict)
    computed: int = 0

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self.entries:
            self.entries[key] = compute()
            self.computed += 1
        return self.entries[key]

    @staticmethod
    def key(*parts: Any) -> str:
        digest = hashlib.sha256()
        for part in parts:
            if isinstance(part, torch.Tensor):
                digest.update(part.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
                digest.update(str(tuple(part.shape)).encode())
            else:
                digest.update(json.dumps(part, sort_keys=True, default=str).encode())
            digest.update(b"\0")
        return digest.hexdigest()


@dataclass(frozen=True)
class JobOutcome:
    line: int
    output: str
    status: str  # "done", "skipped" or "failed"
    reason: str | None = None
    seconds: float = 0.0


def run_job(job: BatchJob, *, overwrite: bool = False, cache: TargetCache | None = None,
            backends: dict | None = None, device: str | None = None,
            callback: Callable | None = None) -> JobOutcome:
    """Render one job unless its output already holds the same parameters' hash.

    Never raises for a job's own problem (bad input, NaN): the outcome says what went wrong.
    ``backends`` maps (model, weights, taps, pooling, backend) to a built Backend, shared across
    jobs so graphs and engines are built once.
    """
    from ._backend import create_backend
    from ._render import render, resolve_device
    from ._weights import load_backbone

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
        config = job.config if device is None else job.config.replace({"device": device})
        target = resolve_device(config.device)
        key = (config.model, config.weights, config.taps, config.pooling, config.backend, str(target))
        backend = None
        if backends is not None:
            if key not in backends:
                backbone = load_backbone(config.model, config.taps, pooling=config.pooling,
                                         weights_path=config.weights, seed=config.seed)
                backends[key] = create_backend(config.backend, backbone, target, model=config.model)
            backend = backends[key]
        content = load_image(job.content) if job.content else None
        styles = [load_image(path) for path in job.styles]
        content_map = load_image(job.content_map) if job.content_map else None
        style_maps = [load_image(path) for path in job.style_maps] if job.style_maps else None
        result = render(config, content, styles, backend=backend, callback=callback, content_map=content_map,
                        style_maps=style_maps, target_cache=cache)
        job.output.parent.mkdir(parents=True, exist_ok=True)
        metadata = {"content": str(job.content) if job.content else None, "styles": [str(s) for s in job.styles],
                    "config": config.to_dict(), _HASH_KEY: digest, "iterations_done": result.iterations}
        save_image(result.image, job.output, metadata=metadata, overwrite=True)
        return JobOutcome(job.line, str(job.output), "done", seconds=round(result.elapsed, 3))
    except StyleforgeError as error:
        return JobOutcome(job.line, str(job.output), "failed", str(error))


def _existing_hash(path: Path) -> str | None:
    try:
        metadata = read_metadata(path)
    except ImageError:
        return None
    return metadata.get(_HASH_KEY) if isinstance(metadata, dict) else None


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON through a temporary file and a rename: readers never see half a report."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(temporary, path)


def summarize(outcomes: Iterable[JobOutcome]) -> dict[str, Any]:
    outcomes = list(outcomes)
    return {
        "done": sum(o.status == "done" for o in outcomes),
        "skipped": sum(o.status == "skipped" for o in outcomes),
        "failed": sum(o.status == "failed" for o in outcomes),
        "jobs": [o.__dict__ for o in outcomes],
    }


# --- running a batch ------------------------------------------------------------------------------

#: Per-process state of a local worker: its device and the caches it keeps across jobs.
_WORKER: dict[str, Any] = {}


def _init_worker(devices, threads: int) -> None:
    device = devices.get() if devices is not None else None
    _WORKER.update(cache=TargetCache(), backends={}, device=None)
    if device is not None:
        torch.cuda.set_device(int(device))
        _WORKER["device"] = "cuda"
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
        from ._batch_ray import run_on_ray

        return run_on_ray(jobs, address=ray_address, overwrite=overwrite, on_outcome=on_outcome)
    outcomes: dict[int, JobOutcome] = {}
    if devices is None and workers <= 1:
        cache = cache if cache is not None else TargetCache()
        backends: dict = {}
        for index, job in enumerate(jobs):
            follow = (lambda event, job=job: on_event(job, event)) if on_event is not None else None
            outcomes[index] = run_job(job, overwrite=overwrite, cache=cache, backends=backends, callback=follow)
            if on_outcome is not None:
                on_outcome(outcomes[index])
        return [outcomes[i] for i in range(len(jobs))]

    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

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
