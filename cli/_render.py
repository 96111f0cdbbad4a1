"""``styleforge render``: one image."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from styleforge import engine
# Only names that load without torch: the rest is read from `engine` when a command runs, so
# --help never loads torch.
from styleforge.engine import ConfigError, RenderConfig, RenderInterrupted, StyleforgeError, WaitEvent

from ._app import EXIT_INTERRUPTED, HelpCommand, app, one_line, run_guarded, say, stderr
from ._options import with_render_options
from ._preview import PreviewOption, with_preview

if TYPE_CHECKING:  # the command line loads torch only when a command runs
    import torch

    from styleforge.engine.preview import PreviewFeed

    #: The loaded inputs: content, styles, content map, style maps.
    _Inputs = tuple[torch.Tensor | None, list[torch.Tensor], torch.Tensor | None, list[torch.Tensor] | None]

#: Options of the render command that are not RenderConfig fields but may be set in a config
#: file, with the type a file's value must have.
_COMMAND_OPTIONS: dict[str, tuple[type, ...]] = {
    "content": (str,), "output": (str,), "content_map": (str,), "style": (str, list), "style_map": (str, list),
    "save_every": (int,), "bit_depth": (int,), "max_pixels": (int,), "overwrite": (bool,),
}


def _intermediate_path(output: Path, iteration: int, iterations: int) -> Path:
    width = len(str(iterations))
    return output.with_name(f"{output.stem}_{iteration:0{width}d}{output.suffix}")


def command_options(values: dict[str, Any], source: str,
                    table: dict[str, tuple[type, ...]] = _COMMAND_OPTIONS) -> dict[str, Any]:
    """A command's own options from a config file (``table``: each option's types), each
    checked for its type."""
    checked = {}
    for key, value in values.items():
        kinds = table[key]
        if isinstance(value, bool) != (bool in kinds) or not isinstance(value, kinds):
            names = " or ".join({str: "a string", list: "a list of paths", int: "an integer",
                                 bool: "true or false"}[kind] for kind in kinds)
            raise ConfigError(f"must be {names}, got {value!r}", field=key, source=source)
        paths = value if isinstance(value, list) else [value] if isinstance(value, str) else []
        if not all(isinstance(item, str) and item.strip() and "\0" not in item for item in paths):
            raise ConfigError(f"must be a path or a list of paths, got {value!r}", field=key, source=source)
        checked[key] = [value] if key in ("style", "style_map") and isinstance(value, str) else value
    return checked


def options_to_config(file_options: dict[str, Any], config_path: Path | None, flags: dict[str, Any]) -> RenderConfig:
    """A config file's render options, then the flags over them; each value's error names where
    it came from (the file and key, or the flag). ``method = "mrf"`` starts from CNNMRF's defaults,
    ``photo`` from the photorealistic preset (RenderConfig.defaults_for)."""
    base = RenderConfig.defaults_for({**file_options, **flags})
    config = base.replace(file_options, source=str(config_path) if config_path is not None else None)
    return config.replace(flags)


def split_config_file(path: Path | None, command_options: set[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A TOML file's values: (render options, the command's own options), keys snake_case."""
    if path is None:
        return {}, {}
    try:
        loaded = engine.load_config_file(path)
    except ValueError as error:  # tomllib: an integer too long to convert
        raise ConfigError(f"invalid TOML ({error})", source=str(path)) from None
    values = {key.replace("-", "_"): value for key, value in loaded.items()}
    own = {key: values.pop(key) for key in list(values) if key in command_options}
    return values, own


