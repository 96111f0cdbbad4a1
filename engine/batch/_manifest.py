"""Batch manifests: parsing and validation before any work.

A manifest is JSONL, CSV or TOML. Each job names a content image (or a content map), style
images (with optional blend weights and style maps), an output path and any render option;
defaults for the whole manifest come first:

- JSONL: an optional first line ``{"defaults": {...}}``, then one job object per line;
- CSV: optional ``# option = value`` lines, then a header row; several styles are separated by
  ``;`` in the ``style`` column;
- TOML: a ``[defaults]`` table and ``[[job]]`` tables.

A job with ``kind = "video"`` is a shot: its content is a video, a folder or a glob of frames,
its output a video or a frame pattern, and it takes the video options (``temporal_weight``,
``frame_iterations``, ``flow_preset``, ``fps``, ``codec``, ``crf``) beside the render options, and
``frames`` (``"1001-1050"``, or one frame, as ``--frames`` takes them) for a range of a numbered
sequence (``plate.####.exr``).

Every job is checked (files present, options valid, outputs distinct, no output that is any
job's input, outputs inside the manifest's folder or the output root, folders writable) before
any render starts, and each problem is reported with its line number. Each output embeds the hash of everything
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

from .._config import INITS, RenderConfig
from .._errors import ConfigError, ImageError, InputError, StyleforgeError, check_choice
from .._image import check_output_path
from .._maps import check_map_spec, is_color
from .._values import coerce_path, coerce_paths
from ..video import VideoConfig, find_sequence, frame_path, frame_store, is_sequence, parse_frame_range

__all__ = ["BatchJob", "ManifestError", "glob_jobs", "load_manifest", "parse_option_value"]

#: Job keys that are not render options.
_JOB_FIELDS = {"content", "content_map", "style", "styles", "style_map", "style_maps", "output", "kind", "frames"}
#: What a job's ``kind`` may be: one image, or a shot (engine.video).
KINDS = ("image", "video")
#: The options a video job takes beside the render options.
_VIDEO_FIELDS = tuple(VideoConfig.__dataclass_fields__)
#: What --glob's output template may name.
_TEMPLATE_FIELDS = ("stem", "name", "index", "frame")


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
    style_maps: tuple[Path, ...] | None = None  # a flat "#rrggbb" colour stays as it is written
    kind: str = "image"  # one of KINDS
    video: VideoConfig | None = None  # a video job's options
    frames: tuple[int, int] | None = None  # a video job's range of a numbered sequence (first, last)

    def input_roles(self) -> list[tuple[str, Path]]:
        """(role, path) of every file the job reads: content, maps, styles and an init image."""
        roles = [("content", self.content), ("content_map", self.content_map)]
        roles += [(f"style {index}", path) for index, path in enumerate(self.styles, start=1)]
        roles += [(f"style_map {index}", path) for index, path in enumerate(self.style_maps or (), start=1)
                  if not is_color(path)]
        roles.append(("init", self.config.optimization.init_image))
        return [(role, path) for role, path in roles if path is not None]

    def inputs(self) -> list[Path]:
        return [path for _, path in self.input_roles()]


#: A manifest's job: its line number and its options, or why the line cannot be read.
_Entry = tuple[int, dict[str, Any] | str]


def _resolve(value: str, base: Path) -> Path:
    """A manifest's path: ``~`` expanded, relative to ``base``."""
    path = Path(value)
    try:
        path = path.expanduser()
    except RuntimeError:  # ~someone without a home: a plain name then
        pass
    return path if path.is_absolute() else base / path


