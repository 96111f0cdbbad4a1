"""A shot rendered frame after frame: the temporal render's plumbing, resume after a kill, and
outputs that are not the shot's left alone."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from styleforge.engine import ImageError, RenderConfig, load_image, read_metadata, resize_long_side
from styleforge.engine.video import VideoConfig, frame_store, open_frames, render_shot

pytest.importorskip("cv2", reason="optical flow needs OpenCV (the video extra)")

CONFIG = RenderConfig(size=48, iterations=4, model="vgg19-random", device="cpu", style_weight=100.0)
VIDEO = VideoConfig(frame_iterations=2)


@pytest.fixture
def shot(tmp_path, test_images):
    """Five 48x32 frames: a window panning 2 px a frame across tubingen."""
    photo = resize_long_side(load_image(test_images / "tubingen.jpg"), 80)
    folder = tmp_path / "shot"
    folder.mkdir()
    for t in range(5):
        window = photo[:, 4:36, 2 * t:48 + 2 * t]
        Image.fromarray(window.mul(255).round().byte().permute(1, 2, 0).numpy()).save(folder / f"frame{t + 1}.png")
    return folder


@pytest.fixture
def style(test_images):
    return resize_long_side(load_image(test_images / "starry_night.jpg"), 48)


def _snapshot(paths):
    return {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in paths}


def test_frames_render_in_order_with_the_temporal_term_after_the_first(tmp_path, shot, style):
    store = frame_store(tmp_path / "out" / "%03d.png")
    events = []
    result = render_shot(CONFIG, open_frames(shot), [style], store, video=VIDEO, callback=events.append)
    assert (result.frames, result.rendered, result.resumed) == (5, 5, 0)
    assert [e.frame for e in events if e.status == "done"] == [0, 1, 2, 3, 4]
    steps = [e.step for e in events if e.status == "step"]
    assert [s.iterations for s in steps if s.iteration == 1] == [4, 2, 2, 2, 2]  # later frames: frame_iterations
    assert "temporal" not in steps[0].losses and all("temporal" in s.losses for s in steps[4:])
    done = [e for e in events if e.status == "done"]
    assert done[-1].done == 5 and done[-1].eta == 0 and done[-1].seconds_per_frame > 0
    for index in range(5):
        path = tmp_path / "out" / f"{index + 1:03d}.png"
        assert load_image(path).shape == (3, 32, 48)
        assert read_metadata(path)["frame"] == index + 1


def test_a_killed_shot_resumes_at_the_first_unfinished_frame(tmp_path, shot, style):
    store = frame_store(tmp_path / "out" / "%03d.png")

    def kill_after_frame_3(event):
        if event.status == "done" and event.frame == 2:
            raise KeyboardInterrupt  # as a kill between two frames would

    with pytest.raises(KeyboardInterrupt):
        render_shot(CONFIG, open_frames(shot), [style], store, video=VIDEO, callback=kill_after_frame_3)
    finished = [store.path(i) for i in range(3)]
    assert all(path.exists() for path in finished) and not store.path(3).exists()
    before = _snapshot(finished)

    events = []
    result = render_shot(CONFIG, open_frames(shot), [style], store, video=VIDEO, callback=events.append)
    assert (result.rendered, result.resumed) == (2, 3)
    assert sorted({e.frame for e in events if e.status == "step"}) == [3, 4]  # frames 1-3 not rendered again
    assert [e.frame for e in events if e.status == "resumed"] == [0, 1, 2]
    assert _snapshot(finished) == before  # not rewritten either
    assert store.path(4).exists()

    again = render_shot(CONFIG, open_frames(shot), [style], store, video=VIDEO)
    assert (again.rendered, again.resumed) == (0, 5)


def test_other_parameters_do_not_replace_finished_frames_without_overwrite(tmp_path, shot, style):
    store = frame_store(tmp_path / "out" / "%03d.png")
    render_shot(CONFIG, open_frames(shot), [style], store, video=VIDEO)
    before = _snapshot(store.path(i) for i in range(5))
    other = VideoConfig(frame_iterations=2, temporal_weight=10.0)
    with pytest.raises(ImageError, match="not this shot's frame"):
        render_shot(CONFIG, open_frames(shot), [style], store, video=other)
    assert _snapshot(store.path(i) for i in range(5)) == before
    result = render_shot(CONFIG, open_frames(shot), [style], store, video=other, overwrite=True)
    assert result.rendered == 5


def test_a_changed_frame_renders_it_and_every_frame_after_it(tmp_path, shot, style):
    store = frame_store(tmp_path / "out" / "%03d.png")
    render_shot(CONFIG, open_frames(shot), [style], store, video=VIDEO)
    with Image.open(shot / "frame4.png") as image:
        image.transpose(Image.FLIP_LEFT_RIGHT).save(shot / "frame4.png")
    events = []
    result = render_shot(CONFIG, open_frames(shot), [style], store, video=VIDEO, overwrite=True,
                         callback=events.append)
    assert result.rendered == 2 and sorted({e.frame for e in events if e.status == "step"}) == [3, 4]


@pytest.mark.parametrize("options", [{"style_loss": "w2"}, {"style_loss": "sliced"},
                                     {"method": "mrf", "levels": 1, "content_weight": 0.5}])
def test_every_style_loss_and_method_takes_the_temporal_term(tmp_path, shot, style, options):
    config = CONFIG.replace(options)
    events = []
    render_shot(config, open_frames(shot / "frame[12].png"), [style], frame_store(tmp_path / "%d.png"),
                video=VideoConfig(frame_iterations=4), callback=events.append)
    second = [e.step.losses for e in events if e.status == "step" and e.frame == 1]
    assert len(second) == 4 and all(torch.isfinite(losses["temporal"]) for losses in second)
    # It starts at the previous frame warped (the temporal term's reference): 0, then moves off it
    # (L-BFGS's first step is a tiny one: the later ones move).
    assert second[0]["temporal"] == 0 and second[-1]["temporal"] > 0