@app.command(cls=HelpCommand)
@with_render_options
def render(
    content: Annotated[Path | None, typer.Argument(help="Content photo (omit for texture synthesis).", show_default=False)] = None,
    style: Annotated[list[Path] | None, typer.Option("--style", "-s", help="Style image; repeat for several.", show_default="none")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output file: .png, .jpg, .tif or .exr.", show_default="none")] = None,
    content_map: Annotated[Path | None, typer.Option(help="Semantic map of the output (flat colours): each region takes its style from the same colour in the --style-map(s); with --method mrf CONTENT may be omitted.", show_default="none")] = None,
    style_map: Annotated[list[Path] | None, typer.Option("--style-map", help="Semantic map of each --style image, same size as it, or a flat #rrggbb: that style paints that region only.", show_default="none")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the memory plan of every level and stop.", show_default="off")] = False,
    save_every: Annotated[int | None, typer.Option(help="Also write OUTPUT_<iteration> every N iterations (0: never).", show_default="0")] = None,
    bit_depth: Annotated[int | None, typer.Option(help="8, or 16 for PNG; EXR: 16 (half) or 32 (float).", show_default="8; an EXR plate's own type")] = None,
    max_pixels: Annotated[int | None, typer.Option(help="Refuse inputs with more pixels.", show_default=str(engine.DEFAULT_MAX_PIXELS))] = None,
    config: Annotated[Path | None, typer.Option("--config", help="TOML file setting any of these options; the command line overrides it.", show_default="none")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing output files.", show_default="off")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.", show_default="off")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.", show_default="off")] = False,
    preview: PreviewOption = None,
    *,
    render_options: dict[str, Any],
) -> None:
    """Render CONTENT in the style of one or more --style images (Gatys et al., or MRF with --method mrf)."""
    given = {name: value for name, value in dict(content=content, style=style, output=output, content_map=content_map,
                                                 style_map=style_map, save_every=save_every, bit_depth=bit_depth,
                                                 max_pixels=max_pixels).items() if value is not None}
    if overwrite:
        given["overwrite"] = True
    run_guarded(debug, lambda: with_preview(None if dry_run else preview, "render", lambda feed: _render(
        config, given, render_options, quiet=quiet, dry_run=dry_run, preview_feed=feed)))


def _render(config_path: Path | None, given: dict[str, Any], flags: dict[str, Any], *, quiet: bool,
            dry_run: bool = False, preview_feed: PreviewFeed | None = None) -> None:
    started = time.monotonic()  # the whole command: the elapsed time printed at the end covers it
    file_options, file_own = split_config_file(config_path, set(_COMMAND_OPTIONS))
    cli = {**command_options(file_own, str(config_path)), **given}
    config = options_to_config(file_options, config_path, flags)

    if not cli.get("style"):
        raise ConfigError("at least one style image is needed", field="style")
    if dry_run:
        reference = cli.get("content") or cli.get("content_map")
        content = engine.load_image(reference) if reference else None
        plan = engine.plan_for(config, content, engine.resolve_device(config.runtime.device))
        print(plan.describe())
        return
    if not cli.get("output"):
        raise ConfigError("an output file is needed (-o result.png)", field="output")
    output = Path(cli["output"])
    overwrite = bool(cli.get("overwrite", False))
    bit_depth = int(cli.get("bit_depth", 8))
    save_every = int(cli.get("save_every", 0))
    if save_every < 0:
        raise ConfigError(f"must be >= 0, got {save_every}", field="save_every")
    max_pixels = int(cli.get("max_pixels", engine.DEFAULT_MAX_PIXELS))

    # Everything that can be refused is refused before any work, and nothing is written: no
    # output may be an input (not even with --overwrite), and each folder must take a file.
    total = sum(config.pyramid.level_iterations())
    targets = [output] + [_intermediate_path(output, i, total)
                          for i in (range(save_every, total, save_every) if save_every else ())]
    inputs = _inputs(cli, config, config_path)
    for target in targets:
        engine.check_output_path(target, bit_depth=bit_depth, overwrite=overwrite, inputs=inputs,
                                  make_folders=True)
    content_path = cli.get("content")
    if content_path is None and cli.get("content_map") is None and config.objective.method == "mrf":
        raise ConfigError("give a content image, or a --content-map to paint from", field="content")
    colors = config.color_management
    if any(Path(str(path)).suffix.lower() == ".exr" for path in [*targets, *inputs.values()]):
        engine.color_pipeline(colors.input_colorspace, colors.view, output=colors.output_colorspace)  # names checked
    # An EXR plate renders display-referred and goes back to its scene values (engine.read_plate),
    # its alpha and residual cut to the part of it the --size frame covers.
    plate = engine.read_plate(content_path, colorspace=colors.input_colorspace, view=colors.view,
                              max_pixels=max_pixels, size=config.pyramid.size) \
        if content_path and Path(content_path).suffix.lower() == ".exr" else None

    def load(path: str) -> torch.Tensor:
        return engine.load_image(path, max_pixels=max_pixels, colorspace=colors.input_colorspace, view=colors.view)

    content = plate.display if plate is not None else load(content_path) if content_path else None
    style_paths = [str(path) for path in cli["style"]]
    styles = [load(path) for path in style_paths]
    content_map = engine.load_map(cli["content_map"], max_pixels=max_pixels) if cli.get("content_map") else None
    map_paths = [str(path) for path in cli.get("style_map") or []]
    style_maps = engine.load_style_maps(map_paths, styles, max_pixels=max_pixels) if map_paths else None

    # A live bar on a terminal; in logs (batch jobs, CI) a plain line every 10% instead. Waits
    # that are not iterations (weights download, conversion, bf16 measurement, export, engine
    # build, compile) show on a status line of their own, and in logs as a line when they start
    # and one when they end.
    live = stderr.is_terminal
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[step]}"),
        TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), TextColumn("{task.fields[left]}"),
        console=stderr, disable=quiet or not live, transient=False,
    )
    waits = _WaitLine(progress, live=live, quiet=quiet)
    with progress:  # stopped before the closing lines
        # auto becomes what runs here before anything is written: the metadata names fp32 or
        # bf16, so a render read back from it runs in the same numbers.
        with engine.report_waits(waits.on_wait):
            config = engine.resolve_precision(config, engine.resolve_device(config.runtime.device))
        result = _render_image(config, cli, inputs=(content, styles, content_map, style_maps), plate=plate,
                               preview_feed=preview_feed, output=output,
                               progress=progress, waits=waits, quiet=quiet, live=live, overwrite=overwrite,
                               bit_depth=bit_depth, save_every=save_every, total=total)
    if not quiet:
        height, width = result.image.shape[-2:]
        waited = f", {waits.describe()}" if waits.seconds else ""
        say(f"wrote {output} ({width}x{height}, {result.iterations} iterations on {result.device}, "
            f"{result.precision}: {time.monotonic() - started:.1f} s in all, {result.elapsed:.1f} s of them "
            f"rendering{waited})")


