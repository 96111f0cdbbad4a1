"""The command line's help: fast (no torch), and readable at 80 and 120 columns."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from styleforge.cli import app

runner = CliRunner()
COMMANDS = ["render", "batch", "video", "models", "export", "bench"]

#: Imports the CLI, renders every command's help, and says whether torch was loaded.
_HELP_WITHOUT_TORCH = """
import sys
from typer.testing import CliRunner
from styleforge.cli import app
runner = CliRunner()
for args in ([], *([name] for name in {commands!r})):
    result = runner.invoke(app, [*args, "--help"], terminal_width=80)
    assert result.exit_code == 0, (args, result.output)
print(sorted(name for name in sys.modules if name == "torch" or name.startswith("torch.")))
"""


def test_help_of_every_command_loads_no_torch():
    """--help must answer at once: torch alone takes seconds and hundreds of MB to import."""
    code = _HELP_WITHOUT_TORCH.format(commands=COMMANDS)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_command_line_still_runs_what_help_did_not_load(tmp_path):
    """The names the CLI reads lazily (engine.render, engine.batch...) are there when it runs."""
    result = subprocess.run([sys.executable, "-m", "styleforge.cli", "models"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "vgg16-random" in result.stdout


LEAKS = ["…", "<list", "<bool>", "<Path", "<path>", "<int>", "<str>", "<float>", "Optional[", "RenderConfig.",
         "(0 (off))", "[default: (", "{INPUT}"]


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_reads_well(command, width):
    args = [command, "--help"] if command else ["--help"]
    result = runner.invoke(app, args, terminal_width=width, env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    text = result.output
    assert [leak for leak in LEAKS if leak in text] == []
    assert [line for line in text.splitlines() if len(line) > width] == []
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert usage.split()[-1].strip("[]").isupper() or usage.split()[-1] in ("[OPTIONS]", "[ARGS]...")


def _help(command: str) -> str:
    return " ".join(runner.invoke(app, [command, "--help"], terminal_width=200).output.split())


def test_flags_show_no_value_and_the_same_options_read_the_same_everywhere():
    helps = {command: _help(command) for command in ("render", "batch", "video")}
    for text in helps.values():
        assert "--style -s PATH" in text and "--quiet -q No progress" in text and "--config PATH TOML file" in text
        assert "--size N|WxH Long side of the output" in text
        assert "--overwrite Replace" in text and "--debug Show tracebacks" in text


def test_render_lists_auto_among_the_precisions():
    assert "--precision TEXT auto, fp32, tf32, bf16 or fp16" in _help("render")


def test_export_offers_only_the_precisions_tensorrt_builds():
    text = _help("export")
    assert "TensorRT precision: fp32, tf32 or fp16" in text
    assert "fp16 or bf16" not in text


def test_models_and_readme_give_squeezenet_the_same_share_of_vgg16():
    """RESULTS.md measured 2.65 against 226 GFLOP: 1/85 of the convolution work (not the ~1/20
    of the time per evaluation, which the Grams, TV and L-BFGS keep up)."""
    import re
    from pathlib import Path

    from styleforge.engine import MODELS

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `squeezenet1_1` |"))
    assert re.findall(r"1/(\d+)", MODELS["squeezenet1_1"].description) == re.findall(r"1/(\d+)", row) == ["85"]