def _build_job(line: int, entry: dict[str, Any], defaults: dict[str, Any], base: Path, output_base: Path) -> BatchJob:
    merged = {str(key).replace("-", "_"): value for key, value in {**defaults, **entry}.items()
              if value is not None and not (isinstance(value, str) and value == "")}
    options = {key: value for key, value in merged.items() if key not in _JOB_FIELDS}

    def paths(*keys: str) -> tuple[Path, ...]:
        key = next((k for k in keys if k in merged), None)
        if key is None:
            return ()
        given = coerce_paths(key, merged[key], separator=";")
        if key.startswith("style_map"):
            for spec in given:  # "#f00" is a colour written wrong, not a missing file
                if not _resolve(spec, base).exists():
                    check_map_spec(spec)
        return tuple(Path(p) if is_color(p) else _resolve(p, base) for p in given)  # a colour is no path

    styles = paths("styles", "style")
    style_maps = paths("style_maps", "style_map") or None
    content = _resolve(coerce_path("content", merged["content"]), base) if "content" in merged else None
    content_map = _resolve(coerce_path("content_map", merged["content_map"]), base) if "content_map" in merged else None
    if "output" not in merged:
        raise ConfigError("no output")
    output = _resolve(coerce_path("output", merged["output"]), output_base)
    if not styles:
        raise ConfigError("no style image")
    if content is None and content_map is None:
        raise ConfigError("no content image (or content_map)")
    kind = check_choice("kind", str(merged.get("kind", "image")), KINDS)
    video = None
    frames = _frame_range(merged["frames"], kind, content) if "frames" in merged else None
    if kind == "video":
        video = VideoConfig(**{key: options.pop(key) for key in _VIDEO_FIELDS if key in options})
        frame_store(output)  # a video or a frame pattern
        if content is None:  # a content_map alone: the error named no file ("None: no such video")
            raise ConfigError("a video job needs a content: a video, a folder or a glob of frames", field="content")
        if is_sequence(content):
            find_sequence(content, frames)  # missing frames named by number, before any work
        elif not (content.exists() or globbing.has_magic(str(content))):
            raise ImageError(content, "no such video, folder or frames")
    init = options.get("init")
    if isinstance(init, str) and init not in INITS and "\0" not in init:
        options["init"] = str(_resolve(init, base))  # relative to the manifest, as every path in it
    config = RenderConfig.from_options(options)
    for path in [content if kind == "image" else None, content_map, *styles, *(style_maps or ())]:
        if path is not None and not is_color(path) and not path.is_file():
            raise ImageError(path, "no such file")
    return BatchJob(line=line, output=output, styles=styles, config=config, content=content,
                    content_map=content_map, style_maps=style_maps, kind=kind, video=video, frames=frames)


def _frame_range(value: Any, kind: str, content: Path | None) -> tuple[int, int]:
    """A video job's ``frames``: FIRST-LAST or one frame, as --frames takes them (a TOML or CSV
    number is one frame), of a numbered sequence."""
    if kind != "video":
        raise ConfigError('a range of frames is for a video job (kind = "video") of a numbered sequence',
                          field="frames")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ConfigError(f"{value!r} is not a frame range; give FIRST-LAST as a string (\"1001-1050\") or one "
                          "frame", field="frames")
    frames = parse_frame_range(str(value))
    assert frames is not None
    if content is None or not is_sequence(content):  # no content: say so, not "None: ..."
        raise ConfigError(f"{content or 'a job without a content'}: a range of frames needs a numbered sequence "
                          "(plate.####.exr or plate.%04d.exr)", field="frames")
    return frames


def _parse_jsonl(text: str) -> tuple[dict[str, Any], list[_Entry]]:
    defaults: dict = {}
    entries: list[_Entry] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError) as error:  # JSONDecodeError, an integer too long, nesting
            entries.append((number, f"invalid JSON ({getattr(error, 'msg', None) or error})"))
            continue
        if not isinstance(value, dict):
            entries.append((number, "a job must be a JSON object"))
        elif not entries and set(value) == {"defaults"}:
            if isinstance(value["defaults"], dict):
                defaults = value["defaults"]
            else:
                entries.append((number, f"defaults: must be a table of options, got {value['defaults']!r}"))
        else:
            entries.append((number, value))
    return defaults, entries


