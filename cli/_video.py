"""``styleforge video``: a shot (a video file, a folder or a glob of frames) rendered frame after
frame with temporal consistency, resumable, into a video or a frame pattern."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from styleforge import engine
# VideoConfig loads without torch; the rest is read from `engine` when the command runs.
from styleforge.engine import ConfigError, VideoConfig

from ._app import EXIT_INTERRUPTED, HelpCommand, app, run_guarded, say, stderr
from ._options import with_render_options
from ._preview import PreviewOption, with_preview
from ._render import options_to_config, split_config_file

if TYPE_CHECKING:  # the preview's server loads only with --preview
    from styleforge.engine.preview import PreviewFeed


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


@app.command(cls=HelpCommand)
@with_render_options
def video(
    source: Annotated[str, typer.Argument(metavar="INPUT", help="A video (.mp4, .mov, .webm, .mkv), a folder of frames, a quoted glob ('shot/*.png'), or a numbered sequence ('plate.####.exr', 'plate.%04d.png': frame numbers kept in a frame-pattern output).", show_default=False)],
    style: Annotated[list[Path] | None, typer.Option("--style", "-s", help="Style image; repeat for several.", show_default="none")] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="A video (.mp4, .mov, .mkv, .webm; its frames are kept in OUTPUT.frames/) or a frame pattern (out/%05d.png, out.####.exr).", show_default="none")] = None,
    frames: Annotated[str | None, typer.Option("--frames", help="Only these frames of a numbered sequence, FIRST-LAST (1001-1050).", show_default="all")] = None,
    temporal_weight: Annotated[float | None, typer.Option(help="Weight of the temporal consistency term (Ruder et al.); 0 renders every frame on its own.", show_default=f"{VideoConfig.temporal_weight:g}")] = None,
    frame_iterations: Annotated[int | None, typer.Option(help="Iterations of each frame after the first (one level, from the previous frame warped).", show_default="the last level's")] = None,
    flow_preset: Annotated[str | None, typer.Option(help="DIS optical flow preset: ultrafast, fast or medium.", show_default=VideoConfig.flow_preset)] = None,
    fps: Annotated[float | None, typer.Option(help="Frame rate of the output video.", show_default="the input's, or 24 for frames")] = None,
    codec: Annotated[str | None, typer.Option(help="libx264, libx265, libvpx-vp9, ffv1 or prores_ks.", show_default="libx264; libvpx-vp9 for .webm")] = None,
    crf: Annotated[int | None, typer.Option(help="Quality of x264/x265/VP9 (lower is better).", show_default=str(VideoConfig.crf))] = None,
    max_pixels: Annotated[int | None, typer.Option(help="Refuse frames with more pixels.", show_default=str(engine.DEFAULT_MAX_PIXELS))] = None,
    allow_short_input: Annotated[bool, typer.Option("--allow-short-input", help="Render a video that decodes to fewer frames than its header announces (cut short or damaged) instead of refusing it.", show_default="off")] = False,
    config: Annotated[Path | None, typer.Option("--config", help="TOML file setting any render option; the command line overrides it.", show_default="none")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a video or frames that are not this shot's.", show_default="off")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress.", show_default="off")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.", show_default="off")] = False,
    preview: PreviewOption = None,
    *,
    render_options: dict[str, Any],
) -> None:
    """Render a shot in the style of --style images, frame after frame with temporal consistency.

    Each finished frame is written at once with its parameters' hash: a killed render resumes
    at the first unfinished frame. Every render option works as for render."""
    options = {key: value for key, value in dict(temporal_weight=temporal_weight, frame_iterations=frame_iterations,
                                                flow_preset=flow_preset, fps=fps, codec=codec, crf=crf).items()
               if value is not None}
    run_guarded(debug, lambda: with_preview(preview, "video", lambda feed: _video(
        source, style, output, options, max_pixels, config, overwrite, quiet, render_options, feed, frames=frames,
        allow_short=allow_short_input)))


def _video(source: str, styles: list[Path] | None, output: str | None, options: dict[str, Any],
           max_pixels: int | None, config_path: Path | None, overwrite: bool, quiet: bool,
           flags: dict[str, Any], preview_feed: PreviewFeed | None = None, *, frames: str | None = None,
           allow_short: bool = False) -> None:
    file_options, _ = split_config_file(config_path, set())
    config = options_to_config(file_options, config_path, flags)
    video = VideoConfig(**options)
    if not styles:
        raise ConfigError("at least one style image is needed", field="style")
    if not output:
        raise ConfigError("an output is needed (-o out.mp4 or -o 'frames/%05d.png')", field="output")
    limit = max_pixels or engine.DEFAULT_MAX_PIXELS
    # Everything that can be refused is refused before any work, and nothing is written.
    store = engine.frame_store(output)
    shot = engine.open_frames(source, max_pixels=limit, frames=engine.parse_frame_range(frames), exclude=store.owns,
                              allow_short=allow_short)
    if allow_short and shot.announced is not None and shot.count < shot.announced:
        say(f"warning: {source}: decoded {shot.count} of the {shot.announced} frames its header announces")
    colors = config.color_management  # an EXR style is read as render reads it
    style_images = [engine.load_image(path, max_pixels=limit, colorspace=colors.input_colorspace, view=colors.view)
                    for path in styles]
    inputs = {f"style {i}": str(path) for i, path in enumerate(styles, start=1)}
    if config_path is not None:
        inputs["config"] = str(config_path)
    metadata = {"software": f"styleforge {engine.__version__}", "input": str(source),
                "styles": [str(path) for path in styles]}

    live = stderr.is_terminal and not quiet
    progress = Progress(TextColumn("[bold]video"), BarColumn(), TextColumn("{task.fields[status]}"),
                        TimeElapsedColumn(), console=stderr, disable=not live, transient=False)
    task = progress.add_task("video", total=shot.count, status=f"0/{shot.count} frames")

    def on_event(event: engine.VideoEvent) -> None:
        if preview_feed is not None:  # the preview page: a non-blocking hand-off
            preview_feed.video_event(event)
        rate = f"{event.seconds_per_frame:.1f} s/frame" if event.seconds_per_frame is not None else "- s/frame"
        if event.status == "step" and event.step is not None:
            step = event.step
            progress.update(task, completed=event.done + step.progress,
                            status=f"frame {event.frame + 1}/{event.frames} it {step.iteration}/{step.iterations}, "
                                   f"{rate}, ETA {_duration(event.eta)}")
            return
        progress.update(task, completed=event.done, status=f"{event.done}/{event.frames} frames, {rate}, "
                                                           f"ETA {_duration(event.eta)}")
        if not live and not quiet:
            if event.status == "done":
                say(f"frame {event.frame + 1}/{event.frames} done in {event.seconds:.1f} s ({rate}, about "
                    f"{_duration(event.eta)} left)")
            elif event.status == "resumed" and event.frame + 1 == event.done:
                say(f"frame {event.frame + 1}/{event.frames} already rendered")
            elif event.status == "encoding":
                say(f"encoding {output}")

    with progress:
        try:
            result = engine.render_shot(config, shot, style_images, store, video=video, overwrite=overwrite,
                                        metadata=metadata, callback=on_event, inputs=inputs)
        except engine.ShotInterrupted as interrupted:
            progress.stop()
            say(str(interrupted))
            raise typer.Exit(EXIT_INTERRUPTED) from None
    if not quiet:
        rate = f", {result.seconds_per_frame:.1f} s/frame" if result.seconds_per_frame is not None else ""
        say(f"wrote {result.output} ({result.frames} frames: {result.rendered} rendered, {result.resumed} resumed"
            f"{rate}, {result.seconds:.0f} s on {result.device})")
