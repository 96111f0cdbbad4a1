"""README's commands are what CI runs: a user's first test run is CI's, word for word."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands(section: str) -> list[str]:
    """The command lines of the first bash block under README's ``## section``."""
    text = (ROOT / "README.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", body, re.S)
    assert block is not None, f"README's '{section}' has no bash block"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_ci_runs_exactly_the_test_command_readme_gives():
    (command,) = _readme_commands("Install the dev extras and run the tests")
    script = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert script[-1] == command, "the last line of .ci/run must be README's test command"
    assert [line for line in script[:-1] if re.search(r"\b(pip|pytest|python3?)\b", line)] == [], \
        "no install step may run before README's command"


def test_the_cpu_commands_ask_for_the_cpu_build_of_torch():
    constraints = (ROOT / "cpu-constraints.txt").read_text().splitlines()
    assert [line for line in constraints if line.startswith("torch")] == ["torch==2.13.0+cpu"]
    (render,) = _readme_commands("Install and render")
    (tests,) = _readme_commands("Install the dev extras and run the tests")
    for command in (render, tests):
        assert "-c cpu-constraints.txt" in command
    assert "-o out/" in render  # written where git ignores it, never into the repository's root
    assert "/out/" in (ROOT / ".gitignore").read_text().splitlines()


def test_the_test_command_lints_and_type_checks_before_the_tests():
    (tests,) = _readme_commands("Install the dev extras and run the tests")
    steps = [step.strip() for step in tests.split("&&")]
    assert steps[1:] == ["ruff check", "mypy", "pytest"], "lint, then types, then the tests"
