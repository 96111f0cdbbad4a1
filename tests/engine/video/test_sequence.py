"""Numbered frame sequences (plate.####.exr, plate.%04d.png): frame numbers found and kept, a
range of a shot, missing frames reported by number."""

from __future__ import annotations

import pytest
from PIL import Image

from styleforge.engine import ConfigError, ImageError, glob_jobs, open_frames, parse_frame_range
from styleforge.engine.video import find_sequence, frame_path, frame_store, is_sequence, printf_pattern


def _shot(folder, numbers, name="plate.{:04d}.png"):
    folder.mkdir(exist_ok=True)
    for number in numbers:
        value = (number * 37) % 255
        Image.new("RGB", (20, 16), (value, 255 - value, 90)).save(folder / name.format(number))
    return folder


def test_patterns_are_recognised_and_spelt_both_ways(tmp_path):
    assert is_sequence("shot/plate.####.exr") and is_sequence("plate.%04d.exr") and is_sequence("p.%d.png")
    assert not is_sequence("shot/*.png") and not is_sequence("a.%04d.%04d.png") and not is_sequence("s##/p.png")
    assert printf_pattern("shot/plate.####.exr") == "shot/plate.%04d.exr"
    assert frame_path("out/plate.####.exr", 1001) == frame_path("out/plate.%04d.exr", 1001)
    assert str(frame_path("out/plate.####.exr", 7)) == "out/plate.0007.exr"
    assert parse_frame_range("1001-1050") == (1001, 1050) and parse_frame_range("1010") == (1010, 1010)
    for bad in ("1050-1001", "a-b", "1-2-3"):
        with pytest.raises(ConfigError):
            parse_frame_range(bad)


@pytest.mark.parametrize("spelling", ["plate.####.png", "plate.%04d.png"])
def test_a_shot_from_1001_keeps_its_numbers_and_a_range_selects(tmp_path, spelling):
    folder = _shot(tmp_path / "shot", range(1001, 1006))
    (folder / "plate.1001.png.bak").write_bytes(b"")  # neither a frame nor an error
    (folder / "other.1001.png").write_bytes(b"")
    sequence = find_sequence(folder / spelling)
    assert sequence.numbers == (1001, 1002, 1003, 1004, 1005)
    assert [path.name for path in sequence.files] == [f"plate.{n}.png" for n in range(1001, 1006)]
    shot = open_frames(str(folder / spelling), frames=(1002, 1004))
    assert shot.count == 3 and shot.numbers == (1002, 1003, 1004)
    assert [frame.shape for frame in shot.frames()] == [(3, 16, 20)] * 3


def test_missing_frames_are_reported_by_number(tmp_path):
    folder = _shot(tmp_path / "shot", [1001, 1002, 1004, 1008, 1009])
    with pytest.raises(ImageError, match=r"missing frames 1003, 1005-1007 \(of 1001-1009; 5 found\)"):
        open_frames(folder / "plate.####.png")
    with pytest.raises(ImageError, match=r"missing frames 1010"):
        open_frames(folder / "plate.####.png", frames=(1008, 1010))
    assert open_frames(folder / "plate.####.png", frames=(1008, 1009)).numbers == (1008, 1009)
    with pytest.raises(ImageError, match="no frames in frames 2000-2001"):
        open_frames(folder / "plate.####.png", frames=(2000, 2001))
    with pytest.raises(ConfigError, match="numbered sequence"):
        open_frames(folder, frames=(1001, 1002))


def test_the_output_pattern_takes_the_input_numbers(tmp_path):
    store = frame_store(str(tmp_path / "out" / "styled.####.png")).numbered((1001, 1002))
    assert store.path(0).name == "styled.1001.png" and store.path(1).name == "styled.1002.png"
    video = frame_store(str(tmp_path / "out.mp4")).numbered((1001, 1002))
    assert video.path(0).name == "00001.png"  # a video's own frame folder counts from 1
    assert frame_store(str(tmp_path / "o.%03d.png")).path(0).name == "o.001.png"  # numbered from 1 as before


def test_batch_glob_of_a_sequence_keeps_frame_numbers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _shot(tmp_path / "shot", range(1001, 1004))
    Image.new("RGB", (16, 16), (10, 20, 30)).save(tmp_path / "style.png")
    jobs = glob_jobs("shot/plate.####.png", styles=["style.png"], output="out/styled.####.png")
    assert [job.output.name for job in jobs] == ["styled.1001.png", "styled.1002.png", "styled.1003.png"]
    jobs = glob_jobs("shot/plate.%04d.png", styles=["style.png"], output="out/{frame}.png", frames=(1002, 1003))
    assert [(job.content.name, job.output.name) for job in jobs] == [("plate.1002.png", "1002.png"),
                                                                     ("plate.1003.png", "1003.png")]
    (tmp_path / "shot" / "plate.1002.png").unlink()
    with pytest.raises(ConfigError, match="missing frames 1002"):
        glob_jobs("shot/plate.####.png", styles=["style.png"], output="out/{frame}.png")
    with pytest.raises(ConfigError, match="numbered sequence"):
        glob_jobs("shot/*.png", styles=["style.png"], output="out/{stem}.png", frames=(1, 2))
