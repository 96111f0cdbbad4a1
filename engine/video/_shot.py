"""One shot, frame after frame, with Ruder et al.'s temporal consistency (GCPR 2016).

The first frame renders as ``render`` does (the whole pyramid). Each later frame starts from the
previous output warped into it by the flow (this frame -> the previous one), renders one level
at the output size with ``frame_iterations``, and adds the temporal term: the squared difference
to that warped output where the forward-backward check trusts it. The backend and the style
targets are built once per shot; only the content targets are per frame.

An EXR frame is a plate, as ``render``'s content is: read in the input colour space and shown
to the network through the view (the flow and the temporal term see those display values too),
and written back into the output colour space with its own residual and alpha (``_plate``).

Departures from the paper: one pass (no multi-pass), the short-term term only (the objective's
TemporalTerm takes several references, for the long-term one); later frames run fewer
iterations, since they start close to their optimum (see benchmarks/bench_video.py).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._backbone import VGGFeatures
from .._colorspace import color_pipeline
from .._config import RenderConfig
from .._device import resolve_device
from .._errors import ImageError, RenderInterrupted, StyleforgeError
from .._files import remove_stale_temporaries
from .._image import check_output_path, resize_to
from .._video_config import VideoConfig
from ..backends import Backend, backend_for, resolve_precision
from ..objectives import TemporalTerm
from ..rendering import RenderEvent, TargetCache, crop_to_frame, plan_for, render
from ._encode import check_encoding, encode_video, encoding_mark, video_digest
from ._flow import consistency_mask, optical_flow, warp
from ._frames import FrameSource
from ._store import FrameStore, chain_digests

__all__ = ["ShotInterrupted", "ShotResult", "VideoEvent", "check_shot", "render_shot", "shot_digests"]

#: Frame rate of a video made from image files, unless --fps says otherwise.
DEFAULT_FPS = 24.0


@dataclass(frozen=True)
class VideoEvent:
    """Progress of a shot. ``status``: "step" (an evaluation inside ``frame``: ``step`` holds
    its RenderEvent), "done" (``frame`` rendered in ``seconds``), "resumed" (``frame`` was
    finished by an earlier run), "encoding" (all frames done, the video is being written).
    ``seconds_per_frame`` and ``eta`` (seconds) come from the frames this run rendered after the
    first (the first runs the whole pyramid); None until there is one."""

    status: str
    frame: int  # counted from 0
    frames: int
    done: int  # frames finished, resumed ones included
    seconds: float = 0.0
    seconds_per_frame: float | None = None
    eta: float | None = None
    step: RenderEvent | None = None


@dataclass(frozen=True)
class ShotResult:
    frames: int
    rendered: int  # by this run
    resumed: int  # finished by an earlier run
    seconds: float
    seconds_per_frame: float | None  # mean over the frames after the first that this run rendered
    output: Path  # the video, or the first frame's file
    device: str


class ShotInterrupted(RenderInterrupted):
    """Ctrl-C during a shot: ``frame`` (from 0) was being rendered; the frames before it are on
    disk. A RenderInterrupted, so a batch stops on it as on an image job's; ``image`` is None."""

    def __init__(self, frame: int, frames: int) -> None:
        StyleforgeError.__init__(self, f"interrupted at frame {frame + 1} of {frames}; the frames before it are "
                                       "kept: run again to resume")
        self.image, self.iteration = None, 0
        self.frame, self.frames = frame, frames


def _tensor_digest(image: torch.Tensor) -> str:
    return hashlib.sha256(image.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()).hexdigest()


def shot_digests(config: RenderConfig, video: VideoConfig, source: FrameSource,
                 styles: Sequence[torch.Tensor]) -> list[str]:
    """Each frame's hash: the options (the colour options among them, when given), the styles'
    pixels, its input and the frames before it."""
    spec = {"config": config.hashed(), "video": video.pixel_options(), "styles": [_tensor_digest(s) for s in styles]}
    return chain_digests(spec, source.digests)


