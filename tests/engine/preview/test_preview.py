"""The live preview: the address, the hand-off from the render, the read-only server, and the page
in a real browser (headless Chromium, skipped with a reason where it is not installed)."""

from __future__ import annotations

import dataclasses
import http.client
import importlib
import io
import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from styleforge.engine import ConfigError, MissingExtraError, RenderConfig, RenderEvent, load_image, render
from styleforge.engine.batch import BatchJob, JobOutcome
from styleforge.engine.preview import PreviewFeed, open_preview, parse_preview_address, reduce_image
from styleforge.engine.preview import _feed, _server
from styleforge.engine.video import VideoEvent


def _event(iteration: int, *, loss: float = 1.0, size: int = 64) -> RenderEvent:
    return RenderEvent(iteration, 10, {"total": torch.tensor(loss)}, elapsed=float(iteration), peak_memory=2**30,
                       image=torch.rand(3, size, size), progress=iteration / 10)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _raw(url: str, method: str, path: str, host: str | None = None) -> int:
    """A request sent as written: no client normalises ``..`` away."""
    address = url.split("//")[1].rstrip("/")
    connection = http.client.HTTPConnection(address, timeout=10)
    connection.putrequest(method, path, skip_host=host is not None)
    if host is not None:
        connection.putheader("Host", host)
    connection.endheaders()
    status = connection.getresponse().status
    connection.close()
    return status


@pytest.mark.parametrize("text, expected", [
    ("8080", ("127.0.0.1", 8080)), (8080, ("127.0.0.1", 8080)), ("0.0.0.0:9000", ("0.0.0.0", 9000)),
    ("localhost:0", ("localhost", 0)), ("[::1]:8080", ("::1", 8080)),
])
def test_address_is_host_and_port_with_loopback_by_default(text, expected):
    assert parse_preview_address(text) == expected


@pytest.mark.parametrize("text", ["abc", "70000", "::1:8080", ":", "host:", "-1"])
def test_a_bad_address_is_refused_naming_the_option(text):
    with pytest.raises(ConfigError) as error:
        parse_preview_address(text)
    assert error.value.field == "preview"


def test_without_the_extra_opening_fails_at_once_naming_it(monkeypatch):
    real = importlib.import_module

    def missing(name, *args):
        if name == "uvicorn":
            raise ImportError("No module named 'uvicorn'")
        return real(name, *args)

    monkeypatch.setattr(_server.importlib, "import_module", missing)
    with pytest.raises(MissingExtraError, match=r"pip install 'styleforge\[preview\]'"):
        open_preview("0")


def test_the_render_thread_takes_pictures_only_while_a_page_watches_and_at_most_max_fps():
    feed = PreviewFeed(max_fps=2.0, long_side=16)
    for i in range(1, 6):
        feed.render_event(_event(i))
    assert feed._picture is None  # nobody watching: no copy, no resize
    feed.watchers = 1
    for i in range(6, 11):
        feed.render_event(_event(i))
    snapshot = feed.snapshot()
    assert snapshot.image_version == 1 and snapshot.jpeg[:2] == b"\xff\xd8"
    assert Image.open(io.BytesIO(snapshot.jpeg)).size == (16, 16)
    feed.render_event(_event(11))  # within half a second of the last picture: none taken
    assert feed._picture is None
    figures = feed.snapshot().figures
    assert [point[0] for point in figures["curve"]] == list(range(1, 12))
    assert (figures["iteration"], figures["iterations"], figures["peak_memory"]) == (11, 10, 2**30)
    assert figures["size"] == [64, 64]  # the render's size, not the picture's