def _render_image(config: RenderConfig, cli: dict[str, Any], *, inputs: _Inputs, plate: engine.Plate | None,
                  preview_feed: PreviewFeed | None, output: Path, progress: Progress,
                  waits: _WaitLine, quiet: bool, live: bool, overwrite: bool, bit_depth: int, save_every: int,
                  total: int) -> engine.RenderResult:
    """The render with its progress bar, intermediates and output (``config`` resolved: its
    metadata names what runs)."""
    content, styles, content_map, style_maps = inputs
    colors = config.color_management
    content_path = cli.get("content")
    style_paths = [str(path) for path in cli["style"]]
    map_paths = [str(path) for path in cli.get("style_map") or []]
    metadata = {
        "software": f"styleforge {engine.__version__}",
        "content": str(content_path) if content_path else None,
        "styles": style_paths,
        **({"content_map": str(cli["content_map"]), "style_maps": map_paths} if content_map is not None else {}),
        **({"color": plate.pipeline.describe()} if plate is not None else {}),
        "config": config.to_dict(),
    }

    def write(image: torch.Tensor, path: Path, **extra: Any) -> None:
        # A write that fails keeps the image in the cache and says where (OutputError).
        engine.save_image(image, path, metadata={**metadata, **extra}, bit_depth=bit_depth, overwrite=overwrite,
                          recover=True, make_folders=True, plate=plate,
                          colorspace=colors.output_colorspace or colors.input_colorspace, view=colors.view)

    # The bar follows the work (evaluations weighted by pixels): a pyramid's last levels are
    # the slow ones, so counting iterations would promise far too early a finish.
    task = progress.add_task("render", total=1.0, loss="loss -", step=f"0/{total}", left="")
    last_shown = [0.0]
    log_every = max(1, total // 10)

    def on_event(event: engine.RenderEvent) -> None:
        if preview_feed is not None:  # the preview page: a non-blocking hand-off
            preview_feed.render_event(event)
        now = time.monotonic()
        if live and (now - last_shown[0] > 0.25 or event.iteration == event.iterations):
            # Reads the loss back: only a few times a second.
            progress.update(task, loss=f"loss {event.loss:.4g}", left=_time_left(event.remaining))
            last_shown[0] = now
        progress.update(task, completed=event.progress, step=f"{event.iteration}/{event.iterations}")
        if not live and not quiet and (event.iteration % log_every == 0 or event.iteration == 1):
            left = f", {_time_left(event.remaining)}" if event.remaining is not None else ""
            say(f"render {event.iteration}/{event.iterations} (level {event.level + 1}/{event.levels}) "
                f"loss {event.loss:.4g}, {event.elapsed:.0f} s{left}")
        if save_every and event.iteration % save_every == 0 and event.iteration < event.iterations:
            try:
                write(event.image.clamp(0, 1), _intermediate_path(output, event.iteration, event.iterations),
                      iterations_done=event.iteration)
            except StyleforgeError as error:  # an intermediate is not worth the render: say so, go on
                say(f"warning: {one_line(error)}")

    try:
        result = engine.render(config, content, styles, callback=on_event, content_map=content_map,
                               style_maps=style_maps, on_wait=waits.on_wait)
    except RenderInterrupted as interrupted:
        progress.stop()
        if interrupted.image is None:  # render's carry the image; only a video shot's has none
            raise
        write(interrupted.image, output, iterations_done=interrupted.iteration, interrupted=True)
        say(f"interrupted at iteration {interrupted.iteration}; wrote {output}")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    write(result.image, output, iterations_done=result.iterations, seconds=round(result.elapsed, 2),
          device=result.device)
    return result


def _time_left(seconds: float | None) -> str:
    """The render's estimate, once it has one (RenderEvent.remaining)."""
    if seconds is None:
        return ""
    return f"about {seconds / 60:.0f} min left" if seconds >= 120 else f"about {seconds:.0f} s left"


class _WaitLine:
    """The engine's waits on a status line (a bar with a byte count for a download), and the
    seconds they took, by what, for the closing line."""

    def __init__(self, progress: Progress, *, live: bool, quiet: bool) -> None:
        self.progress, self.live, self.quiet = progress, live, quiet
        self.tasks: dict[str, Any] = {}
        self.took: dict[str, float] = {}

    @property
    def seconds(self) -> float:
        return sum(self.took.values())

    def describe(self) -> str:
        return "including " + ", ".join(f"{what.partition(' (')[0]} {seconds:.1f} s" for what, seconds in self.took.items())

    def on_wait(self, event: WaitEvent) -> None:
        if event.finished:
            self.took[event.what] = self.took.get(event.what, 0.0) + event.elapsed
            if event.what in self.tasks:
                self.progress.remove_task(self.tasks.pop(event.what))
            if not self.live and not self.quiet and event.elapsed >= 1.0:
                say(f"{event.what}: done in {event.elapsed:.1f} s")
            return
        if event.what not in self.tasks:
            if not self.live and not self.quiet:
                say(f"{event.what} ...")
            self.tasks[event.what] = self.progress.add_task(event.what, total=None, step="", loss="", left="")
        count = ""
        if event.done is not None and event.unit == "B":
            count = f"{event.done / 1e6:.1f}" + (f" of {event.total / 1e6:.1f} MB" if event.total else " MB")
        self.progress.update(self.tasks[event.what], total=event.total, completed=event.done or 0, step=count)


def _inputs(cli: dict[str, Any], config: RenderConfig, config_path: Path | None) -> dict[str, str]:
    """Every file the render reads, by role: no output may be one of them."""
    roles = {"content": cli.get("content"), "content map": cli.get("content_map"), "config": config_path}
    roles |= {f"style {i}": path for i, path in enumerate(cli.get("style") or [], start=1)}
    roles |= {f"style map {i}": path for i, path in enumerate(cli.get("style_map") or [], start=1)
              if not engine.is_color(path)}
    roles["init"] = config.optimization.init_image
    return {role: str(path) for role, path in roles.items() if path is not None}
