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
