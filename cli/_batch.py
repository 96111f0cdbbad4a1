"""``styleforge batch``: many renders from a manifest or a glob."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from styleforge import engine
from styleforge.engine import ConfigError
from styleforge.engine.batch import parse_option_value, write_report

from ._app import EXIT_FAILED, app, run_guarded, stderr
from ._options import with_render_options


@app.command()
@with_render_options
def batch(
    manifest: Annotated[Path | None, typer.Argument(help="Jobs: .jsonl, .csv or .toml (see README).", show_default=False)] = None,
    glob: Annotated[str | None, typer.Option("--glob", help="Instead of a manifest: every file matching this pattern is a content image.", show_default=False)] = None,
    style: Annotated[list[Path] | None, typer.Option("--style", "-s", help="With --glob: style image; repeat for several.", show_default=False)] = None,
    style_map: Annotated[list[Path] | None, typer.Option("--style-map", help="With --glob: semantic map of each style.", show_default=False)] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="With --glob: output path template with {stem}, {name} or {index}.", show_default=False)] = None,
    option: Annotated[list[str] | None, typer.Option("--option", help="KEY=VALUE render option for every job (overrides the manifest's defaults, like the option flags); repeat.", show_default=False)] = None,
    workers: Annotated[int, typer.Option(help="CPU worker processes.")] = 1,
    devices: Annotated[str | None, typer.Option(help="GPU indices, one worker each, e.g. 0,1,2,3.", show_default=False)] = None,
    ray: Annotated[str | None, typer.Option("--ray", help="Run as Ray tasks: auto (local or running cluster) or an address.", show_default=False)] = None,
    report: Annotated[Path | None, typer.Option(help="JSON report of every job. [default: MANIFEST.report.json, or batch-report.json for --glob]", show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace outputs rendered with other parameters.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="One line per finished job.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    *,
    render_options: dict[str, Any],
) -> None:
    """Render many jobs: validated up front, resumable, failures isolated and reported.

    Every render option may be given as a flag (as for render): it applies to every job,
    over the manifest's defaults."""
    code = run_guarded(debug, lambda: _batch(manifest, glob, style, style_map, output, option, workers, devices,
                                             ray, report, overwrite, verbose, render_options))
    raise typer.Exit(code)


def _parse_devices(text: str) -> list[int]:
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() for part in parts):
        raise ConfigError(f"GPU indices separated by commas, such as 0,1,2,3; got {text!r}", field="devices")
    return [int(part) for part in parts]


def _batch(manifest, glob, style, style_map, output, option, workers, devices, ray, report, overwrite,
           verbose, render_options) -> int:
    overrides: dict[str, Any] = {}
    for item in option or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"expected KEY=VALUE, got {item!r}", field="option")
        overrides[key.strip()] = parse_option_value(value.strip())
    overrides.update(render_options)
    if workers < 1:
        raise ConfigError(f"must be at least 1, got {workers}", field="workers")
    if (manifest is None) == (glob is None):
        raise ConfigError("give either a MANIFEST or --glob PATTERN", field="glob")
    if manifest is not None:
        jobs = engine.load_manifest(manifest, overrides=overrides)
        report_path = report or manifest.with_name(manifest.stem + ".report.json")
    else:
        if not style or not output:
            raise ConfigError("needs --style and --output (a template such as out/{stem}.png)", field="glob")
        jobs = engine.glob_jobs(glob, styles=[str(s) for s in style], output=output, options=overrides,
                                style_maps=[str(s) for s in style_map] if style_map else None)
        report_path = report or Path("batch-report.json")
    device_list = _parse_devices(devices) if devices else None
    if not report_path.parent.is_dir():
        raise ConfigError(f"{report_path}: folder {report_path.parent} does not exist", field="report")

    started = time.monotonic()
    counts = {"done": 0, "skipped": 0, "failed": 0}
    live = stderr.is_terminal
    progress = Progress(
        TextColumn("[bold]batch"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[counts]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=stderr, disable=not live, transient=False,
    )
    task = progress.add_task("batch", total=len(jobs), counts="")

    def on_outcome(outcome) -> None:
        counts[outcome.status] += 1
        finished = sum(counts.values())
        rate = finished / max(time.monotonic() - started, 1e-9) * 3600
        summary = f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed, {rate:.0f} jobs/h"
        progress.update(task, completed=finished, counts=summary)
        if verbose or outcome.status == "failed" or not live:
            reason = f": {outcome.reason}" if outcome.reason else ""
            progress.console.print(f"line {outcome.line}: {outcome.status} {outcome.output}{reason}",
                                   highlight=False, soft_wrap=True, markup=False)

    def on_event(job, event) -> None:
        # Verbose, in-process runs: each job's own progress, a line every 25% of its iterations.
        if event.iteration % max(1, event.iterations // 4) == 0:
            progress.console.print(f"line {job.line}: iteration {event.iteration}/{event.iterations}, "
                                   f"loss {event.loss:.4g}", highlight=False, markup=False)

    with progress:
        outcomes = engine.run_batch(jobs, overwrite=overwrite, workers=workers, devices=device_list,
                                    ray_address=ray, on_outcome=on_outcome, on_event=on_event if verbose else None)
    result = write_report(report_path, outcomes, seconds=round(time.monotonic() - started, 2))
    stderr.print(f"{result['done']} done, {result['skipped']} skipped, {result['failed']} failed "
                 f"in {result['seconds']:.0f} s; report: {report_path}", highlight=False, markup=False)
    return EXIT_FAILED if result["failed"] else 0
