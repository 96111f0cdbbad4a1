"""--preview on render, batch and video: the page's address is printed, the feed follows the work,
and without the extra or with a bad address the command stops before any work."""

from __future__ import annotations

import importlib

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from styleforge import engine
from styleforge.cli import app
from styleforge.engine.preview import _server

runner = CliRunner()
FAST = ["--model", "vgg16-random", "--device", "cpu", "--size", "32", "-n", "3"]


@pytest.fixture
def opened(monkeypatch):
    """The servers the commands open (closed when the command ends; their feeds stay readable)."""
    servers = []
    real = engine.open_preview

    def recording(*args, **kwargs):
        servers.append(real(*args, **kwargs))
        return servers[-1]

    monkeypatch.setattr(engine, "open_preview", recording)
    return servers


def _images(tmp_path, count=2):
    generator = torch.Generator().manual_seed(0)
    folder = tmp_path / "frames"
    folder.mkdir()
    for index in range(count):
        pixels = (torch.rand(24, 32, 3, generator=generator) * 255).byte().numpy()
        Image.fromarray(pixels).save(folder / f"{index:03d}.png")
    Image.fromarray((torch.rand(32, 32, 3, generator=generator) * 255).byte().numpy()).save(tmp_path / "s.png")
    return folder


def test_render_serves_the_preview_and_feeds_it(tmp_path, opened):
    folder = _images(tmp_path, 1)
    result = runner.invoke(app, ["render", str(folder / "000.png"), "-s", str(tmp_path / "s.png"), "-o",
                                 str(tmp_path / "out.png"), *FAST, "--preview", "0"])
    assert result.exit_code == 0, result.output
    assert f"preview: {opened[0].url}" in result.output and opened[0].url.startswith("http://127.0.0.1:")
    figures = opened[0].feed.snapshot().figures
    assert (figures["kind"], figures["iteration"], figures["status"]) == ("render", 3, "finished")


def test_batch_preview_counts_jobs(tmp_path, opened):
    folder = _images(tmp_path, 2)
    result = runner.invoke(app, ["batch", "--glob", str(folder / "*.png"), "-s", str(tmp_path / "s.png"), "-o",
                                 str(tmp_path / "out" / "{stem}.png"), "--report", str(tmp_path / "r.json"), *FAST,
                                 "--preview", "127.0.0.1:0"])
    assert result.exit_code == 0, result.output
    figures = opened[0].feed.snapshot().figures
    assert figures["jobs"] == {"done": 2, "skipped": 0, "failed": 0, "total": 2}
    assert figures["job"].startswith("line 2:") and figures["iteration"] == 3


def test_video_preview_counts_frames(tmp_path, opened):
    pytest.importorskip("av")
    pytest.importorskip("cv2")
    folder = _images(tmp_path, 2)
    result = runner.invoke(app, ["video", str(folder), "-s", str(tmp_path / "s.png"), "-o",
                                 str(tmp_path / "out" / "%03d.png"), *FAST, "--frame-iterations", "2",
                                 "--preview", "0"])
    assert result.exit_code == 0, result.output
    figures = opened[0].feed.snapshot().figures
    assert (figures["kind"], figures["frames"]["done"], figures["frames"]["total"]) == ("video", 2, 2)


def test_without_the_extra_preview_fails_at_once_naming_it(tmp_path, monkeypatch):
    real = importlib.import_module

    def missing(name, *args):
        if name == "starlette":
            raise ImportError("No module named 'starlette'")
        return real(name, *args)

    monkeypatch.setattr(_server.importlib, "import_module", missing)
    folder = _images(tmp_path, 1)
    for command in (["render", str(folder / "000.png"), "-o", str(tmp_path / "out.png")],
                    ["batch", "--glob", str(folder / "*.png"), "-o", str(tmp_path / "{stem}.png")],
                    ["video", str(folder), "-o", str(tmp_path / "out.mp4")]):
        result = runner.invoke(app, [*command, "-s", str(tmp_path / "s.png"), *FAST, "--preview", "8080"])
        assert result.exit_code == 2, result.output
        assert "pip install 'styleforge[preview]'" in result.output
    assert sorted(path.name for path in tmp_path.iterdir()) == ["frames", "s.png"]  # nothing written


def test_a_bad_address_is_one_line_and_exit_2(tmp_path):
    result = runner.invoke(app, ["render", "x.png", "-s", "s.png", "-o", str(tmp_path / "o.png"),
                                 "--preview", "1.2.3.4"])
    assert result.exit_code == 2 and "error: --preview: expected [HOST:]PORT" in result.output
