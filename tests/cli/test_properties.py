"""Arbitrary values for every option, through the command line, a TOML config and a manifest.

Whatever the values: the command exits 0 (it worked) or 2 (bad input), with at most one line on
stderr and no traceback when it fails, and a failure creates or changes no file. A render may
also fail with 1 when valid values make it diverge (one line naming --learning-rate), and a
batch with 1 when one of its jobs failed (the report says which). Renders are kept tiny: valid
configurations reach a render clamped to 32 px, one level, one iteration and random weights (the
values were validated as given: only the work is made cheap), and ``--workers``/``--devices``
get only values that start no worker, ``--ray`` none (starting Ray is not cheap).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import typing
from pathlib import Path

import pytest
import torch
import typer
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from styleforge import engine
from styleforge.cli import app
from styleforge.engine import RenderConfig
from styleforge.engine.backends import BackendTiming
from styleforge.engine.batch import BackendPool, _job

runner = CliRunner()
#: CI runs the same examples every time (derandomized, no database file); STYLEFORGE_EXPLORE=N
#: draws N times as many, fresh each run, to look for new failures.
EXPLORE = int(os.environ.get("STYLEFORGE_EXPLORE", "0"))
SETTINGS = dict(deadline=None, database=None, derandomize=not EXPLORE,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def examples(count: int) -> int:
    return count * max(1, EXPLORE)

# --- values ---------------------------------------------------------------------------------------

#: Values a user might plausibly mistype or try, beside arbitrary text and numbers.
SPECIAL = ["", " ", "inf", "-inf", "nan", "0", "-1", "1", "2", "0.5", "1e309", "1e39", "99999999999999999999999",
           "1,2", ",", "a,b", "3840x2160", "0x5", "32x24", "1.2.3G", "16G", "1K", "relu1_1", "relu9_9",
           "relu1_1,relu2_1", "cpu", "cuda", "gpu0", "auto", "mrf", "gram", "adam", "lbfgs", "content", "noise",
           "style", "fp16", "bf16", "torch", "onnxruntime", "tensorrt", "vgg19-random", "vgg16", "avg",
           "{d}/c.png", "{d}/s.png", "{d}/missing.png", "{d}", "{d}/out/{{stem}}.png", "{{foo}}", "x.gif", "-",
           "--size", "café", "~nobody/x.png", "../x.png", "/sys/x.png"]
text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
cli_value = st.one_of(st.sampled_from(SPECIAL), text, st.integers(-(10**25), 10**25).map(str),
                      st.floats().map(repr))
scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(),
                   st.text(st.characters(blacklist_categories=("Cs",)), max_size=12), st.sampled_from(SPECIAL))
file_value = st.one_of(scalar, st.lists(scalar, max_size=3), st.dictionaries(text, scalar, max_size=2))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A working folder with a photo and a painting (tiny), the cache inside it."""
    base = tmp_path_factory.mktemp("properties")
    generator = torch.Generator().manual_seed(0)
    Image.fromarray((torch.rand(24, 32, 3, generator=generator) * 255).byte().numpy()).save(base / "c.png")
    Image.fromarray((torch.rand(32, 32, 3, generator=generator) ** 2 * 255).byte().numpy()).save(base / "s.png")
    return base


@contextlib.contextmanager
def _inside(folder: Path):
    """Run with the folder as working directory and cache: relative junk paths land there."""
    previous, cache = Path.cwd(), os.environ.get("STYLEFORGE_CACHE")
    os.chdir(folder)
    os.environ["STYLEFORGE_CACHE"] = str(folder / "cache")
    try:
        yield
    finally:
        os.chdir(previous)
        if cache is None:
            os.environ.pop("STYLEFORGE_CACHE", None)
        else:
            os.environ["STYLEFORGE_CACHE"] = cache


def _cheap(config: RenderConfig) -> RenderConfig:
    """The same configuration, made cheap to render: 32 px, one level, one evaluation, random
    weights of the same architecture, torch instead of an exported graph."""
    runtime = config.runtime
    size = config.pyramid.size
    return config.replace({
        "size": [32, 24] if isinstance(size, tuple) else 32, "levels": 1, "iterations": 1,
        "model": "vgg16-random" if runtime.model.startswith("vgg16") else "vgg19-random", "weights": None,
        "backend": "torch" if runtime.backend == "onnxruntime" else runtime.backend,
        "style_rotations": min(config.mrf.style_rotations, 1), "style_scales": min(config.mrf.style_scales, 1),
        "lbfgs_history": min(config.optimization.lbfgs_history, 5),
        "style_scale": min(config.objective.style_scale, 2.0),
    })


@pytest.fixture
def cheap_renders(monkeypatch):
    real = engine.render

    def render(config, *args, **kwargs):
        kwargs.pop("backend", None)
        return real(_cheap(config), *args, **kwargs)

    monkeypatch.setattr(engine, "render", render)
    monkeypatch.setattr(_job, "render", render)
    monkeypatch.setattr(BackendPool, "get", lambda self, config, device, sizes: None)


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