def check_shot(source: FrameSource, store: FrameStore, digests: Sequence[str], *, overwrite: bool = False,
               inputs: Mapping[str, str | Path] | None = None, video: VideoConfig | None = None) -> int:
    """Before any work: refuse an encoding the output cannot take (codec, container, crf, fps of
    ``video``), a frame file or video that is not this shot's (unless ``overwrite``) or that is
    an input, and return the first unfinished frame (``count`` when every frame is finished)."""
    video = video or VideoConfig()
    roles = {"input": source.path, **(inputs or {})}
    if source.files is not None:
        roles |= {f"input frame {i}": path for i, path in enumerate(source.files, start=1)}
    if store.video is not None:
        check_encoding(store.video, video.codec, video.crf, video.fps)
        held = video_digest(store.video)
        # A rerun of this shot: its video may be replaced (encoded again when an encoding option changed).
        ours = held is not None and held.split()[0] == digests[-1]
        check_output_path(store.video, image=False, overwrite=overwrite or ours, inputs=roles, make_folders=True)
    first = None
    for index, digest in enumerate(digests):
        path = store.path(index)
        check_output_path(path, overwrite=True, inputs=roles, probe=index == 0, make_folders=True)
        held = store.digest(index)
        if path.exists() and held != digest and not overwrite:
            raise ImageError(path, "exists and is not this shot's frame (other parameters or input); "
                                   "pass --overwrite to replace it")
        if first is None and held != digest:
            first = index
    return len(digests) if first is None else first


def render_shot(config: RenderConfig, source: FrameSource, styles: Sequence[torch.Tensor], store: FrameStore, *,
                video: VideoConfig | None = None, overwrite: bool = False, metadata: Mapping[str, Any] | None = None,
                callback: Callable[[VideoEvent], None] | None = None,
                backbone: VGGFeatures | None = None, backend: Backend | None = None,
                target_cache: TargetCache | None = None, inputs: Mapping[str, str | Path] | None = None) -> ShotResult:
    """Render every frame of ``source`` in the style of ``styles`` into ``store`` (resuming at the
    first unfinished frame), then encode ``store.video`` if it has one.

    The output is locked for the whole shot: a second writer to it is refused before any work
    (ImageError), as its frames would mix with this one's. Raises ImageError / ConfigError before
    any work for outputs it may not write (see ``check_shot``), RenderError when a frame's render
    fails, ShotInterrupted on Ctrl-C.

    The colour options (``config.color_management``) work as for ``render``: EXR frames are read
    in ``input_colorspace`` through ``view`` and written into ``output_colorspace`` (default: the
    input's) with each frame's residual and alpha; other frames written as EXR are the inverse
    view of the render; the names are checked (ConfigError) before any work where a frame or the
    output is an EXR."""
    video = video or VideoConfig()
    store = store.numbered(source.numbers)  # plate.1001.exr renders to out.1001.exr
    colors = config.color_management
    if source.has_plates or Path(store.pattern).suffix.lower() == ".exr":
        color_pipeline(colors.input_colorspace, colors.view, output=colors.output_colorspace)  # names checked
    started = time.perf_counter()
    # The frames' hashes and metadata name the precision that runs (never auto): a machine that
    # resolves auto otherwise does not take this one's frames for its own.
    config = resolve_precision(config, resolve_device(config.runtime.device))
    digests = shot_digests(config, video, source, styles)
    check_shot(source, store, digests, overwrite=overwrite, inputs=inputs, video=video)  # refused: nothing written
    with store.lock():
        # Again under the lock: a writer that held it a moment ago may have finished frames.
        first = check_shot(source, store, digests, overwrite=overwrite, inputs=inputs, video=video)
        return _render_frames(config, source, styles, store, video, digests, first, started, overwrite=overwrite,
                              metadata=metadata, callback=callback, backbone=backbone, backend=backend,
                              target_cache=target_cache)


