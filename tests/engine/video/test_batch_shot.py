"""A shot as a batch job: ``kind = "video"`` in a manifest, validated with the others, rendered
by the same workers, skipped when a rerun finds it finished."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from styleforge.engine import ManifestError, load_manifest, read_metadata, run_batch

pytest.importorskip("cv2", reason="optical flow needs OpenCV (the video extra)")
FAST = {"model": "vgg19-random", "device": "cpu", "size": 32, "iterations": 2}


@pytest.fixture
def manifest_folder(tmp_path):
    generator = torch.Generator().manual_seed(0)
    texture = (torch.rand(32, 54, 3, generator=generator) * 255).byte().numpy()
    (tmp_path / "shot").mkdir()
    for t in range(3):
        Image.fromarray(texture[:, 2 * t:2 * t + 48].copy()).save(tmp_path / "shot" / f"{t}.png")
    Image.fromarray((torch.rand(32, 32, 3, generator=generator) * 255).byte().numpy()).save(tmp_path / "s.png")
    Image.fromarray(texture[:, :48].copy()).save(tmp_path / "still.png")
    return tmp_path


def _manifest(folder, *jobs):
    path = folder / "jobs.jsonl"
    path.write_text("\n".join(json.dumps(job) for job in [{"defaults": FAST}, *jobs]) + "\n")
    return path


def test_a_video_job_renders_its_shot_beside_an_image_job_and_is_skipped_when_finished(manifest_folder):
    path = _manifest(manifest_folder,
                     {"kind": "video", "content": "shot", "style": "s.png", "output": "out/%03d.png",
                      "frame_iterations": 1, "temporal_weight": 100},
                     {"content": "still.png", "style": "s.png", "output": "still_out.png"})
    jobs = load_manifest(path)
    assert [job.kind for job in jobs] == ["video", "image"]
    assert jobs[0].video.temporal_weight == 100 and jobs[0].video.frame_iterations == 1
    outcomes = run_batch(jobs)
    assert [o.status for o in outcomes] == ["done", "done"], outcomes
    frames = sorted((manifest_folder / "out").iterdir())
    assert [p.name for p in frames] == ["001.png", "002.png", "003.png"]
    assert read_metadata(frames[2])["video"]["temporal_weight"] == 100
    assert [o.status for o in run_batch(load_manifest(path))] == ["skipped", "skipped"]


def test_bad_video_jobs_are_reported_with_their_lines_before_any_work(manifest_folder):
    path = _manifest(manifest_folder,
                     {"kind": "video", "content": "shot", "style": "s.png", "output": "out.gif"},
                     {"kind": "video", "content": "missing", "style": "s.png", "output": "o.mp4"},
                     {"kind": "film", "content": "shot", "style": "s.png", "output": "o.mp4"},
                     {"kind": "video", "content": "shot", "style": "s.png", "output": "o2.mp4", "crf": 99},
                     {"kind": "video", "content": "shot", "style": "s.png", "output": "o3.mp4",
                      "temporal_weight": "lots"},
                     {"kind": "video", "content_map": "s.png", "style": "s.png", "output": "o4.mp4"})
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    lines = dict(caught.value.problems)
    assert "frame pattern" in lines[2] and "no such video" in lines[3]
    assert "unknown value 'film'" in lines[4] and "crf" in lines[5]
    assert "temporal_weight: must be a number, got 'lots'" in lines[6]
    assert "a video job needs a content" in lines[7] and "None" not in lines[7]
    assert not (manifest_folder / "out").exists()
