"""Render options as typer parameters, generated from RenderConfig's fields: one source for the
names, types, help texts and defaults that ``render``, ``batch`` (and every later command taking
render options) show."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer

from styleforge.engine import RenderConfig

__all__ = ["RENDER_OPTIONS", "with_render_options"]

#: Help panels, one per config group.
_PANELS = {"objective": "Loss", "mrf": "MRF and semantic maps", "pyramid": "Size and schedule",
           "optimization": "Optimiser", "runtime": "Network and device", "memory": "Memory and tiling",
           "color_management": "Colour management (EXR)"}

RENDER_OPTIONS = RenderConfig.FIELDS
#: Value names that say more than the type: sizes in the one size grammar, amounts of memory.
_METAVARS = {"size": "N|WxH", "max_memory": "BYTES"}


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value)  # with spaces: a long list wraps in help, never cut
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _cli_type(annotation: Any) -> type:
    """What typer parses the flag as: lists, sizes and schedules as text the engine reads."""
    if annotation is bool:
        return bool
    if annotation in (int, float):
        return annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(args) == 1 and args[0] in (int, float):
        return args[0]
    return str


def _parameter(name: str) -> inspect.Parameter:
    spec = RenderConfig.field_help(name)
    default, mrf = spec["default"], spec["mrf_default"]
    show = spec.get("show") or (_shown(default) if default == mrf
                                else f"{_shown(default)} for gram, {_shown(mrf)} for mrf")
    declarations = spec.get("flags") or (RenderConfig.flag(name), *((spec["short"],) if "short" in spec else ()))
    option = typer.Option(*declarations, help=spec["help"], show_default=show, metavar=_METAVARS.get(name),
                          rich_help_panel=_PANELS[spec["group"]])
    annotation: object = Annotated[_cli_type(spec["type"]) | None, option]  # built at run time, for typer
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)


def with_render_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a typer command every render option as a flag. The command takes a keyword
    ``render_options``: the options given on the command line, by field name."""
    signature = inspect.signature(command, eval_str=True)  # real types: typer reads them from here
    own = [p for p in signature.parameters.values() if p.name != "render_options"]
    clash = {p.name for p in own} & set(RENDER_OPTIONS)
    if clash:
        raise TypeError(f"{command.__name__}: parameters {sorted(clash)} clash with render options")

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        given = {name: kwargs.pop(name) for name in RENDER_OPTIONS if kwargs.get(name) is not None}
        for name in RENDER_OPTIONS:
            kwargs.pop(name, None)
        return command(render_options=given, **kwargs)

    parameters = own + [_parameter(name) for name in RENDER_OPTIONS]
    # inspect honours __signature__ on any callable; typeshed declares it on no function type.
    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    del wrapper.__wrapped__  # typer must read the signature above, not the command's
    return wrapper
