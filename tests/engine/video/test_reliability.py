"""Issue 25 for shots: one writer per output, a resumed shot equal to an uninterrupted one,
outputs inside the input folder, encodings refused before any work, short videos, and a change
of encoding that encodes again."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from styleforge.engine import ConfigError, ImageError, RenderConfig
from styleforge.engine.video import (
    VideoConfig,
    check_encoding,
    frame_store,
    open_frames,
    render_shot,
    video_digest,
)

av = pytest.importorskip("av", reason="video needs PyAV (the video extra)")
pytest.importorskip("cv2", reason="optical flow needs OpenCV (the video extra)")

CONFIG = RenderConfig(size=32, iterations=2, model="vgg19-random", device="cpu", style_weight=100.0)
VIDEO = VideoConfig(frame_iterations=2)
FRAMES = 4


@pytest.fixture
def shot(tmp_path):
    """Four 48x32 frames panning 2 px a frame across a random texture."""
    generator = torch.Generator().manual_seed(0)
    texture = (torch.rand(32, 48 + 2 * FRAMES, 3, generator=generator) * 255).byte().numpy()
    folder = tmp_path / "shot"
    folder.mkdir()
    for t in range(FRAMES):
        Image.fromarray(np.ascontiguousarray(texture[:, 2 * t:2 * t + 48])).save(folder / f"frame{t + 1}.png")
    return folder


@pytest.fixture
def style():
    generator = torch.Generator().manual_seed(1)
    return torch.rand(3, 32, 32, generator=generator) ** 2


def _pixels(store, count=FRAMES):
    return [np.asarray(Image.open(store.path(i))) for i in range(count)]


def test_1_a_second_writer_to_the_same_output_is_refused_before_any_work(tmp_path, shot, style):
    store = frame_store(tmp_path / "out.mp4")
    steps = []
    with store.lock():  # another styleforge rendering into out.mp4
        with pytest.raises(ImageError, match=r"out.mp4: is being written by another styleforge \(process \d+\)"):
            render_shot(CONFIG, open_frames(shot), [style], store, video=VIDEO, callback=steps.append)
    assert steps == [] and not store.path(0).exists() and not (tmp_path / "out.mp4").exists()
    assert not (tmp_path / ".out.mp4.lock").exists()  # released: the next run goes ahead
    result = render_shot(CONFIG, open_frames(shot), [style], store, video=VIDEO)
    assert result.rendered == FRAMES and video_digest(tmp_path / "out.mp4") is not None


def test_2_a_shot_resumed_at_any_frame_boundary_equals_an_uninterrupted_one(tmp_path, shot, style):
    whole = frame_store(tmp_path / "whole" / "%03d.png")
    render_shot(CONFIG, open_frames(shot), [style], whole, video=VIDEO)
    expected = _pixels(whole)
    for boundary in range(1, FRAMES):
        store = frame_store(tmp_path / f"cut{boundary}" / "%03d.png")

        def interrupt(event, boundary=boundary):
            if event.status == "done" and event.done == boundary:
                raise KeyboardInterrupt  # Ctrl-C (or a kill) right after frame `boundary` was written

        with pytest.raises(KeyboardInterrupt):
            render_shot(CONFIG, open_frames(shot), [style], store, video=VIDEO, callback=interrupt)
        result = render_shot(CONFIG, open_frames(shot), [style], store, video=VIDEO)
        assert (result.resumed, result.rendered) == (boundary, FRAMES - boundary)
        for index, (got, want) in enumerate(zip(_pixels(store), expected)):
            assert np.array_equal(got, want), f"cut after frame {boundary}: frame {index + 1} differs"
            assert store.digest(index) == whole.digest(index)


def test_3_output_frames_inside_the_input_folder_are_not_read_as_input(shot, style):
    store = frame_store(shot / "out%03d.png")
    first = render_shot(CONFIG, open_frames(shot, exclude=store.owns), [style], store, video=VIDEO)
    assert first.rendered == FRAMES
    assert store.owns(shot / "out001.png") and not store.owns(shot / "frame1.png")
    (shot / "sub").mkdir()
    (shot / "sub" / "out001.png").write_bytes((shot / "out001.png").read_bytes())
    assert not store.owns(shot / "sub" / "out001.png")
    (shot / "out1234.png").write_bytes((shot / "frame1.png").read_bytes())  # a user's, matching the pattern
    assert not store.owns(shot / "out1234.png")
    (shot / "out1234.png").unlink()
    source = open_frames(shot, exclude=store.owns)
    assert source.count == FRAMES and all(path.name.startswith("frame") for path in source.files)
    again = render_shot(CONFIG, source, [style], store, video=VIDEO)
    assert (again.rendered, again.resumed) == (0, FRAMES)


@pytest.mark.parametrize(("output", "video", "match"), [
    ("out.mp4", VideoConfig(codec="ffv1"), "ffv1 does not go in a .mp4 file"),
    ("out.mp4", VideoConfig(crf=60), "crf: libx264's scale is 0 to 51, got 60"),
    ("out.webm", VideoConfig(crf=60, frame_iterations=2), None),  # VP9's scale ends at 63
])
def test_4_an_encoding_the_output_cannot_take_is_refused_before_any_work(tmp_path, shot, style, output, video,
                                                                         match):
    store = frame_store(tmp_path / output)
    if match is None:
        assert check_encoding(store.video, video.codec, video.crf, video.fps) == "libvpx-vp9"
        return
    steps = []
    with pytest.raises(ConfigError, match=match):
        render_shot(CONFIG, open_frames(shot), [style], store, video=video, callback=steps.append)
    assert steps == [] and not store.path(0).exists()


def test_4_a_frame_rate_the_container_cannot_store_is_refused():
    with pytest.raises(ConfigError, match="fps: 0.0001 frames per second cannot be stored"):
        VideoConfig(fps=0.0001)
    with pytest.raises(ConfigError, match=r"crf: must be in \[0, 51\] for libx264, got 60"):
        VideoConfig(codec="libx264", crf=60)
    assert VideoConfig(fps=29.97).fps == 29.97


def _write_mkv(path, count=6):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=12)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "bgr0"
        generator = np.random.default_rng(0)
        for _ in range(count):
            array = generator.integers(0, 255, (32, 48, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())


def test_7_a_video_cut_short_is_refused_saying_how_many_frames_of_how_many(tmp_path):
    whole = tmp_path / "whole.mkv"
    _write_mkv(whole)
    assert open_frames(whole).count == 6
    cut = tmp_path / "cut.mkv"
    data = whole.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(ImageError, match=r"cut.mkv: decoded (\d) of the 6 frames its header announces"):
        open_frames(cut)
    short = open_frames(cut, allow_short=True)
    assert 0 < short.count < 6 and short.announced == 6


def test_8_a_finished_video_rerun_with_another_frame_rate_is_encoded_again(tmp_path, shot, style):
    output = tmp_path / "out.mp4"
    store = frame_store(output)
    render_shot(CONFIG, open_frames(shot), [style], store, video=VideoConfig(frame_iterations=2, fps=12))
    again = render_shot(CONFIG, open_frames(shot), [style], store, video=VideoConfig(frame_iterations=2, fps=6))
    assert (again.rendered, again.resumed) == (0, FRAMES)  # the frames are reused
    with av.open(str(output)) as container:
        assert container.streams.video[0].average_rate == 6
    before = output.stat().st_mtime_ns
    render_shot(CONFIG, open_frames(shot), [style], store, video=VideoConfig(frame_iterations=2, fps=6))
    assert output.stat().st_mtime_ns == before  # nothing changed: not encoded again
