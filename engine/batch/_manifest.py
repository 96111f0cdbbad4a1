"""Batch manifests: parsing and validation before any work.

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
import io
import json
import os
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._config import RenderConfig
from .._errors import ConfigError, ImageError, InputError, StyleforgeError
from .._image import check_output_path

__all__ = ["BatchJob", "ManifestError", "glob_jobs", "load_manifest", "parse_option_value"]

#: Job keys that are not render options.
_JOB_FIELDS = {"content", "content_map", "style", "styles", "style_map", "style_maps", "output"}


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
    config = RenderConfig.from_options(options)
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