def test_the_server_thread_runs_no_torch_computation():
    """A torch op on the CPU from the server's thread starts a second OpenMP team on the render's
    cores: that cost a 256 px render 7% of its wall clock on 2 cores (benchmarks/RESULTS.md). The
    snapshot (losses read, picture encoded) runs no aten computation, and the JPEG is the picture."""
    feed = PreviewFeed(long_side=16)
    feed.watchers = 1
    ramp = torch.linspace(0, 1, 16)
    smooth = torch.stack([ramp[None].expand(16, 16), ramp[:, None].expand(16, 16), torch.full((16, 16), 0.5)])
    feed.render_event(dataclasses.replace(_event(1, size=16), image=smooth))  # JPEG keeps a smooth picture
    picture = feed._picture.clone()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        snapshot = feed.snapshot()
    computed = {event.name for event in profile.events()} - {"aten::detach", "detach", "aten::to", "aten::item",
                                                               "aten::_local_scalar_dense", "aten::lift_fresh",
                                                               "aten::resolve_conj", "aten::resolve_neg"}
    assert not computed, computed
    decoded = np.asarray(Image.open(io.BytesIO(snapshot.jpeg)), dtype=np.float64) / 255
    assert np.abs(decoded - picture.permute(1, 2, 0).numpy()).mean() < 0.02  # JPEG's loss at quality 85


def test_a_picture_is_an_area_reduced_copy_not_the_live_image():
    image = torch.rand(3, 100, 200)
    small = reduce_image(image, 50)
    assert small.shape == (3, 25, 50)
    torch.testing.assert_close(small[:, 0, 0], image[:, :4, :4].mean(dim=(1, 2)))
    same = reduce_image(image, 400)
    image.zero_()
    assert same.abs().sum() > 0


def test_a_long_curve_is_thinned_and_a_nan_loss_is_null():
    feed = PreviewFeed()
    for i in range(1, 2001):
        feed.render_event(_event(i, loss=float("nan") if i == 2000 else 1.0 / i))
    figures = feed.snapshot().figures
    assert 300 <= len(figures["curve"]) <= 600
    iterations = [point[0] for point in figures["curve"]]
    assert iterations == sorted(iterations) and iterations[0] <= 4
    assert json.loads(json.dumps(_server.finite(figures)))["loss"] is None


def test_the_time_left_is_the_renders_own_estimate_as_the_terminal_shows_it():
    # Not elapsed / progress (13x off early on): RenderEvent.remaining, None until a level is timed.
    feed = PreviewFeed()
    feed.render_event(dataclasses.replace(_event(1), remaining=None))
    assert feed.snapshot().figures["eta"] is None
    feed.render_event(dataclasses.replace(_event(2), remaining=42.0))
    assert feed.snapshot().figures["eta"] == 42.0


def test_shots_and_batches_report_frames_and_jobs():
    feed = PreviewFeed("batch")
    feed.expect_jobs(3)
    job = BatchJob(line=2, output=Path("out/a.png"), styles=(), config=RenderConfig())
    feed.job_event(job, VideoEvent("resumed", frame=0, frames=4, done=1))
    feed.job_event(job, VideoEvent("step", frame=1, frames=4, done=1, step=_event(3)))
    feed.job_outcome(JobOutcome(1, "out/b.png", "done"))
    feed.job_outcome(JobOutcome(3, "out/c.png", "failed", reason="NaN"))
    figures = feed.snapshot().figures
    assert figures["jobs"] == {"done": 1, "skipped": 0, "failed": 1, "total": 3}
    assert figures["frames"]["done"] == 1 and figures["frames"]["total"] == 4 and figures["frames"]["resumed"] == 1
    assert figures["job"] == "line 2: out/a.png" and figures["iteration"] == 3


def test_the_server_is_loopback_read_only_and_serves_nothing_but_the_preview():
    with open_preview("0") as server:
        assert server.url.startswith("http://127.0.0.1:")
        status, body = _get(server.url)
        assert status == 200 and b"styleforge" in body
        assert _get(server.url + "preview.jpg")[0] == 404  # no picture yet
        for path in ["/etc/passwd", "/../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd",
                     "/preview.jpg/../../pyproject.toml",
                     "/..%2f..%2fpyproject.toml", "//etc/passwd", "/static/index.html", "/engine/preview/_page.py",
                     "/pyproject.toml", "/events/../../../etc/passwd", "/preview.jpg%00.png"]:
            assert _raw(server.url, "GET", path) == 404, path
        for method in ["POST", "PUT", "DELETE", "PATCH"]:
            for path in ["/", "/events", "/preview.jpg"]:
                assert _raw(server.url, method, path) == 405, (method, path)
        assert _raw(server.url, "GET", "/", host="attacker.example") == 400  # DNS rebinding
        assert _raw(server.url, "GET", "/", host=server.url.split("//")[1].rstrip("/")) == 200


