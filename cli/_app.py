"""The typer app and how errors reach the user: one line on stderr and an exit code.

Engine errors, typer's own parse errors (``--seed abc``, an unknown option) and anything
unexpected all end as ``error: ...`` on one line (``--debug`` adds the traceback of an engine
error); status lines are printed whole, never wrapped, whatever the terminal's width.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption


def _interrupted_while_starting(signum: int, frame: object) -> None:
    """Ctrl-C while the command line and the engine load (torch takes a second or more): nothing
    has started and nothing is open, so exit as an interrupt does (130), without the import's
    traceback. At once (os._exit), not by raising: an exception raised inside a C extension's
    import (numpy's) can be caught on the way and the import retried, which fails differently
    and carries on."""
    os.write(2, b"interrupted before any work\n")
    os._exit(130)


#: Set before anything heavy is imported, and kept until a command's work starts (run_guarded):
#: the engine loads torch on first use, so that is where the slow imports happen now.
_MAIN_THREAD = threading.current_thread() is threading.main_thread()  # only it may set handlers
_PREVIOUS_SIGINT = signal.signal(signal.SIGINT, _interrupted_while_starting) if _MAIN_THREAD else None

# After the handler above, on purpose (hence noqa E402): the engine's names load while it is set.
from styleforge import engine  # noqa: E402
from styleforge.engine import (  # noqa: E402
    BackendUnavailableError,
    ConfigError,
    ImageError,
    InputError,
    RenderConfig,
    RenderError,
    StyleforgeError,
    StyleforgeWarning,
    WeightsError,
)

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_INTERRUPTED", "HelpCommand", "app", "check_json_output", "fail",
           "one_line", "run_guarded", "say", "stderr"]

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

stderr = Console(stderr=True)
#: click's exception base, wherever this typer keeps click (recent ones vendor it).
_CLICK_EXCEPTION: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class _ClickError(Protocol):
    """What is read of a ClickException (its class is found at run time, above)."""

    exit_code: int

    def format_message(self) -> str: ...


def one_line(text: object) -> str:
    """``text`` on one line: a message that spans lines would read as several."""
    return " ".join(str(text).split("\n")).strip()


def say(message: str) -> None:
    """A status line on stderr (``wrote PATH``, ``report: PATH``), printed verbatim and whole."""
    stderr.print(message, highlight=False, markup=False, soft_wrap=True)


def fail(message: str, code: int) -> typer.Exit:
    stderr.print(Text.assemble(("error: ", "bold red"), one_line(message)), highlight=False, soft_wrap=True)
    return typer.Exit(code)


class _OneLineErrors(TyperGroup):
    """The app's group: click's usage errors (a value typer cannot parse, an unknown option, a
    missing value) as one ``error:`` line and exit 2, instead of a boxed usage screen."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, windows_expand_args: bool = True,
             **extra: Any) -> Any:
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False,
                                  windows_expand_args=windows_expand_args, **extra)
            code = result if isinstance(result, int) else 0
        except _CLICK_EXCEPTION as caught:
            error = cast(_ClickError, caught)  # what _CLICK_EXCEPTION is, read through the protocol
            context = getattr(error, "ctx", None)
            if type(error).__name__ == "NoArgsIsHelpError":  # no arguments: typer has shown the help
                return self._exit(error.exit_code, standalone_mode)
            hint = f" (see '{context.command_path} --help')" if context is not None else ""
            fail(f"{error.format_message()}{hint}", error.exit_code)
            code = error.exit_code
        except typer.Abort as error:
            if isinstance(error.__cause__, KeyboardInterrupt):  # click's word for a Ctrl-C before the work's own
                say("interrupted before any work")
                code = EXIT_INTERRUPTED
            else:
                fail("aborted", EXIT_FAILED)
                code = EXIT_FAILED
        return self._exit(code, standalone_mode)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None:
            _tidy(option)  # a flag, shown as the commands show theirs
        return option

    @staticmethod
    def _exit(code: int, standalone_mode: bool) -> int:
        if not standalone_mode:
            return code
        sys.exit(code)


#: Value names by the Python type an option parses (a list's by its items), where the option sets
#: none: what users read in help, never the type itself (``<list[Path]>``, ``<int>``).
_METAVARS = {"int": "N", "float": "FLOAT", "Path": "PATH", "str": "TEXT"}
#: Defaults that mean "not given": help shows no default for these (flags are off unless given).
_NO_DEFAULT = {"none", "off", "false", ""}


def _paragraphs(text: str) -> str:
    """A docstring's paragraphs with their source line breaks removed: the terminal wraps them."""
    return "\n\n".join(" ".join(block.split()) for block in inspect.cleandoc(text).split("\n\n"))


