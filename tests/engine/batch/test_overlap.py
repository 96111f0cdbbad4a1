"""A batch in this process overlaps I/O with renders: job i + 1's inputs are read and job i - 1's
output is written while job i renders, with the same outcomes and images as one phase after
another, and Ctrl-C never loses a finished render."""

from __future__ import annotations

import json
import threading

import pytest
import torch
from PIL import Image

from styleforge.engine import load_image, load_manifest, run_batch
from styleforge.engine.batch import BatchInterrupted, _local

FAST = {"model": "vgg19-random", "device": "cpu", "size": 32, "iterations": 2}
WAIT = 20.0  # seconds: only reached when the phases do not overlap


@pytest.fixture
def manifest(tmp_path):
    generator = torch.Generator().manual_seed(0)
    for name in ("a", "b", "c", "s"):
        pixels = (torch.rand(24, 32, 3, generator=generator) * 255).byte().numpy()
        Image.fromarray(pixels).save(tmp_path / f"{name}.png")

    def write(*names: str):
        path = tmp_path / "jobs.jsonl"
        lines = [{"defaults": FAST}] + [{"content": n, "style": "s.png", "output": f"out/{n}"} for n in names]
        path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
        return load_manifest(path)

    return write


def test_overlapped_batch_gives_the_outcomes_and_images_of_one_phase_after_another(tmp_path, manifest):
    (tmp_path / "broken.png").write_bytes(b"not a png")  # its read fails: that job alone
    jobs = manifest("a.png", "b.png", "broken.png", "c.png")
    (tmp_path / "out").mkdir()
    serial = run_batch(jobs, overlap=False)
    images = {name: load_image(tmp_path / "out" / name) for name in ("a.png", "b.png", "c.png")}
    (tmp_path / "out" / "b.png").unlink()  # a rerun skips a, c and renders b again

    reported = []
    overlapped = run_batch(jobs, overlap=True, on_outcome=reported.append)
    assert [o.status for o in serial] == ["done", "done", "failed", "done"]
    assert [o.status for o in overlapped] == ["skipped", "done", "failed", "skipped"]
    assert overlapped[2].reason == serial[2].reason and "broken.png" in overlapped[2].reason
    assert sorted(o.line for o in reported) == [o.line for o in overlapped]  # each reported once
    assert torch.equal(load_image(tmp_path / "out" / "b.png"), images["b.png"])


def test_the_next_read_and_the_last_write_run_while_a_render_runs(manifest, monkeypatch):
    jobs = manifest("a.png", "b.png", "c.png")
    read_b, wrote_a = threading.Event(), threading.Event()
    seen = {"read b during a": False, "wrote a during b": False}
    read, write = _local.read_job, _local.write_job

    def reading(job, **kwargs):
        result = read(job, **kwargs)
        if job.content.name == "b.png":
            read_b.set()
        return result

    def writing(job, rendered):
        outcome = write(job, rendered)
        if job.content.name == "a.png":
            wrote_a.set()
        return outcome

    def during(job, event):  # a render's iteration: block it until the other phase has run beside it
        if job.content.name == "a.png":
            seen["read b during a"] = seen["read b during a"] or read_b.wait(WAIT)
        if job.content.name == "b.png":
            seen["wrote a during b"] = seen["wrote a during b"] or wrote_a.wait(WAIT)

    monkeypatch.setattr(_local, "read_job", reading)
    monkeypatch.setattr(_local, "write_job", writing)
    outcomes = run_batch(jobs, on_event=during)
    assert [o.status for o in outcomes] == ["done", "done", "done"]
    assert seen == {"read b during a": True, "wrote a during b": True}


def test_ctrl_c_during_a_render_keeps_the_output_being_written(tmp_path, manifest, monkeypatch):
    jobs = manifest("a.png", "b.png", "c.png")
    write = _local.write_job
    writing = threading.Event()

    def slow_write(job, rendered):
        writing.set()
        threading.Event().wait(0.5)  # still writing when Ctrl-C arrives
        return write(job, rendered)

    def interrupt(job, event):
        if job.content.name == "b.png" and writing.wait(WAIT):
            raise KeyboardInterrupt

    monkeypatch.setattr(_local, "write_job", slow_write)
    with pytest.raises(BatchInterrupted) as caught:
        run_batch(jobs, on_event=interrupt)
    assert [o.status for o in caught.value.outcomes] == ["done", "interrupted", "not run"]
    assert load_image(tmp_path / "out" / "a.png").shape == (3, 24, 32)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png"]  # no partial b, no temporaries
