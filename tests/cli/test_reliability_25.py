"""Issue 25 through the command line: outputs refused before any work, errors that are bad input
rather than bugs, and an early Ctrl-C without a traceback (numbered items of the issue)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from styleforge import engine
from styleforge.cli import app

runner = CliRunner()
FAST = ["--model", "vgg19-random", "--device", "cpu", "--quiet", "--size", "32", "-n", "1"]


@pytest.fixture
def photos(tmp_path):
    generator = torch.Generator().manual_seed(0)
    Image.fromarray((torch.rand(24, 32, 3, generator=generator) * 255).byte().numpy()).save(tmp_path / "c.png")
    Image.fromarray((torch.rand(32, 32, 3, generator=generator) * 255).byte().numpy()).save(tmp_path / "s.png")
    return tmp_path


def _one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_5_an_output_that_is_a_dangling_symlink_is_refused_before_any_work(photos, monkeypatch):
    (photos / "o.png").symlink_to(photos / "gone" / "o.png")
    monkeypatch.setattr(engine, "render", lambda *a, **k: pytest.fail("rendered before refusing the output"))
    result = runner.invoke(app, ["render", str(photos / "c.png"), "-s", str(photos / "s.png"),
                                 "-o", str(photos / "o.png"), *FAST])
    assert result.exit_code == 2
    assert "is a link to nothing" in _one_line(result) and "recovered" not in result.stderr
    assert (photos / "o.png").is_symlink()


@pytest.mark.parametrize("delay", [0.3, 0.6, 1.0, 1.5])
def test_9_an_early_ctrl_c_exits_130_without_a_traceback(photos, delay):
    """Within a second of the start the process is still importing torch: a Ctrl-C there printed
    the import's KeyboardInterrupt traceback."""
    command = [sys.executable, "-m", "styleforge.cli", "render", str(photos / "c.png"), "-s", str(photos / "s.png"),
               "-o", str(photos / "o.png"), *FAST]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert process.returncode == 130, stderr


def test_11_a_style_map_colour_written_short_is_not_a_missing_file(photos):
    result = runner.invoke(app, ["render", str(photos / "c.png"), "--content-map", str(photos / "c.png"),
                                 "-s", str(photos / "s.png"), "--style-map", "#f00", "-o", str(photos / "o.png"),
                                 *FAST])
    assert result.exit_code == 2
    assert "'#f00' is not a #rrggbb colour (write #ff0000)" in _one_line(result)


def test_1_a_second_video_into_the_same_output_exits_2_and_changes_nothing(photos):
    """Two `video` commands into one output mixed their frames and both said "wrote": the second
    is refused before any work while the first (here, another process holding the lock) runs."""
    pytest.importorskip("av", reason="video needs PyAV (the video extra)")
    (photos / "shot").mkdir()
    for index in range(2):
        Image.open(photos / "c.png").save(photos / "shot" / f"{index}.png")
    output = photos / "out.mp4"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               "from styleforge.engine.video import frame_store\n"
                               f"with frame_store({str(output)!r}).lock():\n    print('held', flush=True)\n"
                               "    time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = runner.invoke(app, ["video", str(photos / "shot"), "-s", str(photos / "s.png"), "-o", str(output),
                                     *FAST])
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 2
    assert f"is being written by another styleforge (process {holder.pid})" in _one_line(result)
    assert not output.exists() and not (photos / "out.mp4.frames").exists()
