"""`styleforge video` end to end on tiny shots with random weights: a video in, a video out with
its audio, frame patterns, resume, and bad input as one line with exit 2 and nothing written."""

from __future__ import annotations

import math
import sys
from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from styleforge.cli import app
from styleforge.engine import read_metadata

av = pytest.importorskip("av", reason="video needs PyAV (the video extra)")
pytest.importorskip("cv2", reason="video needs OpenCV (the video extra)")

runner = CliRunner()
FAST = ["--model", "vgg19-random", "--device", "cpu", "--size", "32", "-n", "2", "--frame-iterations", "1"]


def _frames(count: int, width: int = 48, height: int = 32) -> list[np.ndarray]:
    generator = torch.Generator().manual_seed(0)
    texture = (torch.rand(height, width + 2 * count, 3, generator=generator) * 255).byte().numpy()
    return [np.ascontiguousarray(texture[:, 2 * t:2 * t + width]) for t in range(count)]


def _write_video(path, frames, *, audio: bool) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        sound = container.add_stream("aac", rate=44100) if audio else None
        for array in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())
        if sound is not None:
            seconds = len(frames) / 12
            samples = np.sin(2 * math.pi * 440 * np.arange(int(44100 * seconds)) / 44100).astype(np.float32)
            for start in range(0, len(samples), 1024):
                chunk = av.AudioFrame.from_ndarray(samples[None, start:start + 1024], format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts, chunk.time_base = 44100, start, Fraction(1, 44100)
                container.mux(sound.encode(chunk))
            container.mux(sound.encode())


@pytest.fixture
def style(tmp_path):
    path = tmp_path / "style.png"
    generator = torch.Generator().manual_seed(1)
    Image.fromarray((torch.rand(32, 32, 3, generator=generator) ** 2 * 255).byte().numpy()).save(path)
    return path


@pytest.fixture
def folder(tmp_path):
    shot = tmp_path / "shot"
    shot.mkdir()
    for t, array in enumerate(_frames(4)):
        Image.fromarray(array).save(shot / f"{t:04d}.png")
    return shot


def _one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def _decoded(path):
    with av.open(str(path)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        return frames, len(container.streams.audio), float(container.streams.video[0].average_rate)


def test_a_video_in_gives_a_video_out_with_its_audio_and_frame_rate(tmp_path, style):
    clip = tmp_path / "clip.mp4"
    _write_video(clip, _frames(4), audio=True)
    output = tmp_path / "styled.mp4"
    result = runner.invoke(app, ["video", str(clip), "-s", str(style), "-o", str(output), *FAST])
    assert result.exit_code == 0, result.output
    assert "frame 4/4 done" in result.stderr and "s/frame" in result.stderr
    frames, audio_streams, fps = _decoded(output)
    assert len(frames) == 4 and frames[0].shape == (22, 32, 3)  # 32 px long side, the even height 4:2:0 needs
    assert audio_streams == 1 and fps == pytest.approx(12)
    kept = sorted((tmp_path / "styled.mp4.frames").iterdir())
    assert [p.name for p in kept] == ["00001.png", "00002.png", "00003.png", "00004.png"]
    assert read_metadata(kept[0])["frame_hash"]

    again = runner.invoke(app, ["video", str(clip), "-s", str(style), "-o", str(output), *FAST])
    assert again.exit_code == 0 and "0 rendered, 4 resumed" in again.stderr  # finished: nothing to do


def test_a_folder_in_gives_a_frame_pattern_out_at_the_chosen_fps(tmp_path, style, folder):
    result = runner.invoke(app, ["video", str(folder), "-s", str(style), "-o", str(tmp_path / "out" / "f%03d.png"),
                                 *FAST, "-q"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["f001.png", "f002.png", "f003.png", "f004.png"]
    assert result.stderr == ""
    glob = runner.invoke(app, ["video", str(folder / "*.png"), "-s", str(style), "-o", str(tmp_path / "g.webm"),
                               "--fps", "6", *FAST, "-q"])
    assert glob.exit_code == 0, glob.output
    frames, audio_streams, fps = _decoded(tmp_path / "g.webm")
    assert len(frames) == 4 and audio_streams == 0 and fps == pytest.approx(6)


def _not_a_video(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_text("these are not the frames you are looking for\n")
    return path, "not a video"


def _no_frames(tmp_path):
    path = tmp_path / "empty"
    path.mkdir()
    (path / "notes.txt").write_text("no frames here")
    return path, "holds no frames"


def _sizes_differ(tmp_path):
    path = tmp_path / "sizes"
    path.mkdir()
    for t, array in enumerate(_frames(3)):
        Image.fromarray(array if t != 1 else array[:, :40]).save(path / f"{t}.png")
    return path, "1.png: is 40x32, the first frame (0.png) 48x32"


def _corrupt_frame(tmp_path):
    path = tmp_path / "corrupt"
    path.mkdir()
    for t, array in enumerate(_frames(3)):
        Image.fromarray(array).save(path / f"{t}.jpg")
    data = (path / "1.jpg").read_bytes()
    (path / "1.jpg").write_bytes(data[:len(data) // 3])  # a frame cut short in the middle of the shot
    return path, "1.jpg"


@pytest.mark.parametrize("make", [_not_a_video, _no_frames, _sizes_differ, _corrupt_frame])
@pytest.mark.parametrize("suffix", ["out.mp4", "frames/%05d.png"])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, style, make, suffix):
    source, problem = make(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    output = tmp_path / suffix
    result = runner.invoke(app, ["video", str(source), "-s", str(style), "-o", str(output), *FAST])
    assert result.exit_code == 2, result.output
    line = _one_line(result)
    assert line.startswith("error: ") and problem in line, line
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written, no folder made


def test_a_user_file_at_the_output_is_kept_without_overwrite(tmp_path, style, folder):
    output = tmp_path / "mine.mp4"
    output.write_bytes(b"the user's own video")
    result = runner.invoke(app, ["video", str(folder), "-s", str(style), "-o", str(output), *FAST])
    assert result.exit_code == 2 and "pass --overwrite" in _one_line(result)
    assert output.read_bytes() == b"the user's own video" and not (tmp_path / "mine.mp4.frames").exists()
    replaced = runner.invoke(app, ["video", str(folder), "-s", str(style), "-o", str(output), *FAST, "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert len(_decoded(output)[0]) == 4


def test_an_output_that_is_an_input_frame_is_refused(tmp_path, style, folder):
    result = runner.invoke(app, ["video", str(folder), "-s", str(style), "-o", str(folder / "%04d.png"), *FAST,
                                 "--overwrite"])
    assert result.exit_code == 2 and "is also an input" in _one_line(result)


def test_bad_video_options_and_a_missing_extra_are_one_line(tmp_path, style, folder, monkeypatch):
    for flags, problem in ((["--codec", "h266"], "--codec: unknown value 'h266'"),
                           (["--flow-preset", "slow"], "--flow-preset: unknown value 'slow'"),
                           (["--crf", "99"], "--crf: must be in [0, 63]")):
        result = runner.invoke(app, ["video", str(folder), "-s", str(style), "-o", str(tmp_path / "o.mp4"), *flags])
        assert result.exit_code == 2 and problem in _one_line(result), result.stderr
    monkeypatch.setitem(sys.modules, "av", None)  # import av now raises ImportError
    (tmp_path / "x.mp4").write_bytes(b"")
    result = runner.invoke(app, ["video", str(tmp_path / "x.mp4"), "-s", str(style), "-o", str(tmp_path / "o.mp4")])
    assert result.exit_code == 2 and "pip install 'styleforge[video]'" in _one_line(result)