def _check(result, before: dict, after: dict, *, allow_job_failures: bool = False) -> None:
    assert "Traceback" not in result.output, result.output
    lines = result.stderr.strip().splitlines()
    event(f"exit {result.exit_code}" + (f": {' | '.join(lines)[:200]}" if result.exit_code and lines else ""))
    if result.exit_code == 0:
        assert not [name for name in after if name.endswith(".tmp")], after
        return
    if result.exit_code == 1 and allow_job_failures:
        assert lines and "report: " in lines[-1], result.stderr
        return
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    if result.exit_code == 1:  # valid values, and the render diverged
        assert lines[0].startswith("error: --learning-rate: "), result.stderr
    else:
        assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert after == before, "a failed command created or changed files"


def _flags(command: str) -> dict[str, tuple[object, type]]:
    """Every option of a command: name -> (the click parameter, the type its value is read as)."""
    group = typer.main.get_command(app)
    cli = group.get_command(typer.Context(group), command)
    hints = typing.get_type_hints(cli.callback, include_extras=True)
    return {param.opts[0]: (param, _kind(hints.get(param.name, str))) for param in cli.params
            if param.param_type_name == "option" and param.name not in ("help", "debug")}


def _kind(annotation) -> type:
    while typing.get_origin(annotation) is not None:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0]
    return annotation if annotation in (int, float, bool) else str


#: Values by the type the flag is read as: mostly plausible (so that validation gets past typer
#: and deep into the engine), sometimes anything at all.
VALUES = {
    int: st.one_of(st.integers(-3, 40).map(str), st.integers(-(10**25), 10**25).map(str), cli_value),
    float: st.one_of(st.floats(-1, 100).map(repr), st.sampled_from(["inf", "nan", "1e39", "1e-300", "0", "-0.0"]),
                     st.floats().map(repr), cli_value),
    str: cli_value,
}


def _arguments(draw, command: str, excluded: set[str], count: int) -> list[str]:
    options = {name: spec for name, spec in _flags(command).items() if name not in excluded}
    chosen = draw(st.lists(st.sampled_from(sorted(options)), max_size=count, unique=True))
    arguments = []
    for name in chosen:
        param, kind = options[name]
        if param.is_flag:
            arguments.append(draw(st.sampled_from([*param.opts, *param.secondary_opts])))
        else:
            arguments += [name, draw(VALUES[kind])]
    return arguments


def _run(folder: Path, arguments: list[str]):
    arguments = [argument.replace("{d}", str(folder)).replace("{{", "{").replace("}}", "}")
                 for argument in arguments]
    before = _snapshot(folder)
    result = runner.invoke(app, arguments)
    return result, before, _snapshot(folder)


# --- render ----------------------------------------------------------------------------------------


@st.composite
def render_command(draw):
    arguments = ["render", draw(st.sampled_from(["{d}/c.png", "{d}/missing.png", "{d}/s.png"]))]
    arguments += ["-s", "{d}/s.png", "-o", draw(st.sampled_from(["{d}/out.png", "{d}/out/x.png", "{d}/o.gif"])),
                  "-q", "--model", "vgg19-random", "--device", "cpu"]
    if draw(st.booleans()):
        arguments.append("--dry-run")
    return arguments + _arguments(draw, "render", {"--quiet", "--dry-run"}, 4)


@given(arguments=render_command())
@settings(max_examples=examples(15), **SETTINGS)
def test_render_with_arbitrary_flags(folder, cheap_renders, arguments):
    with _inside(folder):
        result, before, after = _run(folder, arguments)
    _check(result, before, after)
    if result.exit_code == 0:
        (folder / "out.png").unlink(missing_ok=True)


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value if item is not None) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {_toml(v)}" for k, v in value.items()
                               if v is not None) + "}"
    return '""'


OWN_OPTIONS = ["content", "output", "style", "style_map", "content_map", "save_every", "bit_depth", "max_pixels",
               "overwrite"]


@st.composite
def config_file(draw):
    keys = draw(st.lists(st.sampled_from([*RenderConfig.FIELDS, *OWN_OPTIONS, "render", "colour"]), max_size=4,
                         unique=True))
    lines = []
    for key in keys:
        value = draw(file_value)
        if value is not None:
            lines.append(f"{json.dumps(key.replace('_', draw(st.sampled_from(['_', '-']))))} = {_toml(value)}")
    raw = draw(st.sampled_from([b"", b"\xff\xfe", b"[render]\n", b"x = \n"]))
    return raw + "\n".join(lines).encode()


