"""The typer app: parse options, call the public engine API, print. Nothing else lives here."""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from styleforge import engine
from styleforge.engine import (
    BackendUnavailableError,
    ConfigError,
    InputError,
    RenderConfig,
    RenderError,
    RenderEvent,
    RenderInterrupted,
    StyleforgeError,
    WeightsError,
)

app = typer.Typer(
    name="styleforge",
    help="Neural style transfer renderer.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
stderr = Console(stderr=True)

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

_DEFAULTS = RenderConfig()
#: Options of the render command that are not RenderConfig fields but may be set in a config file.
_CLI_FIELDS = {"content", "style", "output", "save_every", "overwrite", "bit_depth", "max_pixels", "content_map",
               "style_map"}


def _default(name: str) -> str:
    """Help text suffix showing RenderConfig's default, so defaults are written down once."""
    value = getattr(_DEFAULTS, name)
    if isinstance(value, tuple):
        value = ",".join(str(v) for v in value)
    return f"[default: {value}]"


def _fail(message: str, code: int) -> typer.Exit:
    stderr.print(Text.assemble(("error: ", "bold red"), message), highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _run_guarded(debug: bool, body) -> Any:
    """Map engine errors to one line on stderr and an exit code (traceback with --debug)."""
    try:
        return body()
    except (InputError, WeightsError, BackendUnavailableError) as error:
        if debug:
            traceback.print_exc()
        raise _fail(str(error), EXIT_BAD_INPUT) from None
    except (RenderError, StyleforgeError) as error:
        if debug:
            traceback.print_exc()
        raise _fail(str(error), EXIT_FAILED) from None


def _intermediate_path(output: Path, iteration: int, iterations: int) -> Path:
    width = len(str(iterations))
    return output.with_name(f"{output.stem}_{iteration:0{width}d}{output.suffix}")


@app.command()
def render(
    content: Annotated[Path | None, typer.Argument(help="Content photo (omit for texture synthesis).", show_default=False)] = None,
    style: Annotated[list[Path] | None, typer.Option("--style", "-s", help="Style image; repeat for several.", show_default=False)] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output file: .png, .jpg or .tif.", show_default=False)] = None,
    method: Annotated[str | None, typer.Option(help="gram (Gatys et al.) or mrf (Li & Wand; CNNMRF's defaults: 384 px, 3 levels x 100 iterations, content weight 0.5). [default: gram]", show_default=False)] = None,
    content_map: Annotated[Path | None, typer.Option(help="Semantic map of the output (flat colours); with --method mrf. CONTENT may then be omitted.", show_default=False)] = None,
    style_map: Annotated[list[Path] | None, typer.Option("--style-map", help="Semantic map of each --style image, same size as it.", show_default=False)] = None,
    mrf_layers: Annotated[str | None, typer.Option(help=_default("mrf_layers"), show_default=False)] = None,
    mrf_weight: Annotated[float | None, typer.Option(help=_default("mrf_weight"), show_default=False)] = None,
    mrf_layer_weights: Annotated[str | None, typer.Option(help="One weight per MRF layer. [default: equal]", show_default=False)] = None,
    patch_size: Annotated[int | None, typer.Option(help=_default("patch_size"), show_default=False)] = None,
    style_stride: Annotated[int | None, typer.Option(help=_default("style_stride"), show_default=False)] = None,
    synthesis_stride: Annotated[int | None, typer.Option(help=_default("synthesis_stride"), show_default=False)] = None,
    levels: Annotated[int | None, typer.Option(help="Resolutions, coarse to fine; 0: from about 256 px up by --level-scale. [default: 0 for gram, 3 for mrf]", show_default=False)] = None,
    level_scale: Annotated[float | None, typer.Option(help="Size ratio between levels. [default: 1.414 for gram, 2 for mrf]", show_default=False)] = None,
    iteration_decay: Annotated[float | None, typer.Option(help="Each finer level runs this fraction of the previous level's iterations. [default: 0.5 for gram, 1 for mrf]", show_default=False)] = None,
    cuda_graphs: Annotated[bool | None, typer.Option("--cuda-graphs/--no-cuda-graphs", help="Replay the torch backend's passes as CUDA graphs. [default: off]", show_default=False)] = None,
    precision: Annotated[str | None, typer.Option(help="fp32, tf32, bf16 or fp16 (features in half precision; Grams, losses, optimiser fp32). [default: tf32 on CUDA, fp32 on CPU]", show_default=False)] = None,
    style_rotations: Annotated[int | None, typer.Option(help=f"MRF: also match 2n rotated copies of the style. {_default('style_rotations')}", show_default=False)] = None,
    rotation_step: Annotated[float | None, typer.Option(help=f"MRF: degrees between rotated copies. {_default('rotation_step')}", show_default=False)] = None,
    scale_step: Annotated[float | None, typer.Option(help=f"MRF: scale step between scaled copies. {_default('scale_step')}", show_default=False)] = None,
    style_scales: Annotated[int | None, typer.Option(help=f"MRF: also match 2n scaled copies of the style. {_default('style_scales')}", show_default=False)] = None,
    confidence: Annotated[float | None, typer.Option(help="MRF: pull only patches matched with at least this NCC. [default: off]", show_default=False)] = None,
    map_weight: Annotated[float | None, typer.Option(help=_default("map_weight"), show_default=False)] = None,
    style_blend: Annotated[str | None, typer.Option(help="Blend weights of the style images, e.g. 0.7,0.3.", show_default=False)] = None,
    size: Annotated[str | None, typer.Option(help=f"Long side of the output (4096), or a frame the content is scaled to cover and centre-cropped to (3840x2160). {_default('size')}", show_default=False)] = None,
    iterations: Annotated[str | None, typer.Option("--iterations", "-n", help=f"Loss evaluations at the coarsest level (finer levels: see --iteration-decay), or one count per level (500,200,100). {_default('iterations')}", show_default=False)] = None,
    content_weight: Annotated[float | None, typer.Option(help=_default("content_weight"), show_default=False)] = None,
    style_weight: Annotated[float | None, typer.Option(help=_default("style_weight"), show_default=False)] = None,
    tv_weight: Annotated[float | None, typer.Option(help=f"Total-variation smoothing. {_default('tv_weight')}", show_default=False)] = None,
    content_layers: Annotated[str | None, typer.Option(help=_default("content_layers"), show_default=False)] = None,
    style_layers: Annotated[str | None, typer.Option(help=_default("style_layers"), show_default=False)] = None,
    style_layer_weights: Annotated[str | None, typer.Option(help="One weight per style layer. [default: equal]", show_default=False)] = None,
    style_scale: Annotated[float | None, typer.Option(help=f"Style size relative to the output. {_default('style_scale')}", show_default=False)] = None,
    init: Annotated[str | None, typer.Option(help=f"content, noise, style or an image path. {_default('init')}", show_default=False)] = None,
    optimizer: Annotated[str | None, typer.Option(help=f"lbfgs or adam. {_default('optimizer')}", show_default=False)] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Step size. [default: 1.0 for lbfgs, 0.02 for adam]", show_default=False)] = None,
    lbfgs_history: Annotated[int | None, typer.Option(help=f"L-BFGS corrections kept (memory: 2 image-sized vectors each). {_default('lbfgs_history')}", show_default=False)] = None,
    pooling: Annotated[str | None, typer.Option(help=f"max or avg. {_default('pooling')}", show_default=False)] = None,
    model: Annotated[str | None, typer.Option(help=f"Backbone and weights (see 'styleforge models'). {_default('model')}", show_default=False)] = None,
    weights: Annotated[Path | None, typer.Option(help="Weights file for --model (otherwise the cache).", show_default=False)] = None,
    device: Annotated[str | None, typer.Option(help=f"auto, cpu or cuda. {_default('device')}", show_default=False)] = None,
    tile_size: Annotated[int | None, typer.Option(help="Evaluate the loss exactly, tile by tile, in tiles of this many pixels. [default: 0, the planner decides]", show_default=False)] = None,
    max_memory: Annotated[str | None, typer.Option(help="Memory budget, e.g. 16G. [default: 90% of free GPU memory, 80% of available RAM]", show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the memory plan of every level and stop.")] = False,
    backend: Annotated[str | None, typer.Option(help=f"torch, onnxruntime, tensorrt or auto (fastest measured by 'styleforge bench'). {_default('backend')}", show_default=False)] = None,
    original_colors: Annotated[bool | None, typer.Option("--original-colors/--style-colors", help="Keep the content's colours (luminance-only transfer). [default: style colours]", show_default=False)] = None,
    seed: Annotated[int | None, typer.Option(help=_default("seed"), show_default=False)] = None,
    save_every: Annotated[int | None, typer.Option(help="Also write OUTPUT_<iteration> every N iterations (0: never).", show_default=False)] = None,
    bit_depth: Annotated[int | None, typer.Option(help="8, or 16 for PNG. [default: 8]", show_default=False)] = None,
    max_pixels: Annotated[int | None, typer.Option(help=f"Refuse inputs with more pixels. [default: {engine.DEFAULT_MAX_PIXELS}]", show_default=False)] = None,
    config: Annotated[Path | None, typer.Option("--config", help="TOML file setting any of these options; the command line overrides it.", show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing output files.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Render CONTENT in the style of one or more --style images (Gatys et al., or MRF with --method mrf)."""
    given = {name: value for name, value in locals().items()
             if value is not None and name not in ("config", "quiet", "debug", "overwrite", "dry_run")}
    if overwrite:
        given["overwrite"] = True
    _run_guarded(debug, lambda: _render(config, given, quiet=quiet, dry_run=dry_run))


def _render(config_path: Path | None, given: dict[str, Any], *, quiet: bool, dry_run: bool = False) -> None:
    options = engine.load_config_file(config_path) if config_path is not None else {}
    options = {key.replace("-", "_"): value for key, value in options.items()}
    options.update({key: str(value) if isinstance(value, Path) else value for key, value in given.items()})
    for key in ("style", "style_map"):
        if key in options and isinstance(options[key], (str, Path)):
            options[key] = [options[key]]

    cli = {key: options.pop(key) for key in list(options) if key in _CLI_FIELDS}
    # replace() rejects unknown keys with a "did you mean" hint; MRF starts from CNNMRF's defaults.
    base = RenderConfig.mrf() if options.get("method") == "mrf" else RenderConfig()
    config = base.replace(options, source=str(config_path) if config_path else "options")

    if not cli.get("style"):
        raise ConfigError("--style: at least one style image is needed")
    if dry_run:
        reference = cli.get("content") or cli.get("content_map")
        content = engine.load_image(reference) if reference else None
        plan = engine.plan_for(config, content, engine.resolve_device(config.device))
        print(plan.describe())
        return
    if not cli.get("output"):
        raise ConfigError("--output: an output file is needed (-o result.png)")
    output = Path(cli["output"])
    overwrite = bool(cli.get("overwrite", False))
    bit_depth = int(cli.get("bit_depth", 8))
    save_every = int(cli.get("save_every", 0))
    if save_every < 0:
        raise ConfigError(f"--save-every: must be >= 0, got {save_every}")
    max_pixels = int(cli.get("max_pixels", engine.DEFAULT_MAX_PIXELS))

    # Everything that can be refused is refused before any work, and nothing is written.
    total = sum(config.level_iterations())
    targets = [output] + [_intermediate_path(output, i, total)
                          for i in range(save_every, total, save_every or total + 1)]
    for target in targets:
        engine.check_output_path(target, bit_depth=bit_depth, overwrite=overwrite)
    content_path = cli.get("content")
    if content_path is None and cli.get("content_map") is None and config.method == "mrf":
        raise ConfigError("CONTENT: give a content image, or a --content-map to paint from")
    content = engine.load_image(content_path, max_pixels=max_pixels) if content_path else None
    style_paths = [str(path) for path in cli["style"]]
    styles = [engine.load_image(path, max_pixels=max_pixels) for path in style_paths]
    content_map = engine.load_image(cli["content_map"], max_pixels=max_pixels) if cli.get("content_map") else None
    map_paths = [str(path) for path in cli.get("style_map") or []]
    style_maps = [engine.load_image(path, max_pixels=max_pixels) for path in map_paths] or None

    metadata = {
        "software": f"styleforge {engine.__version__}",
        "content": content_path,
        "styles": style_paths,
        **({"content_map": str(cli["content_map"]), "style_maps": map_paths} if content_map is not None else {}),
        "config": config.to_dict(),
    }

    def write(image, path: Path, **extra: Any) -> None:
        engine.save_image(image, path, metadata={**metadata, **extra}, bit_depth=bit_depth, overwrite=overwrite)

    # A live bar on a terminal; in logs (batch jobs, CI) a plain line every 10% instead.
    live = stderr.is_terminal
    progress = Progress(
        TextColumn("[bold]render"), BarColumn(), TextColumn("{task.fields[step]}"),
        TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=stderr, disable=quiet or not live, transient=False,
    )
    # The bar follows the work (evaluations weighted by pixels): a pyramid's last levels are
    # the slow ones, so counting iterations would promise far too early a finish.
    task = progress.add_task("render", total=1.0, loss="-", step=f"0/{total}")
    last_shown = [0.0]
    log_every = max(1, total // 10)

    def on_event(event: RenderEvent) -> None:
        fields_ = {}
        now = time.monotonic()
        if live and (now - last_shown[0] > 0.25 or event.iteration == event.iterations):
            fields_["loss"] = f"{event.loss:.4g}"  # reads the loss back: only a few times a second
            last_shown[0] = now
        progress.update(task, completed=event.progress, step=f"{event.iteration}/{event.iterations}", **fields_)
        if not live and not quiet and (event.iteration % log_every == 0 or event.iteration == 1):
            eta = event.elapsed / max(event.progress, 1e-9) * (1.0 - event.progress)
            stderr.print(f"render {event.iteration}/{event.iterations} (level {event.level + 1}/{event.levels}) "
                         f"loss {event.loss:.4g}, {event.elapsed:.0f} s, about {eta:.0f} s left",
                         highlight=False, soft_wrap=True, markup=False)
        if save_every and event.iteration % save_every == 0 and event.iteration < event.iterations:
            write(event.image.clamp(0, 1), _intermediate_path(output, event.iteration, event.iterations),
                  iterations_done=event.iteration)

    with progress:
        try:
            result = engine.render(config, content, styles, callback=on_event, content_map=content_map,
                                   style_maps=style_maps)
        except RenderInterrupted as interrupted:
            progress.stop()
            write(interrupted.image, output, iterations_done=interrupted.iteration, interrupted=True)
            stderr.print(f"interrupted at iteration {interrupted.iteration}; wrote {output}",
                         highlight=False, markup=False)
            raise typer.Exit(EXIT_INTERRUPTED) from None
    write(result.image, output, iterations_done=result.iterations, seconds=round(result.elapsed, 2),
          device=result.device)
    if not quiet:
        height, width = result.image.shape[-2:]
        stderr.print(f"wrote {output} ({width}x{height}, {result.iterations} iterations, "
                     f"{result.elapsed:.1f} s on {result.device})", highlight=False, markup=False)


@app.command()
def models() -> None:
    """List the models, whether their weights are present, and where."""
    table = Table("model", "weights", "location", "description")
    table.columns[2].overflow = "fold"
    for row in engine.model_status():
        table.add_row(row.name, "present" if row.present else "absent", row.location, row.description)
    Console().print(table)


def _parse_size(text: str) -> tuple[int, int]:
    """'512' (long side, 4:3 landscape) or 'WIDTHxHEIGHT' -> (height, width)."""
    try:
        if "x" in text.lower():
            width, height = (int(part) for part in text.lower().split("x"))
        else:
            width = int(text)
            height = max(16, round(width * 0.75))
    except ValueError:
        raise ConfigError(f"--size: {text!r} is neither a number nor WIDTHxHEIGHT") from None
    if min(width, height) < 16:
        raise ConfigError(f"--size: {text} is smaller than 16 pixels, the deepest layer's stride")
    return height, width


@app.command()
def export(
    model: Annotated[str, typer.Option(help="Backbone and weights.")] = _DEFAULTS.model,
    format: Annotated[str, typer.Option("--format", help="onnx or tensorrt.")] = "onnx",
    size: Annotated[list[str] | None, typer.Option("--size", help="Image sizes the TensorRT profile must cover (512 or 1920x1080); repeat.", show_default=False)] = None,
    precision: Annotated[str, typer.Option(help="TensorRT precision: fp32, tf32, fp16 or bf16.")] = "fp32",
    pooling: Annotated[str, typer.Option(help="max or avg.")] = _DEFAULTS.pooling,
    layers: Annotated[str, typer.Option(help="Taps to export (comma-separated).")] = ",".join(
        dict.fromkeys(_DEFAULTS.content_layers + _DEFAULTS.style_layers)),
    weights: Annotated[Path | None, typer.Option(help="Weights file for --model.", show_default=False)] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Export the VGG forward and backward graphs (ONNX) or build TensorRT engines, into the cache."""

    def body() -> None:
        taps = [layer.strip() for layer in layers.split(",") if layer.strip()]
        engine.check_choice("--format", format, ("onnx", "tensorrt"))
        backbone = engine.load_backbone(model, taps, pooling=pooling, weights_path=weights)
        if format == "onnx":
            graphs = engine.export_onnx(backbone, model=model)
            print(graphs.forward_path)
            print(graphs.backward_path)
            return
        sizes = [_parse_size(text) for text in (size or ["512"])]
        missing = engine.tensorrt_available()
        if missing is not None:
            raise BackendUnavailableError(f"--format tensorrt: {missing}")
        device = engine.resolve_device("cuda")
        built = engine.create_backend("tensorrt", backbone, device, model=model, precision=precision, sizes=sizes)
        for path in built.build():
            print(path)

    _run_guarded(debug, body)


_MATMUL_DTYPES = {"fp32": "float32", "tf32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@app.command()
def bench(
    size: Annotated[list[str] | None, typer.Option("--size", help="Sizes to time (512 = 512x384, or WIDTHxHEIGHT); repeat. [default: 256, 512, 1024]", show_default=False)] = None,
    backend: Annotated[list[str] | None, typer.Option("--backend", help="Backends to compare; repeat. [default: every one present]", show_default=False)] = None,
    precision: Annotated[list[str] | None, typer.Option("--precision", help="fp32, tf32, bf16, fp16; repeat to compare. [default: tf32 on CUDA, fp32 on CPU]", show_default=False)] = None,
    model: Annotated[str, typer.Option(help="Backbone (timing does not depend on the weights).")] = "vgg19-random",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    iterations: Annotated[int, typer.Option("--iterations", "-n", help="Timed iterations per size.")] = 5,
    warmup: Annotated[int, typer.Option(help="Untimed iterations first.")] = 2,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the figures as JSON.", show_default=False)] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Time forward + image gradient per backend, side by side; records the fastest for --backend auto."""

    def body() -> None:
        import json
        import platform

        target = engine.resolve_device(device)
        names = backend or engine.available_backends(target)
        precisions = precision or [RenderConfig().resolved_precision(target.type)]
        for value in precisions:
            engine.check_choice("--precision", value, engine.PRECISIONS)
        sizes = [_parse_size(text) for text in (size or ["256", "512", "1024"])]
        taps = tuple(dict.fromkeys(_DEFAULTS.content_layers + _DEFAULTS.style_layers))
        backbone = engine.load_backbone(model, taps)
        # The convolutions' achieved rate against the device's own measured matrix rate at the
        # precision they run in (tf32 and fp32 share fp32 operands).
        peaks = {value: engine.matrix_tflops(target, size=4096 if target.type == "cuda" else 1024,
                                             dtype=_MATMUL_DTYPES[value], tf32=value == "tf32")
                 for value in precisions}
        table = Table("backend", "precision", "size", "ms/iter", "images/s", "peak memory", "TFLOP/s", "of matmul")
        rows, by_backend = [], {}
        for name in names:
            for value in precisions:
                try:
                    built = engine.create_backend(name, backbone, target, model=model, precision=value)
                except BackendUnavailableError as error:
                    stderr.print(f"skipped {name} {value}: {error}", highlight=False, markup=False)
                    continue
                for height, width in sizes:
                    timing = engine.time_backend(built, height, width, iterations=iterations, warmup=warmup)
                    rows.append({**timing.to_dict(), "precision": value,
                                 "share_of_matrix_rate": timing.tflops / peaks[value]})
                    if value == precisions[0]:
                        by_backend.setdefault(name, []).append(timing.ms_per_iteration)
                    table.add_row(name, value, f"{width}x{height}", f"{timing.ms_per_iteration:.1f}",
                                  f"{timing.images_per_second:.2f}", f"{timing.peak_memory_bytes / 2**30:.2f} GiB",
                                  f"{timing.tflops:.2f}", f"{timing.tflops / peaks[value]:.0%}")
        Console().print(table)
        if len(by_backend) > 1:
            totals = {name: sum(values) for name, values in by_backend.items()}
            fastest = engine.record_fastest_backend(target, totals)
            stderr.print(f"fastest here: {fastest} (used by --backend auto on this machine)",
                         highlight=False, markup=False)
        if output is not None:
            report = {"device": str(target), "model": model, "platform": platform.platform(),
                      "gpu": torch_device_name(target), "matmul_tflops": peaks, "results": rows}
            output.write_text(json.dumps(report, indent=2) + "\n")

    _run_guarded(debug, body)


@app.command()
def batch(
    manifest: Annotated[Path | None, typer.Argument(help="Jobs: .jsonl, .csv or .toml (see README).", show_default=False)] = None,
    glob: Annotated[str | None, typer.Option("--glob", help="Instead of a manifest: every file matching this pattern is a content image.", show_default=False)] = None,
    style: Annotated[list[Path] | None, typer.Option("--style", "-s", help="With --glob: style image; repeat for several.", show_default=False)] = None,
    style_map: Annotated[list[Path] | None, typer.Option("--style-map", help="With --glob: semantic map of each style.", show_default=False)] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="With --glob: output path template with {stem}, {name} or {index}.", show_default=False)] = None,
    option: Annotated[list[str] | None, typer.Option("--option", help="KEY=VALUE render option for every job (overrides the manifest's defaults); repeat.", show_default=False)] = None,
    workers: Annotated[int, typer.Option(help="CPU worker processes.")] = 1,
    devices: Annotated[str | None, typer.Option(help="GPU indices, one worker each, e.g. 0,1,2,3.", show_default=False)] = None,
    ray: Annotated[str | None, typer.Option("--ray", help="Run as Ray tasks: auto (local or running cluster) or an address.", show_default=False)] = None,
    report: Annotated[Path | None, typer.Option(help="JSON report of every job. [default: MANIFEST.report.json, or batch-report.json for --glob]", show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace outputs rendered with other parameters.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="One line per finished job.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Render many jobs: validated up front, resumable, failures isolated and reported."""
    code = _run_guarded(debug, lambda: _batch(manifest, glob, style, style_map, output, option, workers, devices,
                                              ray, report, overwrite, verbose))
    raise typer.Exit(code)


def _batch(manifest, glob, style, style_map, output, option, workers, devices, ray, report, overwrite,
           verbose) -> int:
    overrides: dict[str, Any] = {}
    for item in option or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--option: expected KEY=VALUE, got {item!r}")
        overrides[key.strip()] = engine.parse_option_value(value.strip())
    if (manifest is None) == (glob is None):
        raise ConfigError("give either a MANIFEST or --glob PATTERN")
    if manifest is not None:
        jobs = engine.load_manifest(manifest, overrides=overrides)
        report_path = report or manifest.with_name(manifest.stem + ".report.json")
    else:
        if not style or not output:
            raise ConfigError("--glob needs --style and --output (a template such as out/{stem}.png)")
        jobs = engine.glob_jobs(glob, styles=[str(s) for s in style], output=output, options=overrides,
                                style_maps=[str(s) for s in style_map] if style_map else None)
        report_path = report or Path("batch-report.json")
    device_list = [int(d) for d in devices.split(",")] if devices else None

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
    result = engine.summarize_outcomes(outcomes)
    result["seconds"] = round(time.monotonic() - started, 2)
    engine.write_json_atomic(report_path, result)
    stderr.print(f"{result['done']} done, {result['skipped']} skipped, {result['failed']} failed "
                 f"in {result['seconds']:.0f} s; report: {report_path}", highlight=False, markup=False)
    return EXIT_FAILED if result["failed"] else 0


def torch_device_name(device) -> str | None:
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else None


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