class HelpCommand(TyperCommand):
    """Every command's help in one style: value names users know (PATH, N, FLOAT, WxH), none for
    flags, UPPERCASE arguments in the usage line as click writes them (``[CONTENT]`` optional,
    ``INPUT`` required), paragraphs wrapped to the terminal, and defaults as ``[default: 512]``
    inside the help text, where they wrap instead of being cut."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.help:
            self.help = _paragraphs(self.help)
        for param in self.params:
            _tidy(param)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None:
            _tidy(option)
        return option

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.params:
            if isinstance(param, TyperArgument):
                name = param.metavar or param.name.upper()
                pieces.append(name if param.required else f"[{name}]")
        return pieces


def _metavar(param: Any) -> str:
    described = param.type_descriptor
    if described.is_path:
        return "PATH"
    bare = param.bare_type()
    return _METAVARS.get(bare.removeprefix("list[").removesuffix("]"), "TEXT")


def _tidy(param: Any) -> None:
    if getattr(param, "_tidied", False):
        return
    param._tidied = True
    if isinstance(param, TyperArgument):
        param.metavar = param.metavar or param.name.upper()
        # Its name already says what it is (CONTENT). Set on this instance: typer makes the arguments.
        setattr(param, "display_type_rich", lambda ctx: None)
    elif isinstance(param, TyperOption):
        if param.is_flag:
            param.metavar = ""
        elif param.metavar is None:
            param.metavar = _metavar(param)
    show = param.show_default
    if isinstance(show, str):
        param.declared_default = show  # what the command declared, for tests and tools to read
        param.show_default = False
        if show.strip().lower() not in _NO_DEFAULT:
            param.help = f"{param.help or ''} {escape(f'[default: {show}]')}".strip()


app = typer.Typer(
    name="styleforge",
    help="Neural style transfer renderer.",
    cls=_OneLineErrors,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _message(error: StyleforgeError) -> str:
    """Engine errors name config fields; a value from a flag is shown with the flag's name."""
    if isinstance(error, (ConfigError, RenderError)) and error.field is not None \
            and getattr(error, "source", None) is None:
        return error.describe(RenderConfig.flag(error.field))
    return str(error)


def _start_work() -> None:
    if not _MAIN_THREAD or signal.getsignal(signal.SIGINT) is not _interrupted_while_starting:
        return
    engine.rendering, engine.batch  # noqa: B018  (loads torch and the layers every command runs on)
    signal.signal(signal.SIGINT, _PREVIOUS_SIGINT if _PREVIOUS_SIGINT is not None else signal.default_int_handler)


def run_guarded(debug: bool, body: Callable[[], Any]) -> Any:
    """Map errors to one line on stderr and an exit code (traceback with --debug): bad input 2,
    a failed render or write 1; anything unexpected 1 too, saying it is a bug. The engine's
    warnings (StyleforgeWarning: a map's colours snapped, say) are one ``warning:`` line each.

    The engine's torch-backed layers load first, still under the start-up Ctrl-C handler; from
    then on Ctrl-C is KeyboardInterrupt again (a render writes its image and exits 130)."""
    _start_work()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", StyleforgeWarning)
            shown = warnings.showwarning

            def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
                if issubclass(category, StyleforgeWarning):
                    say(f"warning: {one_line(message)}")
                else:
                    shown(message, category, *args, **kwargs)

            warnings.showwarning = show
            return body()
    except (InputError, WeightsError, BackendUnavailableError) as error:
        if debug:
            traceback.print_exc()
        raise fail(_message(error), EXIT_BAD_INPUT) from None
    except StyleforgeError as error:
        if debug:
            traceback.print_exc()
        raise fail(_message(error), EXIT_FAILED) from None
    except OSError as error:  # the machine's, not the input's: a disk, a device, a permission
        if debug:
            traceback.print_exc()
        where = f"{error.filename}: " if error.filename else ""
        raise fail(f"{where}{error.strerror or error}", EXIT_FAILED) from None
    except (typer.Exit, typer.Abort, _CLICK_EXCEPTION, KeyboardInterrupt):
        raise
    except Exception as error:
        if debug:
            traceback.print_exc()
        raise fail(f"{type(error).__name__}: {error} (a bug in styleforge; --debug shows where)",
                   EXIT_FAILED) from None


def check_json_output(path: Path, key: str, field: str) -> None:
    """Before the work that produces it: a JSON output's folder must take a file, and it may
    replace only an earlier output of its kind (a JSON object with ``key``), never a user's file."""
    try:
        engine.check_output_path(path, image=False, overwrite=True)
    except ImageError as error:
        raise ConfigError(str(error), field=field) from None
    if path.exists():
        try:
            earlier = json.loads(path.read_bytes()) if path.stat().st_size < 2**28 else None
        except (OSError, ValueError, RecursionError):
            earlier = None
        if not (isinstance(earlier, dict) and key in earlier):
            raise ConfigError(f"{path} exists and is not a report of this command; choose another", field=field)