def _read_toml_value(text: str) -> Any:
    """A value written as TOML writes it (``v = TEXT``); ValueError if it is none."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except (tomllib.TOMLDecodeError, ValueError):  # ValueError: an integer too long to convert
        raise ValueError(text) from None


def _parse_csv(text: str) -> tuple[dict[str, Any], list[_Entry]]:
    defaults: dict = {}
    lines = text.splitlines()
    start = 0
    while start < len(lines) and (not lines[start].strip() or lines[start].lstrip().startswith("#")):
        match = re.match(r"\s*#\s*([\w-]+)\s*=\s*(.+?)\s*$", lines[start])
        if match:
            try:
                defaults[match.group(1)] = _read_toml_value(match.group(2))
            except ValueError:
                defaults[match.group(1)] = match.group(2)
        start += 1
    reader = csv.DictReader(io.StringIO("\n".join(lines[start:])))
    entries: list[_Entry] = []
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
        return _read_toml_value(text)
    except ValueError:
        return text


def _parse_toml(text: str) -> tuple[dict[str, Any], list[_Entry]]:
    data = tomllib.loads(text)
    unknown = sorted(set(data) - {"defaults", "job"})
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {', '.join(map(repr, unknown))}; a TOML manifest has a "
                          "[defaults] table and [[job]] tables")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigError(f"[defaults] must be a table of options, got {defaults!r}")
    jobs = data.get("job", [])
    if not isinstance(jobs, list) or not all(isinstance(job, dict) for job in jobs):
        raise ConfigError("jobs are [[job]] tables (an array of tables), not [job] or job = ...")
    job_lines = [number for number, raw in enumerate(text.splitlines(), start=1) if raw.strip() == "[[job]]"]
    return defaults, [(job_lines[i] if i < len(job_lines) else 0, job) for i, job in enumerate(jobs)]


def load_manifest(path: str | os.PathLike, *, overrides: dict[str, Any] | None = None,
                  output_root: str | os.PathLike | None = None, allow_outside: bool = False,
                  base: dict[str, Any] | None = None) -> list[BatchJob]:
    """Parse and validate a whole manifest; relative paths are relative to the manifest's folder.

    ``overrides`` (options from the command line) apply to every job; ``base`` (a config file's
    options) lies under the manifest's defaults, which replace it. Outputs are relative to
    ``output_root`` when given, and must lie inside it (default: the manifest's folder), through
    symlinks, unless ``allow_outside``. Raises ManifestError with every bad line before any work.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise ConfigError("manifest not found", source=source)
    parsers = {".jsonl": _parse_jsonl, ".ndjson": _parse_jsonl, ".csv": _parse_csv, ".toml": _parse_toml}
    parser = parsers.get(path.suffix.lower())
    if parser is None:
        raise ConfigError("manifest must be .jsonl, .csv or .toml", source=source)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"not UTF-8 text ({error.reason} at byte {error.start})", source=source) from None
    except OSError as error:
        raise ConfigError(f"cannot be read ({error.strerror or error})", source=source) from None
    try:
        defaults, entries = parser(text)
    except (tomllib.TOMLDecodeError, csv.Error) as error:
        raise ConfigError(str(error), source=source) from None
    except ValueError as error:  # tomllib: an integer too long to convert
        raise ConfigError(f"invalid TOML ({error})", source=source) from None
    except ConfigError as error:
        raise ConfigError(error.problem, field=error.field, source=source) from None
    root = Path(output_root) if output_root is not None else path.parent
    return _validate(source, entries, {**(base or {}), **defaults, **(overrides or {})}, path.parent, root,
                     confine=not allow_outside)


def _check_template(template: str) -> None:
    """Refuse an output template that names anything but {stem}, {name} and {index}."""
    try:
        template.format(stem="x", name="x.png", index=1, frame=1)
    except KeyError as error:
        raise ConfigError(f"unknown field {{{error.args[0]}}} in {template!r}; use "
                          f"{', '.join('{' + f + '}' for f in _TEMPLATE_FIELDS)}", field="output") from None
    except (IndexError, ValueError, AttributeError, TypeError) as error:
        raise ConfigError(f"{template!r} is not an output template ({error}); use "
                          f"{', '.join('{' + f + '}' for f in _TEMPLATE_FIELDS)}", field="output") from None