@given(content=config_file(), dry_run=st.booleans())
@settings(max_examples=examples(12), **SETTINGS)
def test_render_with_an_arbitrary_config_file(folder, cheap_renders, content, dry_run):
    (folder / "render.toml").write_bytes(content)
    arguments = ["render", "{d}/c.png", "-s", "{d}/s.png", "-o", "{d}/out.png", "--config", "{d}/render.toml", "-q",
                 "--model", "vgg19-random", "--device", "cpu", *(["--dry-run"] if dry_run else [])]
    with _inside(folder):
        result, before, after = _run(folder, arguments)
    _check(result, before, after)
    (folder / "out.png").unlink(missing_ok=True)


# --- batch -----------------------------------------------------------------------------------------


@st.composite
def manifest(draw):
    job = {"content": "c.png", "style": "s.png", "output": "out/c.png",
           "model": "vgg19-random", "device": "cpu"}
    for key in draw(st.lists(st.sampled_from([*RenderConfig.FIELDS, "content", "style", "output", "style_map",
                                             "content_map", "colour"]), max_size=3, unique=True)):
        job[key] = draw(file_value)
    lines = [json.dumps(job)]
    if draw(st.booleans()):
        lines.insert(0, json.dumps({"defaults": draw(file_value)}))
    return "\n".join(lines) + "\n"


def _clean(folder: Path) -> None:
    for name in ("jobs.report.json", "batch-report.json"):
        (folder / name).unlink(missing_ok=True)
    for leftover in (folder / "out").rglob("*") if (folder / "out").exists() else []:
        if leftover.is_file():
            leftover.unlink()


@given(text_=manifest())
@settings(max_examples=examples(8), **SETTINGS)
def test_batch_with_an_arbitrary_manifest(folder, cheap_renders, text_):
    (folder / "jobs.jsonl").write_text(text_)
    with _inside(folder):
        result, before, after = _run(folder, ["batch", "{d}/jobs.jsonl"])
    _check(result, before, after, allow_job_failures=True)
    _clean(folder)


@st.composite
def batch_command(draw):
    if draw(st.booleans()):
        arguments = ["batch", "{d}/jobs.jsonl"]
    else:
        arguments = ["batch", "--glob", draw(st.sampled_from(["{d}/c.png", "{d}/*.png", "{d}/none*"])),
                     "-s", "{d}/s.png", "-o", draw(st.sampled_from(["{d}/out/{{stem}}.png", "out/{{index}}.png",
                                                                   "{d}/out/{{foo}}.png"]))]
    arguments += ["--model", "vgg19-random", "--device", "cpu"]
    arguments += _arguments(draw, "batch", {"--ray", "--workers", "--devices", "--verbose"}, 4)
    if draw(st.booleans()):  # never a value that starts a worker process: the cost is not the point
        arguments += ["--workers", draw(st.sampled_from(["0", "-1", "x", "1", "", "1.5"]))]
    if draw(st.booleans()):  # a machine with CUDA drops these (see below)
        arguments += ["--devices", draw(st.sampled_from(["0", "x", "", "gpu0", "1,x", "99999", "0,0", "-1"]))]
    return arguments


@given(arguments=batch_command())
@settings(max_examples=examples(8), **SETTINGS)
def test_batch_with_arbitrary_flags(folder, cheap_renders, arguments):
    (folder / "jobs.jsonl").write_text(json.dumps({"content": "c.png", "style": "s.png", "output": "out/c.png"})
                                       + "\n")
    if "--devices" in arguments and torch.cuda.is_available():
        arguments = arguments[:arguments.index("--devices")]
    with _inside(folder):
        result, before, after = _run(folder, arguments)
    _check(result, before, after, allow_job_failures=True)
    _clean(folder)


# --- export and bench (their work stubbed: only what they check is exercised) -------------------------


@pytest.fixture
def cheap_tools(monkeypatch, tmp_path):
    real_backbone = engine.load_backbone

    def backbone(model, taps, **kwargs):
        kwargs.pop("weights_path", None)
        return real_backbone("vgg16-random" if model.startswith("vgg16") else "vgg19-random", taps, **kwargs)

    monkeypatch.setattr(engine, "load_backbone", backbone)
    monkeypatch.setattr(engine, "export_onnx", lambda backbone, model: type(
        "Graphs", (), {"forward_path": tmp_path / "f.onnx", "backward_path": tmp_path / "b.onnx"}))
    monkeypatch.setattr("styleforge.engine.backends.time_backend", lambda built, height, width, **kw: BackendTiming(
        built.name, "cpu", height, width, 1.0, 1.0, 1000.0, 1, 1.0))
    monkeypatch.setattr("styleforge.engine.backends.matrix_tflops", lambda *a, **k: 1.0)


@st.composite
def tool_command(draw):
    command = draw(st.sampled_from(["export", "bench"]))
    return [command, *_arguments(draw, command, set(), 4)]


@given(arguments=tool_command())
@settings(max_examples=examples(8), **SETTINGS)
def test_export_and_bench_with_arbitrary_flags(folder, cheap_tools, arguments):
    with _inside(folder):
        result, before, after = _run(folder, arguments)
    _check(result, before, after)
