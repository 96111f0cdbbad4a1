"""The hand-off between a render and the preview server: the render's thread drops events in,
the server's thread takes snapshots out, and neither waits for the other.

The render thread's share is kept to a few attribute writes per event: the latest event is kept
by reference, its total loss (a scalar tensor, no device sync) is queued for the curve, and at
most ``max_fps`` times a second, and only while a page is watching and the last picture was
taken, the image is reduced to the preview's size on its own device (a new tensor: the render
goes on changing its own in place). The server thread reads the losses back, copies the small
image to the host and encodes it as a JPEG.
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..batch import BatchJob, JobOutcome
from ..rendering import RenderEvent
from ..video import VideoEvent

__all__ = ["PreviewFeed", "PreviewSnapshot"]

#: The render thread's share of its time that pictures may take: after a picture that took t
#: seconds, the next waits at least t / _PICTURE_BUDGET (a 4K CPU render slows the picture rate,
#: never the render).
_PICTURE_BUDGET = 0.005
#: Points kept of a loss curve: past this, every other one is dropped (the curve keeps its shape).
_CURVE_POINTS = 600


@dataclass
class PreviewSnapshot:
    """What the page shows, as the server last read it. ``figures`` is JSON-ready."""

    version: int = 0
    image_version: int = 0
    jpeg: bytes | None = None
    figures: dict[str, Any] = field(default_factory=dict)


def reduce_image(image: torch.Tensor, long_side: int) -> torch.Tensor:
    """(3, H, W) -> (3, h, w) with max(h, w) <= long_side, box-filtered (area), clamped to [0, 1];
    a new tensor on the image's device. An integer average pool first (one pass over the image,
    far cheaper than adaptive pooling at an odd ratio), then area resampling of what is left."""
    height, width = image.shape[-2:]
    scale = long_side / max(height, width)
    if scale >= 1:
        return image.detach().float().clamp(0, 1)  # a copy: float() of a float32 tensor is not
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    small = image.detach()[None].float()
    factor = min(height // size[0], width // size[1])
    if factor > 1:
        small = F.avg_pool2d(small, factor)
    if tuple(small.shape[-2:]) != size:
        small = F.interpolate(small, size=size, mode="area")
    return small[0].clamp_(0, 1)


class PreviewFeed:
    """Events in (from the render's thread, never blocking on the server), snapshots out (from
    the server's thread). ``kind`` is "render", "video" or "batch"."""

    def __init__(self, kind: str = "render", *, max_fps: float = 2.0, long_side: int = 512,
                 title: str = "styleforge") -> None:
        self.kind, self.title = kind, title
        self.max_fps, self.long_side = max_fps, long_side
        self.watchers = 0  # pages following the events (set by the server's thread)
        #: CPU seconds the pictures took in the render's thread, and the server's reads and
        #: encodings in its own (what the preview costs; benchmarks/bench_preview.py reports them).
        self.picture_cpu_seconds = 0.0
        self.server_cpu_seconds = 0.0
        self._lock = threading.Lock()  # guards _pending only; held for an append or a swap
        self._pending: list[tuple[int, Any, int]] = []  # (curve key, total loss tensor, iteration)
        self._event: RenderEvent | None = None
        self._picture: torch.Tensor | None = None  # reduced image waiting for the server
        self._picture_at = 0.0
        self._interval = 1.0 / max_fps
        self._curve_key = 0  # a new job or frame starts a new curve
        self._label = ""
        self._frames: dict[str, Any] = {}
        self._jobs: dict[str, int] = {"done": 0, "skipped": 0, "failed": 0, "total": 0}
        self._job_started = time.monotonic()
        self._status = "waiting for the first iteration"
        self._changed = 0  # bumped by every event: the server compares it with what it last read
        # The server thread's own state.
        self._snapshot = PreviewSnapshot()
        self._curve: list[tuple[int, float]] = []
        self._curve_seen = -1
        self._stride, self._skipped = 1, 0
        self._latest: tuple[int, float] | None = None
        self._read_changed = -1

    # -- the render's side ------------------------------------------------------------------

    def render_event(self, event: RenderEvent) -> None:
        """A RenderEvent (the callback of ``render``)."""
        with self._lock:
            self._pending.append((self._curve_key, event.losses["total"], event.iteration))
        self._event = event
        self._status = "rendering"
        now = time.monotonic()
        if self.watchers and self._picture is None and now - self._picture_at >= self._interval:
            spent = time.thread_time()  # the thread's CPU time: a busy machine's waits are not the picture's
            self._picture = reduce_image(event.image, self.long_side)
            self._picture_at = now
            spent = time.thread_time() - spent
            self.picture_cpu_seconds += spent
            self._interval = max(1.0 / self.max_fps, spent / _PICTURE_BUDGET)
        self._changed += 1

    def video_event(self, event: VideoEvent) -> None:
        """A VideoEvent (the callback of ``render_shot``): frames done, and each frame's steps."""
        if event.status == "step" and event.step is not None:
            if self._frames.get("frame") != event.frame:
                self._curve_key += 1
            self._frames.update(frame=event.frame + 1, total=event.frames, done=event.done,
                                seconds_per_frame=event.seconds_per_frame, eta=event.eta)
            self.render_event(event.step)
            return
        self._frames.update(total=event.frames, done=event.done, seconds_per_frame=event.seconds_per_frame,
                            eta=event.eta)
        if event.status == "resumed":
            self._frames["resumed"] = self._frames.get("resumed", 0) + 1
        self._status = {"encoding": "encoding the video", "done": "rendering"}.get(event.status, self._status)
        self._changed += 1

    def job_event(self, job: BatchJob, event: RenderEvent | VideoEvent) -> None:
        """``run_batch``'s ``on_event``: a job's render (or shot) steps."""
        label = f"line {job.line}: {job.output}"
        if label != self._label:
            self._label, self._frames = label, {}
            self._curve_key += 1
        if isinstance(event, VideoEvent):
            self.video_event(event)
        else:
            self.render_event(event)

    def expect_jobs(self, total: int) -> None:
        self._jobs["total"] = total
        self._changed += 1

    def job_outcome(self, outcome: JobOutcome) -> None:
        """``run_batch``'s ``on_outcome``."""
        self._jobs[outcome.status] = self._jobs.get(outcome.status, 0) + 1
        self._changed += 1

    def finish(self, status: str = "finished") -> None:
        """The work is over ("finished", "interrupted", "failed: ..."): the page says so."""
        self._status = status
        self._changed += 1

    # -- the server's side ------------------------------------------------------------------

    def snapshot(self) -> PreviewSnapshot:
        """The figures and picture as of now: cheap when nothing changed. Server thread only."""
        changed, picture = self._changed, self._picture
        if changed == self._read_changed and picture is None:
            return self._snapshot
        started = time.thread_time()
        try:
            return self._read(changed, picture)
        finally:
            self.server_cpu_seconds += time.thread_time() - started

    def _read(self, changed: int, picture: torch.Tensor | None) -> PreviewSnapshot:
        with self._lock:
            pending, self._pending = self._pending, []
        for index, (key, loss, iteration) in enumerate(pending):
            if key != self._curve_seen:
                self._curve, self._curve_seen, self._stride, self._skipped = [], key, 1, 0
                self._latest = None
            if index == len(pending) - 1:
                self._latest = (iteration, float(loss))  # shown even when the stride passes over it
            self._skipped += 1
            if self._skipped < self._stride:
                continue  # a long curve keeps every stride-th point
            self._skipped = 0
            self._curve.append((iteration, float(loss)))
            if len(self._curve) > _CURVE_POINTS:
                self._curve, self._stride = self._curve[1::2], self._stride * 2
        snapshot = PreviewSnapshot(self._snapshot.version + 1, self._snapshot.image_version, self._snapshot.jpeg,
                                   self._figures())
        if picture is not None:
            snapshot.jpeg = _jpeg(picture)
            snapshot.image_version += 1
            self._picture = None  # the render may take the next one
        snapshot.figures["image_version"] = snapshot.image_version
        self._snapshot, self._read_changed = snapshot, changed
        return snapshot

    def _figures(self) -> dict[str, Any]:
        event = self._event
        figures: dict[str, Any] = {"kind": self.kind, "title": self.title, "status": self._status,
                                   "curve": list(self._curve), "job": self._label or None}
        if self._latest is not None and (not self._curve or self._curve[-1][0] != self._latest[0]):
            figures["curve"].append(self._latest)
        if event is not None:
            # The render's own estimate (RenderEvent.remaining: None until a level is timed, weighted
            # by the pixels left), the one the terminal shows: elapsed / progress was 13x off.
            eta = getattr(event, "remaining", None)
            figures.update(level=event.level + 1, levels=event.levels, iteration=event.iteration,
                           iterations=event.iterations, loss=self._latest[1] if self._latest is not None else None,
                           elapsed=event.elapsed, eta=eta, peak_memory=event.peak_memory,
                           size=list(event.image.shape[-2:][::-1]))
        if self._frames:
            figures["frames"] = dict(self._frames, failed=0)
            if self.kind == "video":
                figures["eta"] = self._frames.get("eta")
        if self.kind == "batch":
            jobs = dict(self._jobs)
            figures["jobs"] = jobs
            finished = jobs["done"] + jobs["skipped"] + jobs["failed"]
            elapsed = time.monotonic() - self._job_started
            figures["eta"] = elapsed / finished * (jobs["total"] - finished) if finished and jobs["total"] else None
        return figures


def _jpeg(picture: torch.Tensor) -> bytes:
    # NumPy from the host copy on: a torch op on the CPU from this thread starts a second OpenMP
    # team beside the render's, on the same cores (measured: +7% wall clock at 256 px on 2 cores).
    array = np.rint(picture.detach().to("cpu").numpy().transpose(1, 2, 0) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()
