"""Issue 13 in the batch engine: validation that protects the user's files (no output is an
input, outputs stay inside the manifest's folder), failures of any kind isolated, and Ctrl-C."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from styleforge.engine import ManifestError, RenderInterrupted, RenderResult, glob_jobs, load_manifest, run_batch
from styleforge.engine.batch import BatchInterrupted, _job

FAST = {"model": "vgg19-random", "device": "cpu", "size": 32, "iterations": 1}


@pytest.fixture
def images(tmp_path):
    generator = torch.Generator().manual_seed(0)
    for name in ("a", "b", "s", "map", "init"):
        pixels = (torch.rand(24, 32, 3, generator=generator) * 255).byte().numpy()
        Image.fromarray(pixels).save(tmp_path / f"{name}.png")
    return tmp_path


def _jsonl(folder, lines):
    path = folder / "jobs.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


@pytest.mark.parametrize(("job", "role"), [
    ({"content": "a.png", "style": "s.png", "output": "b.png"}, "content"),
    ({"content": "a.png", "style": "s.png", "output": "s.png"}, "style"),
    ({"content": "a.png", "style": "s.png", "output": "linked.png"}, "content"),
    ({"content": "a.png", "style": "s.png", "output": "init.png", "init": "init.png"}, "init"),
    ({"content_map": "map.png", "style": "s.png", "style_map": "map.png", "method": "mrf",
      "output": "map.png"}, "content_map"),
])
def test_an_output_that_is_any_jobs_input_is_refused(images, job, role):
    (images / "linked.png").symlink_to(images / "b.png")
    path = _jsonl(images, [{"defaults": FAST}, job, {"content": "b.png", "style": "s.png", "output": "o.png"}])
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    line, message = caught.value.problems[0]
    assert line == 2 and "is an input of line" in message and f"({role}" in message


def test_init_image_paths_are_relative_to_the_manifest(images, tmp_path_factory, monkeypatch):
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    jobs = load_manifest(_jsonl(images, [{"content": "a.png", "style": "s.png", "output": "o.png",
                                          "init": "init.png", **FAST}]))
    assert jobs[0].config.optimization.init == str(images / "init.png")
    assert images / "init.png" in jobs[0].inputs()


@pytest.mark.parametrize("output", ["../x.png", "/tmp/styleforge-outside-test.png", "in/../../x.png"])
def test_outputs_stay_inside_the_manifests_folder(images, output):
    path = _jsonl(images, [{"content": "a.png", "style": "s.png", "output": output, **FAST}])
    with pytest.raises(ManifestError, match="outside"):
        load_manifest(path)
    assert load_manifest(path, allow_outside=True)[0].output.name == "x.png" or output.endswith("test.png")


def test_output_root_resolves_and_confines(images, tmp_path_factory):
    root = tmp_path_factory.mktemp("root")
    path = _jsonl(images, [{"content": "a.png", "style": "s.png", "output": "out/a.png", **FAST}])
    assert load_manifest(path, output_root=root)[0].output == root / "out" / "a.png"
    escaping = _jsonl(images, [{"content": "a.png", "style": "s.png", "output": str(images / "o.png"), **FAST}])
    with pytest.raises(ManifestError, match="outside"):
        load_manifest(escaping, output_root=root)
    jobs = glob_jobs(str(images / "a.png"), styles=[str(images / "s.png")], output="g/{stem}.png", options=FAST,
                     output_root=root)
    assert jobs[0].output == root / "g" / "a.png"
    with pytest.raises(ManifestError, match="outside"):
        glob_jobs(str(images / "a.png"), styles=[str(images / "s.png")], output="../{stem}.png", options=FAST,
                  output_root=root)


def test_an_output_folder_under_a_file_is_a_bad_line(images):
    (images / "taken").write_text("a file, not a folder")
    path = _jsonl(images, [{"content": "a.png", "style": "s.png", "output": "taken/a.png", **FAST}])
    with pytest.raises(ManifestError, match="line 1: .*taken"):
        load_manifest(path)


def _fake_result():
    return RenderResult(torch.full((3, 24, 32), 0.5), 1, {}, 0.0, 0, "cpu")


def test_a_failure_of_any_kind_stays_with_its_job(images, monkeypatch):
    calls = []

    def flaky(config, content, styles, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise TypeError("a bug in one job's path")
        return _fake_result()

    monkeypatch.setattr(_job, "render", flaky)
    path = _jsonl(images, [{"defaults": FAST}] + [
        {"content": c, "style": "s.png", "output": f"out/{c}"} for c in ("a.png", "b.png")])
    outcomes = run_batch(load_manifest(path))
    assert [o.status for o in outcomes] == ["failed", "done"]
    assert outcomes[0].reason == "TypeError: a bug in one job's path"


def test_an_output_folder_that_cannot_be_made_fails_that_job_before_it_renders(images, monkeypatch):
    path = _jsonl(images, [{"defaults": FAST}] + [
        {"content": c, "style": "s.png", "output": f"{c[0]}/{c}"} for c in ("a.png", "b.png")])
    jobs = load_manifest(path)
    (images / "a").write_text("made a file meanwhile")
    rendered = []
    monkeypatch.setattr(_job, "render", lambda *a, **k: rendered.append(1) or _fake_result())
    outcomes = run_batch(jobs)
    assert [o.status for o in outcomes] == ["failed", "done"] and len(rendered) == 1
    assert "a" in outcomes[0].reason


def test_ctrl_c_stops_the_batch_with_every_outcome(images, monkeypatch):
    def interrupted(*args, **kwargs):
        raise RenderInterrupted(torch.zeros(3, 24, 32), iteration=1)

    monkeypatch.setattr(_job, "render", interrupted)
    path = _jsonl(images, [{"defaults": FAST}] + [
        {"content": c, "style": "s.png", "output": f"out/{c}"} for c in ("a.png", "b.png")])
    seen = []
    with pytest.raises(BatchInterrupted) as caught:
        run_batch(load_manifest(path), on_outcome=seen.append)
    assert [o.status for o in caught.value.outcomes] == ["interrupted", "not run"]
    assert seen == []  # on_outcome reports finished jobs only
    assert not (images / "out").exists()
