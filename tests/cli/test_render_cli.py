"""The CLI end to end on small images with random weights: output, metadata, exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from styleforge import engine
from styleforge.cli import app
from styleforge.engine import RenderInterrupted, load_backbone, load_image, read_metadata, resize_to
from styleforge.kernels import gram

runner = CliRunner()
FAST = ["--model", "vgg19-random", "--device", "cpu", "--quiet"]


@pytest.fixture
def small_inputs(tmp_path, test_images):
    """tubingen and starry_night, resized down to keep the test fast."""
    paths = {}
    for name, source in (("content", "tubingen.jpg"), ("style", "starry_night.jpg")):
        with Image.open(test_images / source) as image:
            image.thumbnail((96, 96))
            paths[name] = tmp_path / f"{name}.png"
            image.save(paths[name])
    return paths


def test_render_lowers_style_loss_and_writes_a_reproducible_file(tmp_path, small_inputs):
    output = tmp_path / "out.png"
    result = runner.invoke(app, ["render", str(small_inputs["content"]), "--style", str(small_inputs["style"]),
                                 "-o", str(output), "--size", "64", "-n", "30", "--style-weight", "100", *FAST])
    assert result.exit_code == 0, result.output
    image = load_image(output)
    assert image.shape == (3, 48, 64)

    metadata = read_metadata(output)
    assert metadata["config"]["size"] == 64 and metadata["config"]["iterations"] == 30
    assert metadata["config"]["model"] == "vgg19-random" and metadata["iterations_done"] == 30
    assert metadata["styles"] == [str(small_inputs["style"])]
    engine.RenderConfig.from_options(metadata["config"])  # the parameters rebuild the same config

    # Style loss, measured independently on the same random backbone: content (the init) vs output.
    config = engine.RenderConfig.from_options(metadata["config"])
    layers = config.objective.style_layers
    backbone = load_backbone("vgg19-random", layers, seed=config.optimization.seed)
    style = engine.resize_long_side(load_image(small_inputs["style"]), 64)[None]
    style_features = backbone(style)
    targets = {layer: gram(style_features[layer]) for layer in layers}

    def style_term(picture):
        features = backbone(picture[None])
        return sum(((gram(features[k]) - t).pow(2).sum() / t.pow(2).sum()).item() for k, t in targets.items())

    before = style_term(resize_to(load_image(small_inputs["content"]), 48, 64))
    assert style_term(image) < before / 4


def test_save_every_writes_intermediates(tmp_path, small_inputs):
    output = tmp_path / "out.png"
    result = runner.invoke(app, ["render", str(small_inputs["content"]), "-s", str(small_inputs["style"]),
                                 "-o", str(output), "--size", "32", "-n", "6", "--save-every", "2", *FAST])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.glob("out*.png")) == ["out.png", "out_2.png", "out_4.png"]
    assert read_metadata(tmp_path / "out_4.png")["iterations_done"] == 4


def test_config_file_sets_options_and_the_command_line_overrides(tmp_path, small_inputs):
    config = tmp_path / "render.toml"
    config.write_text(f'style = ["{small_inputs["style"]}"]\nsize = 40\niterations = 3\nstyle-weight = 7.0\n'
                      'model = "vgg16-random"\n')
    output = tmp_path / "out.jpg"
    result = runner.invoke(app, ["render", str(small_inputs["content"]), "--config", str(config), "-o", str(output),
                                 "--size", "32", "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    metadata = read_metadata(output)
    assert metadata["config"]["size"] == 32  # command line wins
    assert metadata["config"]["style_weight"] == 7.0 and metadata["config"]["model"] == "vgg16-random"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.jpg"], "missing.jpg: no such file"),
        (["{content}", "--optimizer", "sgd"], "--optimizer: unknown value 'sgd'"),
        (["{content}", "--style-layers", "relu9_1"], "--style-layers"),
        (["{content}", "--init", "nothing.png"], "--init"),
        (["{content}", "--save-every", "-1"], "--save-every"),
        (["{content}", "--bit-depth", "16", "--config", "{bad_config}"], "unknown option 'colour'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path, small_inputs, args, message):
    bad_config = tmp_path / "bad.toml"
    bad_config.write_text("colour = 1\n")
    output = tmp_path / "out.png"
    args = [a.format(content=small_inputs["content"], bad_config=bad_config) for a in args]
    result = runner.invoke(app, ["render", *args, "-s", str(small_inputs["style"]), "-o", str(output), "-n", "2",
                                 *FAST])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not output.exists()


def test_existing_output_is_kept_without_overwrite(tmp_path, small_inputs):
    output = tmp_path / "out.png"
    output.write_bytes(b"the user's file")
    args = ["render", str(small_inputs["content"]), "-s", str(small_inputs["style"]), "-o", str(output),
            "--size", "32", "-n", "2", *FAST]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "output exists" in result.output
    assert output.read_bytes() == b"the user's file"
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0
    assert load_image(output).shape == (3, 24, 32)


def test_a_missing_output_folder_is_made_when_the_image_is_written_and_not_before(tmp_path, small_inputs):
    # README's first command writes out/tubingen_starry.png: out/ (ignored by git) need not exist.
    output = tmp_path / "out" / "shots" / "a.png"
    base = ["render", str(small_inputs["content"]), "-s", str(small_inputs["style"]), "-o", str(output), *FAST]
    refused = runner.invoke(app, [*base, "--optimizer", "sgd"])
    assert refused.exit_code == 2 and not (tmp_path / "out").exists()  # bad input leaves no folder behind
    assert runner.invoke(app, [*base, "--size", "32", "-n", "2"]).exit_code == 0
    assert load_image(output).shape == (3, 24, 32)


def test_intermediate_names_are_checked_before_any_work(tmp_path, small_inputs):
    (tmp_path / "out_2.png").write_bytes(b"keep me")
    result = runner.invoke(app, ["render", str(small_inputs["content"]), "-s", str(small_inputs["style"]),
                                 "-o", str(tmp_path / "out.png"), "-n", "4", "--size", "64", "--save-every", "2",
                                 *FAST])
    assert result.exit_code == 2 and "out_2.png" in result.output
    assert not (tmp_path / "out.png").exists()


def test_ctrl_c_writes_the_current_image_and_exits_130(tmp_path, small_inputs, monkeypatch):
    def interrupted(*args, **kwargs):
        raise RenderInterrupted(torch.full((3, 8, 8), 0.5), iteration=3)

    monkeypatch.setattr(engine, "render", interrupted)
    output = tmp_path / "out.png"
    result = runner.invoke(app, ["render", str(small_inputs["content"]), "-s", str(small_inputs["style"]),
                                 "-o", str(output), *FAST])
    assert result.exit_code == 130
    assert read_metadata(output)["iterations_done"] == 3 and read_metadata(output)["interrupted"] is True


def test_render_failure_exits_1_without_output(tmp_path, small_inputs, monkeypatch):
    def failing(*args, **kwargs):
        raise engine.RenderError("the loss became NaN/Inf by iteration 10")

    monkeypatch.setattr(engine, "render", failing)
    output = tmp_path / "out.png"
    result = runner.invoke(app, ["render", str(small_inputs["content"]), "-s", str(small_inputs["style"]),
                                 "-o", str(output), *FAST])
    assert result.exit_code == 1 and "NaN" in result.output
    assert not output.exists()


def test_console_script_exit_code_and_debug_traceback(tmp_path):
    """The installed entry point itself: one line and exit 2, a traceback only with --debug."""
    base = [sys.executable, "-m", "styleforge.cli", "render", str(tmp_path / "none.jpg"), "-s", "x.jpg",
            "-o", str(tmp_path / "o.png")]
    quiet = subprocess.run(base, capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 2
    assert quiet.stderr.strip().count("\n") == 0 and "no such file" in quiet.stderr
    loud = subprocess.run([*base, "--debug"], capture_output=True, text=True, timeout=120)
    assert loud.returncode == 2 and "Traceback" in loud.stderr


def test_models_lists_every_model_and_marks_the_default():
    result = runner.invoke(app, ["models"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in engine.MODELS:
        assert name in result.output
    marked = [line for line in result.output.splitlines() if "(default)" in line]
    assert len(marked) == 1 and "vgg19-oxford-8bit (default)" in marked[0]


def test_mrf_render_through_the_cli_lowers_the_mrf_loss(tmp_path, small_inputs):
    from styleforge.engine.objectives import build_patch_bank, mrf_objective

    output = tmp_path / "mrf.png"
    result = runner.invoke(app, ["render", str(small_inputs["content"]), "-s", str(small_inputs["style"]),
                                 "-o", str(output), "--method", "mrf", "--size", "48", "--levels", "2", "-n", "25",
                                 "--mrf-layers", "relu2_1,relu3_1", "--content-weight", "0.05", "--tv-weight", "0",
                                 *FAST])
    assert result.exit_code == 0, result.output
    metadata = read_metadata(output)
    assert metadata["config"]["method"] == "mrf" and metadata["iterations_done"] == 50
    image = load_image(output)
    config = engine.RenderConfig.from_options(metadata["config"])
    backbone = load_backbone("vgg19-random", config.taps, seed=config.optimization.seed)
    style = engine.resize_long_side(load_image(small_inputs["style"]), 48)[None]
    layer_weights = config.mrf.layer_weight_map()
    bank = build_patch_bank(backbone, [style], list(layer_weights), patch_size=3, style_stride=2)
    objective = mrf_objective(bank, layer_weights, content_targets=None, content_weight=0.0, mrf_weight=1.0,
                              tv_weight=0.0, patch_size=3, synthesis_stride=2)

    def mrf_term(picture):
        with torch.no_grad():
            return objective(backbone(picture[None]), picture[None])["style"].item()

    assert mrf_term(image) < mrf_term(resize_to(load_image(small_inputs["content"]), *image.shape[-2:])) / 3


def test_doodle_through_the_cli_from_a_map_alone(tmp_path):
    def write_map(path, size, left, right):
        picture = Image.new("RGB", size, left)
        picture.paste(right, (size[0] // 2, 0, size[0], size[1]))
        picture.save(path)
        return path

    style = tmp_path / "style.png"
    Image.effect_noise((40, 40), 60).convert("RGB").save(style)
    style_map = write_map(tmp_path / "style_sem.png", (40, 40), (255, 0, 0), (0, 0, 255))
    content_map = write_map(tmp_path / "target_sem.png", (48, 32), (0, 0, 255), (255, 0, 0))
    output = tmp_path / "doodle.png"
    result = runner.invoke(app, ["render", "--content-map", str(content_map), "-s", str(style), "--style-map",
                                 str(style_map), "-o", str(output), "--method", "mrf", "--size", "48", "-n", "3",
                                 "--levels", "1", *FAST])
    assert result.exit_code == 0, result.output
    assert load_image(output).shape == (3, 32, 48)
    assert read_metadata(output)["content_map"] == str(content_map)

    bad_map = write_map(tmp_path / "bad_sem.png", (40, 40), (255, 0, 0), (0, 255, 0))
    again = runner.invoke(app, ["render", "--content-map", str(content_map), "-s", str(style), "--style-map",
                                str(bad_map), "-o", str(tmp_path / "bad.png"), "--method", "mrf", *FAST])
    assert again.exit_code == 2 and "#0000ff" in again.output
    assert not (tmp_path / "bad.png").exists()


def test_progress_in_a_log_is_plain_lines(tmp_path, small_inputs):
    result = runner.invoke(app, ["render", str(small_inputs["content"]), "-s", str(small_inputs["style"]),
                                 "-o", str(tmp_path / "o.png"), "--size", "32", "-n", "10", "--model", "vgg19-random",
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("render ")]
    assert [line.split()[1] for line in lines] == ["1/10"] + [f"{i}/10" for i in range(1, 11)][1:]
    assert "loss" in lines[-1] and "wrote" in result.output


def test_error_text_with_brackets_is_printed_verbatim(tmp_path, small_inputs):
    config = tmp_path / "bad.toml"
    config.write_text("render = 3\n")  # "[render] must be a table": rich must not eat the brackets
    result = runner.invoke(app, ["render", str(small_inputs["content"]), "-s", str(small_inputs["style"]),
                                 "-o", str(tmp_path / "o.png"), "--config", str(config), *FAST])
    assert result.exit_code == 2
    assert "[render] must be a table" in result.output


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, small_inputs):
    result = runner.invoke(app, ["render", str(small_inputs["content"]), "-s", str(small_inputs["style"]),
                                 "-o", str(tmp_path / "o.png"), "--size", "3840x2160", "--max-memory", "16G",
                                 "--dry-run", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "level 1: 240x135, untiled" in result.output
    assert "level 9: 3840x2160" in result.output and "tiles of" in result.output
    assert not (tmp_path / "o.png").exists()


def test_every_render_config_field_is_a_command_line_option():
    import dataclasses
    import inspect

    from styleforge.cli._batch import batch as batch_command
    from styleforge.cli._render import render as render_command

    for command in (render_command, batch_command):
        options = set(inspect.signature(command).parameters)
        assert [name for name in engine.RenderConfig.FIELDS if name not in options] == []
    assert len(engine.RenderConfig.FIELDS) == sum(len(dataclasses.fields(group)) for group in (
        engine.RenderConfig().objective, engine.RenderConfig().mrf, engine.RenderConfig().pyramid,
        engine.RenderConfig().optimization, engine.RenderConfig().runtime, engine.RenderConfig().memory,
        engine.RenderConfig().color_management))


def test_style_loss_is_an_option_and_a_bad_value_is_one_line(tmp_path, small_inputs):
    output = tmp_path / "out.png"
    args = ["render", str(small_inputs["content"]), "-s", str(small_inputs["style"]), "-o", str(output),
            "--size", "32", "-n", "2", *FAST]
    result = runner.invoke(app, [*args, "--style-loss", "sliced"])
    assert result.exit_code == 0, result.output
    assert read_metadata(output)["config"]["style_loss"] == "sliced"
    bad = runner.invoke(app, [*args, "--style-loss", "slised", "--overwrite"])
    lines = bad.output.strip().splitlines()
    assert bad.exit_code == 2 and len(lines) == 1, bad.output
    assert ("--style-loss: unknown value 'slised' (did you mean 'sliced'?); choose one of gram, w2, sliced, nnst"
            in lines[0])


def test_auto_precision_is_recorded_as_what_ran_and_reproduces_the_render(tmp_path, small_inputs, monkeypatch):
    """--precision auto resolves before the render: the metadata names bf16 (where bf16 pays) or
    fp32, never auto, and a render from that metadata on a machine that would resolve otherwise
    runs the same numbers and gives the same pixels."""
    monkeypatch.setattr(engine._device, "bf16_pays", lambda: True)
    first, second = tmp_path / "first.png", tmp_path / "second.png"
    args = ["-s", str(small_inputs["style"]), "--size", "48", "-n", "3", "--levels", "1", "--model", "vgg16-random",
            "--device", "cpu"]
    result = runner.invoke(app, ["render", str(small_inputs["content"]), "-o", str(first), *args])
    assert result.exit_code == 0, result.output
    assert "bf16" in result.output and "s in all" in result.output  # what ran, and the whole command's time
    metadata = read_metadata(first)
    assert metadata["config"]["precision"] == "bf16"

    monkeypatch.setattr(engine._device, "bf16_pays", lambda: False)  # this machine would pick fp32 now
    config = engine.RenderConfig.from_options(metadata["config"])
    content = engine.load_image(small_inputs["content"])
    rendered = engine.render(config, content, [engine.load_image(small_inputs["style"])])
    assert rendered.precision == "bf16" and rendered.backend == "torch"
    assert torch.equal((rendered.image * 255).round(), (load_image(first) * 255).round())
    result = runner.invoke(app, ["render", str(small_inputs["content"]), "-o", str(second), *args,
                                 "--precision", "auto"])
    assert read_metadata(second)["config"]["precision"] == "fp32"


def test_waits_are_named_in_the_log_and_counted_in_the_elapsed_time(tmp_path, small_inputs, monkeypatch):
    """The engine's waits reach the CLI as WaitEvents: a line when one starts and one when it ends
    (in logs; a status line on a terminal), and the closing line says what the time includes."""
    from_loop = engine.rendering._loop

    def slow_backend(*args, **kwargs):
        with engine._wait.waiting("downloading fake weights") as wait:
            wait.update(10, total=20)
            fake[0] += 1.5
        return original(*args, **kwargs)

    fake = [0.0]
    original = from_loop.backend_for
    monkeypatch.setattr(from_loop, "backend_for", slow_backend)
    monkeypatch.setattr(engine._wait, "_now", lambda: fake[0])
    output = tmp_path / "out.png"
    result = runner.invoke(app, ["render", str(small_inputs["content"]), "-s", str(small_inputs["style"]), "-o",
                                 str(output), "--size", "48", "-n", "3", "--levels", "1", "--model", "vgg16-random",
                                 "--device", "cpu", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    assert "downloading fake weights ..." in result.output
    assert "downloading fake weights: done in 1.5 s" in result.output
    assert "including downloading fake weights 1.5 s" in result.output
