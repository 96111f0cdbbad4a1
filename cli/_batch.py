"""``styleforge batch``: many renders from a manifest or a glob."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from styleforge import engine
from styleforge.engine import ConfigError, JobOutcome, StyleforgeError
from styleforge.engine.batch import BatchInterrupted, parse_option_value, write_report

from ._app import EXIT_FAILED, EXIT_INTERRUPTED, app, check_json_output, one_line, run_guarded, say, stderr
from ._options import with_render_options
from ._preview import PreviewOption, with_preview


@app.command()
@with_render_options
def batch(
    manifest: Annotated[Path | None, typer.Argument(help="Jobs: .jsonl, .csv or .toml (see README).", show_default=False)] = None,
    glob: Annotated[str | None, typer.Option("--glob", help="Instead of a manifest: every file matching this pattern is a content image.", show_default="none: a MANIFEST")] = None,
    style: Annotated[list[Path] | None, typer.Option("--style", "-s", help="With --glob: style image; repeat for several.", show_default="none")] = None,
    style_map: Annotated[list[Path] | None, typer.Option("--style-map", help="With --glob: semantic map of each style.", show_default="none")] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="With --glob: output path template with {stem}, {name} or {index}.", show_default="none")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", help="KEY=VALUE render option for every job (overrides the manifest's defaults, like the option flags); repeat.", show_default="none")] = None,
    output_root: Annotated[Path | None, typer.Option("--output-root", help="Relative outputs go here, and every output must lie inside it.", show_default="the manifest's folder; with --glob, the working folder, unconfined")] = None,
    allow_outside: Annotated[bool, typer.Option("--allow-outside", help="Let outputs lie outside the output root (../x.png, absolute paths).", show_default="off")] = False,
    workers: Annotated[int, typer.Option(help="CPU worker processes.")] = 1,
    devices: Annotated[str | None, typer.Option(help="GPU indices, one worker each, e.g. 0,1,2,3.", show_default="none: --workers")] = None,
    ray: Annotated[str | None, typer.Option("--ray", help="Run as Ray tasks: auto (local or running cluster) or an address.", show_default="none: local processes")] = None,
    report: Annotated[Path | None, typer.Option(help="JSON report of every job.", show_default="MANIFEST.report.json, or batch-report.json for --glob")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace outputs rendered with other parameters.", show_default="off")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="One line per finished job.", show_default="off")] = False,
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
    code = run_guarded(debug, lambda: with_preview(preview, "batch", lambda feed: _batch(
        manifest, glob, style, style_map, output, option, output_root, allow_outside, workers, devices, ray, report,
        overwrite, verbose, render_options, feed)))
    raise typer.Exit(code)


def _parse_devices(text: str) -> list[int]:
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() and len(part) < 6 for part in parts):
        raise ConfigError(f"GPU indices separated by commas, such as 0,1,2,3; got {text!r}", field="devices")
    return [int(part) for part in parts]


def _check_report(path: Path, jobs) -> None:
    """Before any work: the report can be written, is no job's output, and replaces nothing but
    an earlier report."""
    if any(path.resolve() == job.output.resolve() for job in jobs):
        raise ConfigError(f"{path} is also a job's output", field="report")
    check_json_output(path, "jobs", "report")


def _jobs(manifest, glob, style, style_map, output, option, output_root, allow_outside, render_options):
    overrides: dict[str, Any] = {}
    for item in option or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"expected KEY=VALUE, got {item!r}", field="option")
        overrides[key.strip()] = parse_option_value(value.strip())
    overrides.update(render_options)
    if (manifest is None) == (glob is None):
        raise ConfigError("give either a MANIFEST or --glob PATTERN", field="glob")
    if manifest is not None:
        jobs = engine.load_manifest(manifest, overrides=overrides, output_root=output_root,
                                    allow_outside=allow_outside)
        return jobs, manifest.with_name(manifest.stem + ".report.json")
    if not style or not output:
        raise ConfigError("needs --style and --output (a template such as out/{stem}.png)", field="glob")
    jobs = engine.glob_jobs(glob, styles=[str(s) for s in style], output=output, options=overrides,
                            style_maps=[str(s) for s in style_map] if style_map else None,
                            output_root=output_root, allow_outside=allow_outside)
    return jobs, Path("batch-report.json")


def _batch(manifest, glob, style, style_map, output, option, output_root, allow_outside, workers, devices, ray,
           report, overwrite, verbose, render_options, preview_feed=None) -> int:
    if workers < 1:
        raise ConfigError(f"must be at least 1, got {workers}", field="workers")
    device_list = _parse_devices(devices) if devices else None
    jobs, default_report = _jobs(manifest, glob, style, style_map, output, option, output_root, allow_outside,
                                 render_options)
    report_path = report or default_report
    _check_report(report_path, jobs)
    if preview_feed is not None:
        preview_feed.expect_jobs(len(jobs))

    started = time.monotonic()
    counts = {"done": 0, "skipped": 0, "failed": 0}
    finished: dict[tuple[int, str], JobOutcome] = {}
    live = stderr.is_terminal
    progress = Progress(
        TextColumn("[bold]batch"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[counts]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=stderr, disable=not live, transient=False,
    )
    task = progress.add_task("batch", total=len(jobs), counts="")

    def on_outcome(outcome: JobOutcome) -> None:
        if preview_feed is not None:
            preview_feed.job_outcome(outcome)
        finished[(outcome.line, outcome.output)] = outcome
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
        done = sum(counts.values())
        rate = done / max(time.monotonic() - started, 1e-9) * 3600
        summary = f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed, {rate:.0f} jobs/h"
        progress.update(task, completed=done, counts=summary)
        if verbose or outcome.status == "failed" or not live:
            reason = f": {one_line(outcome.reason)}" if outcome.reason else ""
            say(f"line {outcome.line}: {outcome.status} {outcome.output}{reason}")

    def on_event(job, event) -> None:
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
    except BatchInterrupted as stop:
        outcomes, interrupted = stop.outcomes, True
    except BaseException as error:
        # A bug in the batch machinery (or the machine) stops it: the report still says what was
        # done. Refused before any job ran (--devices, --ray): nothing to report, nothing written.
        if isinstance(error, StyleforgeError) and not finished:
            raise
        outcomes = [finished.get((job.line, str(job.output))) or JobOutcome(job.line, str(job.output), "not run")
                    for job in jobs]
        write_report(report_path, outcomes, seconds=round(time.monotonic() - started, 2), stopped=True,
                     error=f"{type(error).__name__}: {error}")
        say(f"report: {report_path}")
        raise
    result = write_report(report_path, outcomes, seconds=round(time.monotonic() - started, 2),
                          stopped=interrupted)
    stopped = f", {result['interrupted']} interrupted, {result['not_run']} not run" if interrupted else ""
    say(f"{'interrupted: ' if interrupted else ''}{result['done']} done, {result['skipped']} skipped, "
        f"{result['failed']} failed{stopped} in {result['seconds']:.0f} s; report: {report_path}")
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if result["failed"] else 0
