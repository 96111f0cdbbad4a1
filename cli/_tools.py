"""``styleforge models``, ``export`` and ``bench``: weights, exported graphs, timings."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.console import Console
from rich.table import Table

from styleforge import engine
# Names that load without torch; engine.backends and the rest are read when a command runs.
from styleforge.engine import BackendUnavailableError, ConfigError, RenderConfig, frame_shape, parse_size, write_json_atomic

from ._app import HelpCommand, app, check_json_output, run_guarded, say
from ._report import print_comparison

if TYPE_CHECKING:  # the engine's backends load torch: not for --help
    from styleforge.engine.backends import TensorRTBackend

_DEFAULTS = RenderConfig()


@app.command(cls=HelpCommand)
def models() -> None:
    """List the models, whether their weights are present, and where."""

    def body() -> None:
        table = Table("model", "weights", "location", "description")
        table.columns[2].overflow = "fold"
        for row in engine.model_status():
            name = f"{row.name} (default)" if row.name == _DEFAULTS.runtime.model else row.name
            table.add_row(name, "present" if row.present else "absent", row.location, row.description)
        Console().print(table)

    run_guarded(False, body)  # as every command: errors as one line, Ctrl-C as an interrupt once work starts


def _frame(text: str) -> tuple[int, int]:
    """--size of export and bench: a long side (512 = 512x384, landscape 4:3) or WIDTHxHEIGHT,
    in the one size grammar; at least the deepest layer's stride (16)."""
    height, width = frame_shape(parse_size(text))
    if min(height, width) < 16:
        raise ConfigError(f"{text} is smaller than 16 pixels, the deepest layer's stride", field="size")
    return height, width


