"""Batch jobs: manifests in three formats, validation with line numbers, shared targets, resume,
failure isolation, and the Ray backend on a local instance."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from styleforge.engine import (
    ManifestError,
    TargetCache,
    glob_jobs,
    load_image,
    load_manifest,
    read_metadata,
    run_batch,
)
from styleforge.engine import _device
from styleforge.engine.batch import run_on_ray

FAST = {"model": "vgg19-random", "device": "cpu", "size": 32, "iterations": 3,
        "precision": "fp32"}  # auto is a per-process measurement: workers would not agree on it


@pytest.fixture
def images(tmp_path):
    """Two small photos and two small 'paintings' with different statistics."""
    generator = torch.Generator().manual_seed(0)
    paths = {}
    for name, power in (("a", 1), ("b", 1), ("s1", 2), ("s2", 3)):
        pixels = (torch.rand(24, 32, 3, generator=generator) ** power * 255).byte().numpy()
        paths[name] = tmp_path / f"{name}.png"
        Image.fromarray(pixels).save(paths[name])
    return paths


def _jsonl(tmp_path, lines) -> object:
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def test_jsonl_manifest_with_defaults(tmp_path, images):
    path = _jsonl(tmp_path, [
        {"defaults": {**FAST, "style_weight": 50}},
        {"content": "a.png", "style": "s1.png", "output": "out/a.png"},
        {"content": "b.png", "style": ["s1.png", "s2.png"], "style_blend": [0.7, 0.3], "output": "out/b.png",
         "size": 40},
    ])
    jobs = load_manifest(path)
    assert [job.line for job in jobs] == [2, 3]
    assert jobs[0].content == tmp_path / "a.png" and jobs[0].output == tmp_path / "out" / "a.png"
    assert jobs[0].config.objective.style_weight == 50.0 and jobs[1].config.pyramid.size == 40
    assert jobs[1].styles == (tmp_path / "s1.png", tmp_path / "s2.png")
    assert jobs[1].config.objective.style_blend == (0.7, 0.3)


def test_csv_manifest_with_comment_defaults(tmp_path, images):
    path = tmp_path / "jobs.csv"
    path.write_text("# model = \"vgg19-random\"\n# iterations = 3\ncontent,style,output,size\n"
                    "a.png,s1.png;s2.png,out/a.png,32\nb.png,s2.png,out/b.png,\n")
    jobs = load_manifest(path, overrides={"device": "cpu"})
    assert [job.line for job in jobs] == [4, 5]
    assert jobs[0].styles == (tmp_path / "s1.png", tmp_path / "s2.png")
    assert jobs[0].config.pyramid.size == 32 and jobs[1].config.pyramid.size == 512  # empty cell: the default
    assert jobs[1].config.pyramid.iterations == 3 and jobs[1].config.runtime.model == "vgg19-random"


def test_toml_manifest(tmp_path, images):
    path = tmp_path / "jobs.toml"
    path.write_text('[defaults]\nmodel = "vgg19-random"\nsize = 32\n\n[[job]]\ncontent = "a.png"\n'
                    'style = "s1.png"\noutput = "o1.png"\n\n[[job]]\ncontent = "b.png"\nstyle = "s2.png"\n'
                    'output = "o2.png"\nmethod = "mrf"\n')
    jobs = load_manifest(path)
    assert [job.line for job in jobs] == [5, 10]
    assert jobs[1].config.objective.method == "mrf" and jobs[1].config.pyramid.levels == 3  # MRF's own defaults


def test_every_bad_line_is_reported_before_any_work(tmp_path, images):
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join([
        json.dumps({"content": "a.png", "style": "s1.png", "output": "o1.png", **FAST}),
        json.dumps({"content": "missing.png", "style": "s1.png", "output": "o2.png"}),
        "{not json",
        json.dumps({"content": "a.png", "style": "s1.png", "output": "o3.png", "size": -4}),
        json.dumps({"content": "a.png", "style": "s1.png", "output": "o1.png"}),
        json.dumps({"content": "a.png", "style": "s1.png", "output": "o4.gif"}),
        json.dumps({"content": "a.png", "output": "o5.png"}),
        json.dumps({"content": "a.png", "style": "s1.png", "output": "o6.png", "colour": 3}),
    ]) + "\n")
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    lines = dict(caught.value.problems)
    assert sorted(lines) == [2, 3, 4, 5, 6, 7, 8]
    assert "missing.png: no such file" in lines[2] and "invalid JSON" in lines[3]
    assert "size: must be at least 1" in lines[4] and "also written by line 1" in lines[5]
    assert "unsupported output format" in lines[6] and "no style image" in lines[7]
    assert "unknown option 'colour'" in lines[8]
    assert not list(tmp_path.glob("o*.png"))


def test_shared_cache_computes_each_style_once(tmp_path, images):
    path = _jsonl(tmp_path, [{"defaults": FAST}] + [
        {"content": c, "style": s, "output": f"out/{c[0]}{s[:2]}.png"}
        for c in ("a.png", "b.png") for s in ("s1.png", "s2.png")])
    cache = TargetCache()
    outcomes = run_batch(load_manifest(path), cache=cache)
    assert [o.status for o in outcomes] == ["done"] * 4
    assert cache.computed == 2  # two styles, one size, one model: two Gram target sets


def test_rerun_skips_finished_jobs_and_redoes_the_rest(tmp_path, images):
    path = _jsonl(tmp_path, [{"defaults": FAST}] + [
        {"content": c, "style": "s1.png", "output": f"out/{c}"} for c in ("a.png", "b.png")])
    assert [o.status for o in run_batch(load_manifest(path))] == ["done", "done"]
    metadata = read_metadata(tmp_path / "out" / "a.png")
    assert len(metadata["job_hash"]) == 64
    assert [o.status for o in run_batch(load_manifest(path))] == ["skipped", "skipped"]
    (tmp_path / "out" / "b.png").unlink()
    assert [o.status for o in run_batch(load_manifest(path))] == ["skipped", "done"]
    # Other parameters for the same output: refused without overwrite, redone with it.
    changed = load_manifest(path, overrides={"style_weight": 5.0})
    assert [o.status for o in run_batch(changed)] == ["failed", "failed"]
    assert [o.status for o in run_batch(changed, overwrite=True)] == ["done", "done"]


def test_a_corrupt_input_fails_alone(tmp_path, images):
    broken = tmp_path / "broken.png"
    broken.write_bytes(images["a"].read_bytes()[:60])
    path = _jsonl(tmp_path, [{"defaults": FAST}] + [
        {"content": c, "style": "s1.png", "output": f"out/{c}"} for c in ("a.png", "broken.png", "b.png")])
    outcomes = run_batch(load_manifest(path))
    assert [o.status for o in outcomes] == ["done", "failed", "done"]
    assert outcomes[1].line == 3 and "broken.png" in outcomes[1].reason
    assert not (tmp_path / "out" / "broken.png").exists()


def test_glob_jobs_fill_the_output_template(tmp_path, images):
    jobs = glob_jobs(str(tmp_path / "[ab].png"), styles=[str(images["s1"])],
                     output=str(tmp_path / "o" / "{stem}_x.png"), options=FAST)
    assert [job.output.name for job in jobs] == ["a_x.png", "b_x.png"]
    with pytest.raises(Exception, match="no file matches"):
        glob_jobs(str(tmp_path / "*.jpeg"), styles=[str(images["s1"])], output="{stem}.png")


def test_two_cpu_workers_give_the_same_outputs(tmp_path, images):
    path = _jsonl(tmp_path, [{"defaults": FAST}] + [
        {"content": c, "style": "s1.png", "output": f"{folder}/{c}"} for folder in ("one", "two")
        for c in ("a.png", "b.png")])
    jobs = load_manifest(path)
    assert [o.status for o in run_batch(jobs[:2])] == ["done", "done"]
    assert [o.status for o in run_batch(jobs[2:], workers=2)] == ["done", "done"]
    for name in ("a.png", "b.png"):
        diff = (load_image(tmp_path / "one" / name) - load_image(tmp_path / "two" / name)).abs().max()
        assert diff <= 2 / 255


ray = pytest.importorskip("ray", reason="Ray is not installed (the ray extra)")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_gives_the_same_outputs_as_local(tmp_path, images, local_ray):
    path = _jsonl(tmp_path, [{"defaults": FAST}] + [
        {"content": c, "style": s, "output": f"{folder}/{c[0]}{s[:2]}.png"} for folder in ("local", "ray")
        for c in ("a.png", "b.png") for s in ("s1.png",)])
    jobs = load_manifest(path)
    assert [o.status for o in run_batch(jobs[:2])] == ["done", "done"]
    cache = TargetCache()
    outcomes = run_batch(jobs[2:], ray_address="auto", cache=cache)
    assert [o.status for o in outcomes] == ["done", "done"]
    assert cache.computed == 1  # one style: published once, fetched by the other task
    for name in ("as1.png", "bs1.png"):
        diff = (load_image(tmp_path / "local" / name) - load_image(tmp_path / "ray" / name)).abs().max()
        assert diff <= 2 / 255


def test_ray_retries_a_task_whose_worker_died(tmp_path, images, local_ray):
    marker = str(tmp_path / "crashed")

    def crash_once(job, **kwargs):  # a closure: Ray ships it by value to the worker
        import os

        from styleforge.engine.batch import run_job

        flag = f"{marker}.{job.line}"
        if not os.path.exists(flag):
            open(flag, "w").close()
            os._exit(1)  # the worker dies mid-task; Ray retries the task elsewhere
        return run_job(job, **kwargs)

    path = _jsonl(tmp_path, [{"defaults": FAST}, {"content": "a.png", "style": "s1.png", "output": "out/a.png"}])
    outcomes = run_on_ray(load_manifest(path), address="auto", runner=crash_once)
    assert [o.status for o in outcomes] == ["done"]
    assert (tmp_path / "crashed.2").exists()  # the first attempt did die
    assert load_image(tmp_path / "out" / "a.png").shape == (3, 24, 32)


def test_auto_precision_is_hashed_and_recorded_as_what_runs(tmp_path, images, monkeypatch):
    """A job with --precision auto hashes and records the precision it resolved to: a machine that
    resolves it otherwise renders the job again (refused without overwrite), never takes another
    machine's output as its own."""
    monkeypatch.setattr(_device, "bf16_pays", lambda: False)
    path = _jsonl(tmp_path, [{"defaults": {**FAST, "precision": "auto", "device": "cpu"}},
                             {"content": "a.png", "style": "s1.png", "output": "out/a.png"}])
    assert [o.status for o in run_batch(load_manifest(path))] == ["done"]
    assert read_metadata(tmp_path / "out" / "a.png")["config"]["precision"] == "fp32"
    assert [o.status for o in run_batch(load_manifest(path))] == ["skipped"]
    monkeypatch.setattr(_device, "bf16_pays", lambda: True)  # another machine, or a retaken measurement
    assert [o.status for o in run_batch(load_manifest(path))] == ["failed"]
    assert [o.status for o in run_batch(load_manifest(path), overwrite=True)] == ["done"]
    assert read_metadata(tmp_path / "out" / "a.png")["config"]["precision"] == "bf16"
