"""The typer app and how engine errors reach the user: one line on stderr and an exit code."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

from styleforge.engine import (
    BackendUnavailableError,
    ConfigError,
    InputError,
    RenderConfig,
    StyleforgeError,
    WeightsError,
)

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_INTERRUPTED", "app", "fail", "run_guarded", "stderr"]

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


def fail(message: str, code: int) -> typer.Exit:
    stderr.print(Text.assemble(("error: ", "bold red"), message), highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _message(error: StyleforgeError) -> str:
    """Engine errors name config fields; a value from a flag is shown with the flag's name."""
    if isinstance(error, ConfigError) and error.field is not None and error.source is None:
        return error.describe(RenderConfig.flag(error.field))
    return str(error)


def run_guarded(debug: bool, body: Callable[[], Any]) -> Any:
    """Map engine errors to one line on stderr and an exit code (traceback with --debug)."""
    try:
        return body()
    except (InputError, WeightsError, BackendUnavailableError) as error:
        if debug:
            traceback.print_exc()
        raise fail(_message(error), EXIT_BAD_INPUT) from None
    except StyleforgeError as error:
        if debug:
            traceback.print_exc()
        raise fail(_message(error), EXIT_FAILED) from None
