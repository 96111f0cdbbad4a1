"""``styleforge batch``: many renders from a manifest or a glob."""

from __future__ import annotations

import difflib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from styleforge import engine
# engine.batch and engine.JobOutcome load torch: read from `engine` when the command runs.
from styleforge.engine import ConfigError, RenderConfig, StyleforgeError, VideoConfig

from ._app import EXIT_FAILED, EXIT_INTERRUPTED, HelpCommand, app, check_json_output, one_line, run_guarded, say, stderr
from ._options import with_render_options
from ._preview import PreviewOption, with_preview
from ._render import command_options, split_config_file

if TYPE_CHECKING:  # the preview's server loads only with --preview
    from styleforge.engine.preview import PreviewFeed

#: Options of the batch command that are not render options but may be set in a config file,
#: with the types a file's value may have.
_COMMAND_OPTIONS: dict[str, tuple[type, ...]] = {
    "manifest": (str,), "glob": (str,), "frames": (str,), "style": (str, list), "style_map": (str, list), "output": (str,),
    "output_root": (str,), "allow_outside": (bool,), "workers": (int,), "devices": (str,), "ray": (str,),
    "report": (str,), "overwrite": (bool,), "verbose": (bool,), "quiet": (bool,),
}
#: What --option may set: a render option, or a video job's option.
_OPTION_KEYS = (*RenderConfig.FIELDS, *VideoConfig.__dataclass_fields__)


@app.command(cls=HelpCommand)
@with_render_options
def batch(
    manifest: Annotated[Path | None, typer.Argument(help="Jobs: .jsonl, .csv or .toml (see README).", show_default=False)] = None,
    glob: Annotated[str | None, typer.Option("--glob", metavar="PATTERN", help="Instead of a manifest: every file matching this pattern is a content image; or every frame of a numbered sequence (quoted: 'plate.####.exr', 'plate.%04d.exr').", show_default="none: give a MANIFEST")] = None,
    frames: Annotated[str | None, typer.Option("--frames", metavar="FIRST-LAST", help="With a --glob sequence: only these frames (1001-1050).", show_default="all")] = None,
    style: Annotated[list[Path] | None, typer.Option("--style", "-s", help="With --glob: style image; repeat for several.", show_default="none")] = None,
    style_map: Annotated[list[Path] | None, typer.Option("--style-map", help="With --glob: semantic map of each style.", show_default="none")] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", metavar="TEMPLATE", help="With --glob: output path template with {stem}, {name}, {index} or {frame}, or a sequence (out/styled.####.exr: the input's frame numbers).", show_default="none")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", metavar="KEY=VALUE", help="KEY=VALUE render option for every job (overrides the manifest's defaults, like the option flags); repeat.", show_default="none")] = None,
    output_root: Annotated[Path | None, typer.Option("--output-root", help="Relative outputs go here, and every output must lie inside it.", show_default="the manifest's folder; with --glob, the working folder, unconfined")] = None,
    allow_outside: Annotated[bool, typer.Option("--allow-outside", help="Let outputs lie outside the output root (../x.png, absolute paths).", show_default="off")] = False,
    workers: Annotated[int | None, typer.Option(help="CPU worker processes.", show_default="1")] = None,
    devices: Annotated[str | None, typer.Option(help="GPU indices, one worker each, e.g. 0,1,2,3.", show_default="none: --workers")] = None,
    ray: Annotated[str | None, typer.Option("--ray", help="Run as Ray tasks: auto (local or running cluster) or an address.", show_default="none: local processes")] = None,
    report: Annotated[Path | None, typer.Option(help="JSON report of every job.", show_default="MANIFEST.report.json beside the manifest; with --glob, batch-report.json in the outputs' common folder")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace outputs rendered with other parameters.", show_default="off")] = False,
    config: Annotated[Path | None, typer.Option("--config", help="TOML file setting any of these options; the manifest and the command line override it.", show_default="none")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="One line per finished job.", show_default="off")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar: only errors and the final line.", show_default="off")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.", show_default="off")] = False,
    preview: PreviewOption = None,
    *,
    render_options: dict[str, Any],
) -> None:
    """Render many jobs: validated up front, resumable, failures isolated and reported.

    Every render option may be given as a flag (as for render): it applies to every job,
    over the manifest's defaults. A manifest's outputs stay inside its folder (or --output-root)
    unless --allow-outside; no output may be any job's input. Ctrl-C stops the batch, writes the
    report and exits with 130."""
    given = dict(manifest=manifest, glob=glob, frames=frames, style=style, style_map=style_map, output=output,
                 output_root=output_root, workers=workers, devices=devices, ray=ray, report=report)
    given = {name: value for name, value in given.items() if value is not None}
    given |= {name: True for name, value in dict(allow_outside=allow_outside, overwrite=overwrite, verbose=verbose,
                                                 quiet=quiet).items() if value}
    code = run_guarded(debug, lambda: with_preview(preview, "batch", lambda feed: _from_config(
        config, given, option, render_options, preview_feed=feed)))
    raise typer.Exit(code)