def glob_jobs(pattern: str, *, styles: Sequence[str], output: str, options: dict[str, Any] | None = None,
              style_maps: Sequence[str] | None = None, output_root: str | os.PathLike | None = None,
              allow_outside: bool = False, frames: tuple[int, int] | None = None) -> list[BatchJob]:
    """Jobs for every file matching ``pattern``, or every frame of a numbered sequence
    (``plate.####.exr``, ``plate.%04d.exr``; only ``frames`` (first, last) of it if given; a
    missing frame is an error naming it); ``output`` may use {stem}, {name}, {index} and {frame}
    (the sequence's frame number, else the index), or be a sequence pattern itself
    (``out/styled.####.exr``: the input's frame numbers). Relative outputs are relative to
    ``output_root`` when given (and must stay inside it unless ``allow_outside``), else to the
    working folder."""
    _check_template(output)
    pattern = os.path.expanduser(pattern)
    if is_sequence(pattern):
        try:
            sequence = find_sequence(pattern, frames)
        except ImageError as error:
            raise ConfigError(error.reason, field="glob", source=pattern) from None
        matches, numbers = [str(path) for path in sequence.files], list(sequence.numbers)
    elif frames is not None:
        raise ConfigError(f"{pattern}: a range of frames needs a numbered sequence (plate.####.exr)", field="frames")
    else:
        try:
            matches = sorted(globbing.glob(pattern))
        except (ValueError, OSError) as error:
            raise ConfigError(f"{pattern!r} cannot be searched ({error})", field="glob") from None
        matches = [match for match in matches if not os.path.isdir(match)]
        numbers = list(range(1, len(matches) + 1))
    if not matches:
        raise ConfigError(f"no file matches {pattern!r}", field="glob")
    entries: list[_Entry] = []
    for index, (match, number) in enumerate(zip(matches, numbers, strict=True), start=1):
        source = Path(match)
        target = output.format(stem=source.stem, name=source.name, index=index, frame=number)
        if is_sequence(target):
            target = str(frame_path(target, number))
        entries.append((index, {"content": str(source), "style": list(styles), "output": target,
                                **({"style_map": list(style_maps)} if style_maps else {})}))
    root = Path(output_root) if output_root is not None else Path.cwd()
    return _validate("--glob", entries, dict(options or {}), Path.cwd(), root,
                     confine=output_root is not None and not allow_outside)


def _validate(source: str, entries: Sequence[_Entry], defaults: dict[str, Any], base: Path, output_base: Path, *,
              confine: bool) -> list[BatchJob]:
    jobs: list[BatchJob] = []
    problems: list[tuple[int, str]] = []
    for number, entry in entries:
        if isinstance(entry, str):
            problems.append((number, entry))
            continue
        try:
            jobs.append(_build_job(number, entry, defaults, base, output_base))
        except StyleforgeError as error:
            problems.append((number, str(error)))
        except OSError as error:  # a name too long, a loop of links: this line's paths
            problems.append((number, f"{error.filename or ''}: {error.strerror or error}".lstrip(": ")))
    problems += _output_problems(jobs, output_base, confine)
    if problems:
        raise ManifestError(source, sorted(problems))
    if not jobs:
        raise ConfigError(f"{source}: no jobs")
    return jobs


def _output_problems(jobs: list[BatchJob], root: Path, confine: bool) -> list[tuple[int, str]]:
    """Outputs that another job also writes, that are any job's input (through symlinks and hard
    links: with --overwrite the user's photo would be rendered over), that leave the root, or
    whose folder cannot be written."""
    problems: list[tuple[int, str]] = []
    inputs: dict[Any, tuple[int, str]] = {}
    for job in jobs:
        for role, path in job.input_roles():
            try:
                inputs.setdefault(path.resolve(), (job.line, role))
                status = path.stat()
                inputs.setdefault((status.st_dev, status.st_ino), (job.line, role))
            except (OSError, RuntimeError):
                continue
    resolved_root = root.resolve()
    seen: dict[Path, int] = {}
    for job in jobs:
        try:
            resolved = job.output.resolve()
            written = job.output.stat() if job.output.exists() else None
        except (OSError, RuntimeError) as error:
            problems.append((job.line, f"output {job.output}: {error}"))
            continue
        if resolved in seen:
            problems.append((job.line, f"output {job.output} is also written by line {seen[resolved]}"))
        seen.setdefault(resolved, job.line)
        reader = inputs.get(resolved) or (inputs.get((written.st_dev, written.st_ino)) if written else None)
        if reader is not None:
            problems.append((job.line, f"output {job.output} is an input of line {reader[0]} ({reader[1]}); "
                                       "choose another output"))
            continue
        if confine and not resolved.is_relative_to(resolved_root):
            problems.append((job.line, f"output {job.output} is outside {root}; pass --allow-outside to write "
                                       "there"))
            continue
        try:
            check_output_path(job.output, overwrite=True, make_folders=True, image=job.kind == "image")
        except ImageError as error:
            problems.append((job.line, str(error)))
    return problems
