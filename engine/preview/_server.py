"""The preview's web server: Starlette routes served by uvicorn in a thread of its own.

Three read-only routes and nothing else: ``/`` (the page, with the figures as of the request),
``/events`` (server-sent events: the figures whenever they change, at most ``max_fps`` a second)
and ``/preview.jpg`` (the latest picture, from memory). Every other path is a 404 and every
other method a 405: nothing is read from disk and nothing a request sends reaches the render.
Bound to 127.0.0.1 unless told otherwise; on a loopback address only loopback Host headers are
answered (a page elsewhere cannot read it through DNS rebinding).
"""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

from .._errors import ConfigError, InputError
from ..video import MissingExtraError
from ._feed import PreviewFeed
from ._page import finite, page

__all__ = ["PreviewServer", "check_preview", "open_preview", "parse_preview_address"]

DEFAULT_HOST = "127.0.0.1"
_MODULES = ("starlette", "uvicorn")
#: Seconds between comments on an idle event stream (keeps proxies and the browser's reconnect quiet).
_KEEPALIVE = 15.0


def parse_preview_address(text: str | int) -> tuple[str, int]:
    """``[HOST:]PORT`` -> (host, port); HOST defaults to 127.0.0.1, an IPv6 host goes in brackets
    (``[::1]:8080``); port 0 takes a free one."""
    value = str(text).strip()
    host, sep, port = value.rpartition(":")
    if not sep:
        host = DEFAULT_HOST
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"an IPv6 host goes in brackets, as [::1]:8080; got {value!r}", field="preview")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"expected [HOST:]PORT with PORT 0 to 65535, got {value!r}", field="preview")
    if not host:
        raise ConfigError(f"expected [HOST:]PORT, got {value!r}", field="preview")
    return host, int(port)


def _require() -> tuple[ModuleType, ...]:
    try:
        return tuple(importlib.import_module(name) for name in _MODULES)
    except ImportError as error:
        raise MissingExtraError(f"--preview needs starlette and uvicorn, which are not installed ({error}); "
                                "pip install 'styleforge[preview]'") from None


def check_preview(address: str | int) -> tuple[str, int]:
    """Before any work: the address parses and the ``preview`` extra is installed."""
    parsed = parse_preview_address(address)
    _require()
    return parsed


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(16)
    except OSError as error:
        raise InputError(f"--preview {host}:{port}: {error.strerror or error}") from None
    return sock


class PreviewServer:
    """A running preview: ``url``, its ``feed`` (pass its methods as the render's callbacks), and
    ``close()`` (or use it as a context manager)."""

    def __init__(self, feed: PreviewFeed, host: str, port: int) -> None:
        _, uvicorn = _require()
        self.feed = feed
        self._closing = False
        self._sock = _bind(host, port)
        bound_host, bound_port = self._sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.url = f"http://{shown}:{bound_port}/"
        app = self._app(hosts=[bound_host, shown, "localhost", "127.0.0.1", "[::1]"]
                        if _loopback(bound_host) else ["*"])
        config = uvicorn.Config(app, log_config=None, log_level="error", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=2, ws="none")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="styleforge-preview", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            self.close()
            raise InputError(f"--preview: the server did not start on {self.url}")

    def _app(self, hosts: list[str]) -> Any:
        applications = importlib.import_module("starlette.applications")
        responses = importlib.import_module("starlette.responses")
        routing = importlib.import_module("starlette.routing")
        middleware = importlib.import_module("starlette.middleware")
        trusted = importlib.import_module("starlette.middleware.trustedhost")
        headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
        feed = self.feed

        async def index(request: Any) -> Any:
            return responses.HTMLResponse(page(feed.snapshot().figures), headers=headers)

        async def picture(request: Any) -> Any:
            jpeg = feed.snapshot().jpeg
            if jpeg is None:
                return responses.Response("no picture yet", status_code=404, headers=headers)
            return responses.Response(jpeg, media_type="image/jpeg", headers=headers)

        async def events(request: Any) -> Any:
            return responses.StreamingResponse(self._stream(), media_type="text/event-stream", headers=headers)

        routes = [routing.Route("/", index, methods=["GET"]), routing.Route("/events", events, methods=["GET"]),
                  routing.Route("/preview.jpg", picture, methods=["GET"])]
        return applications.Starlette(routes=routes, middleware=[
            middleware.Middleware(trusted.TrustedHostMiddleware, allowed_hosts=hosts)])

    async def _stream(self) -> AsyncIterator[str]:
        """The figures as JSON whenever they change; the feed takes pictures while someone watches."""
        self.feed.watchers += 1
        try:
            seen, quiet_since = -1, time.monotonic()
            while not self._closing:
                snapshot = self.feed.snapshot()
                if snapshot.version != seen:
                    seen, quiet_since = snapshot.version, time.monotonic()
                    yield f"data: {json.dumps(finite(snapshot.figures))}\n\n"
                elif time.monotonic() - quiet_since > _KEEPALIVE:
                    quiet_since = time.monotonic()
                    yield ": still here\n\n"
                await asyncio.sleep(1.0 / self.feed.max_fps)
            yield "event: closed\ndata: {}\n\n"
        finally:
            self.feed.watchers -= 1

    def cpu_seconds(self) -> float | None:
        """CPU seconds the server's thread has used (HTTP, event streams, JPEG encoding), where the
        system can tell (Linux); None elsewhere."""
        if self._thread.ident is None or not hasattr(time, "pthread_getcpuclockid"):
            return None
        try:
            return time.clock_gettime(time.pthread_getcpuclockid(self._thread.ident))
        except OSError:  # the thread has ended
            return None

    def close(self) -> None:
        """Stop serving (open pages are told, then disconnected); waits a few seconds at most."""
        self._closing = True
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._sock.close()

    def __enter__(self) -> PreviewServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_preview(address: str | int = f"{DEFAULT_HOST}:0", *, kind: str = "render", title: str = "styleforge",
                 max_fps: float = 2.0, long_side: int = 512) -> PreviewServer:
    """Serve a live preview page at ``[HOST:]PORT`` (127.0.0.1 unless a host is given; port 0
    picks a free one, see ``.url``). Feed it through ``server.feed``: ``render_event`` as a
    render's callback, ``video_event`` for a shot, ``job_event`` / ``job_outcome`` for a batch.
    The picture is at most ``long_side`` pixels and taken at most ``max_fps`` times a second,
    only while a page is open."""
    if max_fps <= 0 or long_side < 1:
        raise ConfigError(f"needs max_fps > 0 and long_side >= 1, got {max_fps} and {long_side}", field="preview")
    host, port = check_preview(address)
    return PreviewServer(PreviewFeed(kind, max_fps=max_fps, long_side=long_side, title=title), host, port)