def _from_config(config_path: Path | None, given: dict[str, Any], option: list[str] | None,
                 render_options: dict[str, Any], *, preview_feed: PreviewFeed | None = None) -> int:
    """The batch with a config file's options under the command line's (its render options
    also under the manifest's)."""
    file_options, file_own = split_config_file(config_path, set(_COMMAND_OPTIONS))
    values = {**command_options(file_own, str(config_path), _COMMAND_OPTIONS), **given}
    paths: dict[str, Path] = {key: Path(values[key]) for key in ("manifest", "output_root", "report") if key in values}
    values |= paths
    if config_path is not None:
        # The file's render options are checked now, naming the file, before any job is read.
        RenderConfig.from_options(file_options, source=str(config_path))
    if values.get("verbose") and values.get("quiet"):
        raise ConfigError("--verbose and --quiet ask for opposite things; choose one", field="quiet")
    return _batch(values.get("manifest"), values.get("glob"), values.get("style"), values.get("style_map"),
                  values.get("output"), option, values.get("output_root"), bool(values.get("allow_outside")),
                  values.get("workers", 1), values.get("devices"), values.get("ray"), values.get("report"),
                  bool(values.get("overwrite")), bool(values.get("verbose")), render_options,
                  quiet=bool(values.get("quiet")), base=file_options, frames=values.get("frames"),
                  preview_feed=preview_feed)


def _parse_devices(text: str) -> list[int]:
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() and len(part) < 6 for part in parts):
        raise ConfigError(f"GPU indices separated by commas, such as 0,1,2,3; got {text!r}", field="devices")
    return [int(part) for part in parts]


def _check_report(path: Path, jobs: Sequence[engine.BatchJob], *, beside_outputs: bool) -> None:
    """Before any work: the report can be written, is no job's output, and replaces nothing but
    an earlier report. A report beside the outputs gets their folder made now (the jobs would
    make it anyway), once every job has been checked."""
    if any(path.resolve() == job.output.resolve() for job in jobs):
        raise ConfigError(f"{path} is also a job's output", field="report")
    if beside_outputs:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"{path.parent} cannot be made ({error.strerror or error})", field="report") from None
    check_json_output(path, "jobs", "report")


def _parse_options(option: list[str] | None) -> dict[str, Any]:
    """--option KEY=VALUE items by option name; an unknown key is named with its --option."""
    overrides: dict[str, Any] = {}
    for item in option or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"expected KEY=VALUE, got {item!r}", field="option")
        name = key.strip().replace("-", "_")
        if name not in _OPTION_KEYS:
            hint = difflib.get_close_matches(name, _OPTION_KEYS, n=1)
            raise ConfigError(f"unknown option {key.strip()!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""),
                              source=f"--option {item}")
        overrides[name] = engine.batch.parse_option_value(value.strip())
    return overrides


def _jobs(manifest: Path | None, glob: str | None, style: Sequence[str | Path] | None,
          style_map: Sequence[str | Path] | None, output: str | None, option: list[str] | None,
          output_root: Path | None, allow_outside: bool, render_options: dict[str, Any], base: dict[str, Any],
          frames: str | None = None) -> tuple[list[engine.BatchJob], Path]:
    overrides = {**_parse_options(option), **render_options}
    if (manifest is None) == (glob is None):
        raise ConfigError("give either a MANIFEST or --glob PATTERN", field="glob")
    if manifest is not None and frames is not None:
        raise ConfigError("a range of frames goes with --glob 'plate.####.exr'", field="frames")
    if manifest is not None:
        jobs = engine.load_manifest(manifest, overrides=overrides, output_root=output_root,
                                    allow_outside=allow_outside, base=base)
        return jobs, manifest.with_name(manifest.stem + ".report.json")
    assert glob is not None  # a MANIFEST or --glob, checked above
    if not style or not output:
        raise ConfigError("needs --style and --output (a template such as out/{stem}.png)", field="glob")
    jobs = engine.glob_jobs(glob, styles=[str(s) for s in style], output=output, options={**base, **overrides},
                            style_maps=[str(s) for s in style_map] if style_map else None,
                            output_root=output_root, allow_outside=allow_outside,
                            frames=engine.parse_frame_range(frames))
    # Beside the outputs, not wherever the command happened to run.
    folder = Path(os.path.commonpath([os.path.abspath(job.output.parent) for job in jobs]))
    return jobs, folder / "batch-report.json"