def _render_frames(config: RenderConfig, source: FrameSource, styles: Sequence[torch.Tensor], store: FrameStore,
                   video: VideoConfig, digests: Sequence[str], first: int, started: float, *, overwrite: bool,
                   metadata: Mapping[str, Any] | None, callback: Callable[[VideoEvent], None] | None,
                   backbone: VGGFeatures | None, backend: Backend | None,
                   target_cache: TargetCache | None) -> ShotResult:
    """render_shot's work, under its lock: the frames from ``first`` on, then the video."""
    device = resolve_device(config.runtime.device)
    reference = torch.empty((3, source.height, source.width))
    plan = plan_for(config, crop_to_frame(reference, config), device)
    shape = plan.shapes[-1]
    if backend is None and first < source.count:
        backend = backend_for(config, device, plan.shapes, backbone=backbone)
    cache = target_cache if target_cache is not None else TargetCache()
    later = config.replace({"levels": 1, "iterations": video.frame_iterations or config.pyramid.level_iterations()[-1]})
    info = {**(metadata or {}), "config": config.to_dict(), "video": video.pixel_options()}
    colors = config.color_management
    # What a frame is written in, and read back in for the next frame: render's choice for its output.
    written_as = {"colorspace": colors.output_colorspace or colors.input_colorspace, "view": colors.view}

    times: list[float] = []  # frames after the first (one level each)
    first_time: list[float] = []  # the first frame (the whole pyramid)
    previous_input = previous_output = None

    def emit(status: str, index: int, done: int, seconds: float = 0.0, step: RenderEvent | None = None) -> None:
        if callback is None:
            return
        measured = times or first_time
        per_frame = sum(measured) / len(measured) if measured else None
        eta = per_frame * (source.count - done) if per_frame is not None else None
        callback(VideoEvent(status, index, source.count, done, seconds, per_frame, eta, step))

    plates = source.plates(colorspace=colors.input_colorspace, view=colors.view, size=config.pyramid.size)
    for index, (frame, plate) in enumerate(plates):
        current = resize_to(crop_to_frame(frame, config), *shape)
        if index < first:
            if index == first - 1:
                previous_output = resize_to(store.read(index, **written_as), *shape)
            previous_input = current
            emit("resumed", index, index + 1)
            continue
        clock = time.perf_counter()

        def step(event: RenderEvent, index: int = index) -> None:
            emit("step", index, index, step=event)

        remove_stale_temporaries(store.path(index))
        try:
            if previous_output is None or not video.temporal:
                result = render(config, frame, styles, callback=step, backend=backend, target_cache=cache)
            else:
                assert previous_input is not None
                warped, mask = _warped_previous(previous_input, current, previous_output, video.flow_preset)
                result = render(later, frame, styles, init_image=warped, callback=step, backend=backend,
                                target_cache=cache, extra_terms=_temporal_terms(warped, mask, video.temporal_weight))
        except (KeyboardInterrupt, RenderInterrupted):
            raise ShotInterrupted(index, source.count) from None
        described = {"color": plate.pipeline.describe()} if plate is not None else {}  # as render records it
        store.write(index, result.image, digests[index], {**info, **described}, plate=plate, **written_as)
        seconds = time.perf_counter() - clock
        (times if index > 0 else first_time).append(seconds)
        # The next frame starts from this one as written (8 bits, a JPEG's pixels, an EXR's half
        # floats and residual), never as held: a resumed shot reads it back from the file, and
        # must render the same frames.
        previous_input, previous_output = current, resize_to(store.read(index, **written_as), *shape)
        emit("done", index, index + 1, seconds)

    rendered = max(0, source.count - first)
    if store.video is not None:
        fps = video.fps or source.fps or DEFAULT_FPS
        codec = check_encoding(store.video, video.codec, video.crf, fps)
        mark = encoding_mark(digests[-1], codec=codec, crf=video.crf, fps=fps)
        audio = source.path if source.is_video and source.has_audio else None
        held = video_digest(store.video)
        if held != mark:
            emit("encoding", source.count - 1, source.count)
            # check_shot let an existing video through only with overwrite, or when it was this shot's.
            encode_video([store.path(i) for i in range(source.count)], store.video, fps=fps, codec=codec,
                         crf=video.crf, audio_from=audio, overwrite=overwrite or held is not None, comment=mark)
    return ShotResult(source.count, rendered, source.count - rendered, time.perf_counter() - started,
                      sum(times) / len(times) if times else None,
                      store.video if store.video is not None else store.path(0), str(device))


def _warped_previous(previous_input: torch.Tensor, current: torch.Tensor, previous_output: torch.Tensor,
                     preset: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The previous output brought into this frame (3, H, W), and where to trust it (1, 1, H, W)."""
    backward = optical_flow(current, previous_input, preset=preset)
    forward = optical_flow(previous_input, current, preset=preset)
    warped = warp(previous_output.float(), backward).clamp(0.0, 1.0)
    return warped, consistency_mask(forward, backward)


def _temporal_terms(warped: torch.Tensor, mask: torch.Tensor,
                    weight: float) -> Callable[[tuple[int, int], torch.device], list[tuple[TemporalTerm, float]]]:
    """The render's extra terms: the temporal term at each level's size and device."""

    def build(shape: tuple[int, int], device: torch.device) -> list[tuple[TemporalTerm, float]]:
        reference = resize_to(warped[None], *shape).to(device)
        weights = torch.nn.functional.interpolate(mask, size=shape, mode="nearest").to(device)
        return [(TemporalTerm([(reference, weights)]), weight)]

    return build
