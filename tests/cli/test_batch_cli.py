"""styleforge batch: exit codes, the report, resume, and a batch killed with SIGKILL then rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import torch
from PIL import Image
from typer.testing import CliRunner

from styleforge.cli import app
from styleforge.engine import load_image, read_metadata

runner = CliRunner()
FAST = {"model": "vgg19-random", "device": "cpu", "size": 32, "iterations": 3}


def _inputs(tmp_path, count=3):
    generator = torch.Generator().manual_seed(0)
    for index in range(count):
        pixels = (torch.rand(24, 32, 3, generator=generator) * 255).byte().numpy()
        Image.fromarray(pixels).save(tmp_path / f"c{index}.png")
    Image.fromarray((torch.rand(32, 32, 3, generator=generator) ** 2 * 255).byte().numpy()).save(tmp_path / "s.png")


def _manifest(tmp_path, count, **defaults):
    lines = [json.dumps({"defaults": {**FAST, **defaults}})]
    lines += [json.dumps({"content": f"c{i}.png", "style": "s.png", "output": f"out/c{i}.png"}) for i in range(count)]
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_batch_report_and_exit_codes(tmp_path):
    _inputs(tmp_path)
    (tmp_path / "c1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    path = _manifest(tmp_path, 3)
    result = runner.invoke(app, ["batch", str(path)])
    assert result.exit_code == 1, result.output  # one job failed
    report = json.loads((tmp_path / "jobs.report.json").read_text())
    assert (report["done"], report["failed"]) == (2, 1)
    failed = [job for job in report["jobs"] if job["status"] == "failed"]
    assert failed[0]["line"] == 3 and "c1.png" in failed[0]["reason"]
    assert "line 3: failed" in result.output

    (tmp_path / "c1.png").unlink()
    invalid = runner.invoke(app, ["batch", str(path)])
    assert invalid.exit_code == 2 and "line 3" in invalid.output and "no such file" in invalid.output


def test_glob_batch_then_rerun_does_nothing(tmp_path):
    _inputs(tmp_path, 2)
    args = ["batch", "--glob", str(tmp_path / "c*.png"), "-s", str(tmp_path / "s.png"),
            "-o", str(tmp_path / "out" / "{stem}_styled.png"), "--report", str(tmp_path / "r.json")]
    args += [f"--option={key}={json.dumps(value)}" for key, value in FAST.items()]
    assert runner.invoke(app, args).exit_code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["c0_styled.png", "c1_styled.png"]
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "0 done, 2 skipped" in again.output
    (tmp_path / "out" / "c1_styled.png").unlink()
    verbose = runner.invoke(app, [*args, "--verbose"])
    assert verbose.exit_code == 0 and "1 done, 1 skipped" in verbose.output
    assert "line 2: iteration 3/3" in verbose.output  # the redone job's own progress


def test_kill_9_mid_batch_then_rerun_finishes_every_job(tmp_path):
    _inputs(tmp_path, 4)
    path = _manifest(tmp_path, 4, iterations=40)
    command = [sys.executable, "-m", "styleforge.cli", "batch", str(path)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 240
    out = tmp_path / "out"
    while time.monotonic() < deadline and not (out.is_dir() and any(out.glob("c*.png"))):
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished_before = sorted(p.name for p in out.glob("c*.png"))
    assert 0 < len(finished_before) < 4, "the kill should land mid-batch"
    for name in finished_before:  # whatever was there is complete
        assert load_image(out / name).shape == (3, 24, 32)

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(finished_before)} skipped" in rerun.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"c{i}.png" for i in range(4)]  # no temporaries left
    for index in range(4):
        assert load_image(out / f"c{index}.png").shape == (3, 24, 32)
        assert read_metadata(out / f"c{index}.png")["iterations_done"] == 40


def test_batch_takes_render_options_as_flags_like_render(tmp_path, monkeypatch):
    """As a new user tries it: the same --size and --iterations flags as render."""
    _inputs(tmp_path, count=2)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["batch", "--glob", "c*.png", "-s", "s.png", "-o", "out/{stem}.png", "--size", "64",
                                 "--iterations", "5", "--levels", "1", "--model", "vgg19-random", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    for index in range(2):
        metadata = read_metadata(tmp_path / "out" / f"c{index}.png")
        assert metadata["config"]["size"] == 64 and metadata["config"]["iterations"] == 5
        assert load_image(tmp_path / "out" / f"c{index}.png").shape == (3, 48, 64)
    # A bad value is refused before any work, on every job it reaches.
    bad = runner.invoke(app, ["batch", "--glob", "c*.png", "-s", "s.png", "-o", "bad/{stem}.png", "--size", "0"])
    assert bad.exit_code == 2 and "line 1: size: must be at least 1 pixel" in bad.output
    assert not (tmp_path / "bad").exists()