def _batch(manifest: Path | None, glob: str | None, style: Sequence[str | Path] | None,
           style_map: Sequence[str | Path] | None, output: str | None, option: list[str] | None,
           output_root: Path | None, allow_outside: bool, workers: int, devices: str | None, ray: str | None,
           report: Path | None, overwrite: bool, verbose: bool, render_options: dict[str, Any], *,
           quiet: bool = False, base: dict[str, Any] | None = None, frames: str | None = None,
           preview_feed: PreviewFeed | None = None) -> int:
    if workers < 1:
        raise ConfigError(f"must be at least 1, got {workers}", field="workers")
    device_list = _parse_devices(devices) if devices else None
    jobs, default_report = _jobs(manifest, glob, style, style_map, output, option, output_root, allow_outside,
                                 render_options, base or {}, frames)
    report_path = report or default_report
    _check_report(report_path, jobs, beside_outputs=report is None and manifest is None)
    if preview_feed is not None:
        preview_feed.expect_jobs(len(jobs))

    started = time.monotonic()
    counts = {"done": 0, "skipped": 0, "failed": 0}
    finished: dict[tuple[int, str], engine.JobOutcome] = {}
    live = stderr.is_terminal
    progress = Progress(
        TextColumn("[bold]batch"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[counts]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=stderr, disable=quiet or not live, transient=False,
    )
    task = progress.add_task("batch", total=len(jobs), counts="")

    def on_outcome(outcome: engine.JobOutcome) -> None:
        if preview_feed is not None:
            preview_feed.job_outcome(outcome)
        finished[(outcome.line, outcome.output)] = outcome
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
        done = sum(counts.values())
        rate = done / max(time.monotonic() - started, 1e-9) * 3600
        summary = f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed, {rate:.0f} jobs/h"
        progress.update(task, completed=done, counts=summary)
        if outcome.status == "failed" or (not quiet and (verbose or not live)):
            reason = f": {one_line(outcome.reason)}" if outcome.reason else ""
            say(f"line {outcome.line}: {outcome.status} {outcome.output}{reason}")

    def on_event(job: engine.BatchJob, event: engine.RenderEvent) -> None:  # a shot's come per frame
        if preview_feed is not None:
            preview_feed.job_event(job, event)
            if not verbose:
                return
        # Verbose, in-process runs: each job's own progress, a line every 25% of its iterations.
        if event.iteration % max(1, event.iterations // 4) == 0:
            say(f"line {job.line}: iteration {event.iteration}/{event.iterations}, loss {event.loss:.4g}")

    interrupted = False
    try:
        with progress:
            outcomes = engine.run_batch(jobs, overwrite=overwrite, workers=workers, devices=device_list,
                                        ray_address=ray, on_outcome=on_outcome,
                                        on_event=on_event if verbose or preview_feed is not None else None)
    except engine.batch.BatchInterrupted as stop:
        outcomes, interrupted = stop.outcomes, True
    except BaseException as error:
        # A bug in the batch machinery (or the machine) stops it: the report still says what was
        # done. Refused before any job ran (--devices, --ray): nothing to report, nothing written.
        if isinstance(error, StyleforgeError) and not finished:
            raise
        outcomes = [finished.get((job.line, str(job.output))) or engine.JobOutcome(job.line, str(job.output), "not run")
                    for job in jobs]
        engine.batch.write_report(report_path, outcomes, seconds=round(time.monotonic() - started, 2), stopped=True,
                     error=f"{type(error).__name__}: {error}")
        say(f"report: {report_path}")
        raise
    result = engine.batch.write_report(report_path, outcomes, seconds=round(time.monotonic() - started, 2),
                          stopped=interrupted)
    stopped = f", {result['interrupted']} interrupted, {result['not_run']} not run" if interrupted else ""
    say(f"{'interrupted: ' if interrupted else ''}{result['done']} done, {result['skipped']} skipped, "
        f"{result['failed']} failed{stopped} in {result['seconds']:.0f} s; report: {report_path}")
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if result["failed"] else 0