def test_the_page_follows_a_render_through_server_sent_events(test_images):
    config = RenderConfig(size=32, model="vgg16-random", iterations=12, device="cpu", precision="fp32")
    content, style = load_image(test_images / "tubingen.jpg"), load_image(test_images / "starry_night.jpg")
    with open_preview("0", max_fps=20) as server:
        stream = urllib.request.urlopen(server.url + "events", timeout=30)
        first = json.loads(stream.readline()[5:])
        assert first["kind"] == "render" and first.get("iteration") is None
        result = render(config, content, [style], callback=server.feed.render_event)
        seen = []
        while not seen or seen[-1].get("iteration") != 12 or not seen[-1]["image_version"]:
            line = stream.readline()
            if line.startswith(b"data:"):
                seen.append(json.loads(line[5:]))
        stream.close()
        assert seen[-1]["curve"][-1] == [12, pytest.approx(result.losses["total"], rel=1e-5)]
        status, jpeg = _get(server.url + "preview.jpg")
        assert status == 200 and Image.open(io.BytesIO(jpeg)).size == (32, 24)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed (apt-get install chromium)")
def test_chromium_shows_the_image_and_the_figures_during_a_render(test_images, tmp_path):
    """A render waits at iteration 8 of 12 while headless Chromium loads the page: its DOM has the
    figures and a loaded picture, and its screenshot shows the picture where the page puts it."""
    config = RenderConfig(size=64, model="vgg16-random", iterations=12, device="cpu", precision="fp32")
    content, style = load_image(test_images / "tubingen.jpg"), load_image(test_images / "starry_night.jpg")
    browsed = threading.Event()
    with open_preview("0", max_fps=20) as server:
        def callback(event):
            server.feed.render_event(event)
            if event.iteration == 8:
                browsed.wait(240)

        worker = threading.Thread(target=render, args=(config, content, [style]), kwargs={"callback": callback})
        stream = urllib.request.urlopen(server.url + "events", timeout=60)  # a page watching: pictures are taken
        worker.start()
        try:
            while True:
                line = stream.readline()
                if line.startswith(b"data:"):
                    figures = json.loads(line[5:])
                    if figures.get("iteration") == 8 and figures["image_version"]:
                        break
            stream.close()
            browser = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                       "--window-size=800,500"]
            dom = subprocess.run([*browser, "--dump-dom", server.url], capture_output=True, text=True,
                                 timeout=120).stdout
            shot = tmp_path / "preview.png"
            subprocess.run([*browser, f"--screenshot={shot}", server.url], capture_output=True, timeout=120)
        finally:
            browsed.set()
            worker.join(120)
    assert 'data-loaded="yes"' in dom  # the <img> loaded /preview.jpg
    for figure in ["<td>iteration</td><td>8 of 12</td>", "<td>level</td><td>1 of 1</td>",
                   "<td>size</td><td>64 x 48</td>",
                   "<td>loss</td>", "<td>time left</td>", "<td>peak memory</td>", "<polyline"]:
        assert figure in dom, figure
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    assert pixels.shape == (500, 800, 3)
    picture = pixels[20:200, 20:360]  # where the page puts the image: far from the flat dark background
    assert picture.std() > 20 and np.abs(picture - pixels[490, 790]).mean() > 20


def test_a_slow_picture_spaces_out_the_next_ones(monkeypatch):
    """Pictures may take 0.5% of the render thread's time: one that took 10 ms makes the next
    wait 2 s, whatever max_fps allows (a 4K render on a CPU)."""
    def busy(image, side):
        start = time.thread_time()
        while time.thread_time() - start < 0.01:
            pass
        return image[:, :1, :1]

    monkeypatch.setattr(_feed, "reduce_image", busy)
    feed = PreviewFeed(max_fps=100)
    feed.watchers = 1
    feed.render_event(_event(1))
    assert feed._interval >= 2.0


def test_the_server_thread_reports_its_cpu_time():
    with open_preview("0") as server:
        _get(server.url)
        seconds = server.cpu_seconds()
    assert seconds is None or seconds > 0