@app.command(cls=HelpCommand)
def export(
    model: Annotated[str, typer.Option(help="Backbone and weights.")] = _DEFAULTS.runtime.model,
    format: Annotated[str, typer.Option("--format", help="onnx or tensorrt.")] = "onnx",
    size: Annotated[list[str] | None, typer.Option("--size", help="Image sizes the TensorRT profile must cover (512 or 1920x1080); repeat.", show_default="512")] = None,
    precision: Annotated[str, typer.Option(help="TensorRT precision: fp32, tf32 or fp16 (bf16 runs on --backend torch only).")] = "fp32",
    pooling: Annotated[str, typer.Option(help="max or avg.")] = _DEFAULTS.runtime.pooling,
    layers: Annotated[str, typer.Option(help="Taps to export (comma-separated).")] = ",".join(_DEFAULTS.taps),
    weights: Annotated[Path | None, typer.Option(help="Weights file for --model.", show_default="the cache")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.", show_default="off")] = False,
) -> None:
    """Export the VGG forward and backward graphs (ONNX) or build TensorRT engines, into the cache."""

    def body() -> None:
        taps = [layer.strip() for layer in layers.split(",") if layer.strip()]
        engine.check_choice("format", format, ("onnx", "tensorrt"))
        try:
            config = RenderConfig(model=model, pooling=pooling, weights=str(weights) if weights else None,
                                  precision=precision, backend="tensorrt", content_layers=taps[:1], style_layers=taps)
        except ConfigError as error:  # the layers are one option here
            if error.field not in ("content_layers", "style_layers"):
                raise
            raise ConfigError(error.problem if taps else "at least one layer is needed", field="layers") from None
        backbone = engine.load_backbone(model, taps, pooling=pooling, weights_path=weights)
        if format == "onnx":
            graphs = engine.export_onnx(backbone, model=model)
            print(graphs.forward_path)
            print(graphs.backward_path)
            return
        sizes = [_frame(text) for text in (size or ["512"])]
        missing = engine.backends.tensorrt_available()
        if missing is not None:
            raise BackendUnavailableError(f"--format tensorrt: {missing}")
        built = cast("TensorRTBackend",  # the config above asks for backend tensorrt
                     engine.backend_for(config, engine.resolve_device("cuda"), sizes, backbone=backbone))
        for path in built.build():
            print(path)

    run_guarded(debug, body)


_MATMUL_DTYPES = {"fp32": "float32", "tf32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@app.command(cls=HelpCommand)
def bench(
    size: Annotated[list[str] | None, typer.Option("--size", help="Sizes to time (512 = 512x384, or WIDTHxHEIGHT); repeat.", show_default="256, 512, 1024")] = None,
    backend: Annotated[list[str] | None, typer.Option("--backend", help="Backends to compare; repeat.", show_default="every one present")] = None,
    precision: Annotated[list[str] | None, typer.Option("--precision", help="fp32, tf32, bf16, fp16; repeat to compare.", show_default="tf32 on CUDA; on a CPU bf16 where native and faster, else fp32")] = None,
    model: Annotated[str, typer.Option(help="Backbone (timing does not depend on the weights).")] = "vgg19-random",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    iterations: Annotated[int, typer.Option("--iterations", "-n", help="Timed iterations per size.")] = 5,
    warmup: Annotated[int, typer.Option(help="Untimed iterations first.")] = 2,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the figures as JSON.", show_default="none")] = None,
    report: Annotated[Path | None, typer.Option("--report", metavar="DIR", help="Write a report folder: bench.json with the machine's description, PNG charts (seconds per iteration, share of the matrix rate, peak memory against megapixels) and README.md.", show_default="none")] = None,
    compare: Annotated[tuple[Path, Path] | None, typer.Option("--compare", metavar="A B", help="Print two report folders side by side, and measure nothing.", show_default="none")] = None,
    cpu_precision: Annotated[bool, typer.Option("--cpu-precision", help="Only measure bf16 against fp32 on this CPU again (what --precision auto runs), print the figures and replace the cached choice.", show_default="off")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.", show_default="off")] = False,
) -> None:
    """Time forward + image gradient per backend, side by side; records the fastest for --backend auto."""

    def body() -> None:
        if cpu_precision:
            _remeasure_cpu_precision()
            return
        if compare is not None and None not in compare:
            print_comparison(*compare)
            return
        if iterations < 1 or warmup < 0:
            raise ConfigError(f"needs at least 1 timed iteration and no negative warm-up, got -n {iterations} "
                              f"--warmup {warmup}", field="iterations")
        for name in backend or []:
            RenderConfig(backend=name)  # refuses an unknown name with the valid list
        target = engine.resolve_device(RenderConfig(device=device).runtime.device)
        names = backend or engine.backends.available_backends(target)
        options = [engine.Precision(value).name if value != "auto" else value for value in (precision or ["auto"])]
        sizes = [_frame(text) for text in (size or ["256", "512", "1024"])]
        if output is not None:  # before the timing, not after it
            check_json_output(output, "results", "output")
        if report is not None:
            engine.backends.check_report_folder(report)
        if target.type == "cpu":
            engine.use_physical_cores()  # before the matrix rate too, as a render would run
        taps = RenderConfig().taps
        backbone = engine.load_backbone(model, taps)
        # The convolutions' achieved rate against the device's own measured matrix rate at the
        # precision they run in (tf32 and fp32 share fp32 operands); auto is what each backend
        # runs (a CPU's bf16 on torch, fp32 on onnxruntime), so it is resolved per backend.
        peaks: dict[str, float] = {}
        table = Table("backend", "precision", "size", "ms/iter", "images/s", "peak memory", "TFLOP/s", "of matmul")
        for column in table.columns:  # narrow terminals wrap the headers instead of cutting them
            column.overflow = "fold"
        rows: list[dict[str, Any]] = []
        by_backend: dict[str, list[float]] = {}
        for name in names:
            for option in options:
                config = RenderConfig(model=model, backend=name, precision=option, device=str(target))
                try:
                    built = engine.backend_for(config, target, sizes, backbone=backbone)
                except BackendUnavailableError as error:
                    say(f"skipped {name} {option}: {error}")
                    continue
                value = built.precision
                if value.name not in peaks:
                    peaks[value.name] = engine.backends.matrix_tflops(target, size=4096 if target.type == "cuda" else 1024,
                                                      dtype=_MATMUL_DTYPES[value.name], tf32=value.name == "tf32")
                for height, width in sizes:
                    timing = engine.backends.time_backend(built, height, width, iterations=iterations, warmup=warmup)
                    share = timing.tflops / peaks[value.name]
                    rows.append({**timing.to_dict(), "precision": value.name, "share_of_matrix_rate": share})
                    if option == options[0]:
                        by_backend.setdefault(name, []).append(timing.ms_per_iteration)
                    table.add_row(name, value.name, f"{width}x{height}", f"{timing.ms_per_iteration:.1f}",
                                  f"{timing.images_per_second:.2f}", f"{timing.peak_memory_bytes / 2**30:.2f} GiB",
                                  f"{timing.tflops:.2f}", f"{share:.0%}")
        Console().print(table)
        machine = engine.backends.machine_facts(target)
        if target.type == "cpu":
            say(f"threads: {machine['threads']} (physical cores: {engine.physical_cores()}); "
                f"native bf16: {'yes' if engine.native_bf16() else 'no'}")
        figures = {"device": str(target), "model": model, "platform": platform.platform(),
                   "gpu": machine["gpu"], "matmul_tflops": peaks, "threads": machine["threads"],
                   "physical_cores": engine.physical_cores(), "results": rows}
        if output is not None:
            write_json_atomic(output, figures)
        if report is not None:
            fields = {key: value for key, value in figures.items() if key != "results"}
            engine.write_bench_report(rows, engine.describe_machine(target), report, **fields)
            say(f"report: {report / 'README.md'}")
        if len(by_backend) > 1:
            totals = {name: sum(values) for name, values in by_backend.items()}
            try:
                fastest = engine.backends.record_fastest_backend(target, totals)
            except OSError as error:  # the figures stand; only the choice for --backend auto is not kept
                say(f"warning: the fastest backend could not be recorded in the cache ({error})")
            else:
                say(f"fastest here: {fastest} (used by --backend auto on this machine)")

    run_guarded(debug, body)


def _remeasure_cpu_precision() -> None:
    engine.use_physical_cores()  # the choice is kept per thread count, that of a render
    measured = engine.measure_bf16()
    if measured is None:
        say("no native bf16 on this CPU (AVX-512 BF16 or AMX): --precision auto runs fp32, nothing to measure")
        return
    say(f"fp32 ms: {', '.join(f'{value:.1f}' for value in measured.fp32_ms)}")
    say(f"bf16 ms: {', '.join(f'{value:.1f}' for value in measured.bf16_ms)}")
    say(f"{measured.describe()} (rule: {measured.rule}; kept in the cache, measured {measured.measured_at})")

