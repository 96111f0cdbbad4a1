"""A numbered EXR shot through the colour options, as ``render`` takes them for one plate: each
frame read in the input colour space through the view, written back into the output colour space
with its own residual and alpha; the options in the frames' hashes and metadata; a manifest's
``frames`` key. Real EXR files (OpenEXR), the conversions checked against OCIO called directly."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from styleforge.engine import ConfigError, ImageError, ManifestError, RenderConfig, load_manifest, read_metadata, \
    run_batch
from styleforge.engine.video import FrameStore, VideoConfig, frame_store, open_frames, render_shot, shot_digests

pytest.importorskip("cv2", reason="optical flow needs OpenCV (the video extra)")
pytest.importorskip("OpenEXR", reason="the exr extra (OpenEXR) is not installed")
ocio = pytest.importorskip("PyOpenColorIO", reason="the exr extra (opencolorio) is not installed")
from styleforge.engine._exr import encode_exr, read_exr  # noqa: E402

FAST = dict(size=32, iterations=3, levels=1, model="vgg19-random", device="cpu", style_weight=100.0)
VIDEO = VideoConfig(frame_iterations=1)
IN, OUT = "ACES2065-1", "Linear Rec.709 (sRGB)"
HIGHLIGHT = (5, 7)  # (y, x) of a light far beyond the view's range, in every frame
DATA_WINDOW, DISPLAY_WINDOW = ((100, 40), (131, 63)), ((0, 0), (199, 99))


@pytest.fixture(autouse=True)
def _builtin_ocio(monkeypatch):
    monkeypatch.delenv("OCIO", raising=False)


@pytest.fixture
def shot(tmp_path):
    """plate.1001-1003.exr: 32x24 float frames panning 2 px a frame over a scene-linear texture,
    a highlight at 500, alpha that is neither 0 nor 1, PIZ, a data window inside the display's."""
    rng = np.random.default_rng(1)
    texture = rng.uniform(0.0, 1.5, size=(24, 38, 3)).astype(np.float32)
    folder = tmp_path / "shot"
    folder.mkdir()
    for t, number in enumerate(range(1001, 1004)):
        rgb = np.ascontiguousarray(texture[:, 2 * t:2 * t + 32])
        rgb[HIGHLIGHT] = 500.0
        alpha = rng.uniform(0.05, 0.95, size=(24, 32)).astype(np.float32)
        (folder / f"plate.{number}.exr").write_bytes(encode_exr(
            rgb, alpha, pixel_type="float", compression="PIZ_COMPRESSION", data_window=DATA_WINDOW,
            display_window=DISPLAY_WINDOW))
    return folder / "plate.####.exr"


@pytest.fixture
def style():
    return torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(2))


def _processor(transform):
    config = ocio.Config.CreateFromFile("ocio://cg-config-latest")
    return config.getProcessor(transform).getDefaultCPUProcessor()


def _apply(processor, rgb):
    out = np.ascontiguousarray(rgb, dtype=np.float32).copy()
    processor.applyRGB(out.reshape(-1, 3))
    return out


def _view(source, direction):
    return _processor(ocio.DisplayViewTransform(src=source, display="sRGB - Display",
                                                view="ACES 2.0 - SDR 100 nits (Rec.709)", direction=direction))


def _capture_renders(monkeypatch):
    """The display image each frame's render hands to the store, by frame index."""
    renders = {}
    write = FrameStore.write

    def capturing(self, index, image, *args, **kwargs):
        renders[index] = image.detach().clone()
        return write(self, index, image, *args, **kwargs)

    monkeypatch.setattr(FrameStore, "write", capturing)
    return renders


def test_a_shot_reads_and_writes_its_frames_in_the_colour_spaces_asked_for(tmp_path, shot, style, monkeypatch):
    renders = _capture_renders(monkeypatch)
    config = RenderConfig(**FAST, input_colorspace=IN, output_colorspace=OUT)
    result = render_shot(config, open_frames(shot), [style], frame_store(tmp_path / "out" / "styled.####.exr"),
                         video=VIDEO)
    assert (result.frames, result.rendered) == (3, 3)
    forward, inverse = _view(IN, ocio.TRANSFORM_DIR_FORWARD), _view(IN, ocio.TRANSFORM_DIR_INVERSE)
    to_output = _processor(ocio.ColorSpaceTransform(src=IN, dst=OUT))
    for index, number in enumerate(range(1001, 1004)):
        source = read_exr(shot.parent / f"plate.{number}.exr", max_pixels=10**6)
        out = read_exr(tmp_path / "out" / f"styled.{number}.exr", max_pixels=10**6)
        np.testing.assert_array_equal(out.alpha, source.alpha)  # bit for bit
        assert (out.pixel_type, out.compression, out.data_window, out.display_window) == \
            ("float", "PIZ_COMPRESSION", DATA_WINDOW, DISPLAY_WINDOW)
        # The render's display values back through the inverse view, the frame's residual (what
        # its display could not hold) added, then into the output space: OCIO called here.
        residual = source.rgb.astype(np.float64) - _apply(inverse, np.clip(_apply(forward, source.rgb), 0, 1))
        display = renders[index].clamp(0, 1).permute(1, 2, 0).numpy()
        expected = _apply(to_output, (_apply(inverse, display) + residual).astype(np.float32))
        np.testing.assert_allclose(out.rgb, expected, rtol=1e-4, atol=1e-5)
        assert out.rgb[HIGHLIGHT].min() > 300.0  # the light survives, far above 1
        metadata = read_metadata(tmp_path / "out" / f"styled.{number}.exr")
        assert metadata["frame"] == number
        assert (metadata["config"]["input_colorspace"], metadata["config"]["output_colorspace"]) == (IN, OUT)
        assert metadata["color"] == {"ocio_config": metadata["color"]["ocio_config"], "colorspace": IN,
                                     "display": "sRGB - Display", "view": "ACES 2.0 - SDR 100 nits (Rec.709)"}


def test_the_network_and_the_flow_see_the_frames_through_the_asked_colour_space(shot):
    """What a frame renders from is its display values in the input space: another input space
    shows the same file differently."""
    source = open_frames(shot)
    aces, default = next(source.plates(colorspace=IN)), next(source.plates())
    assert aces[1] is not None and aces[1].pipeline.colorspace == IN
    assert not torch.allclose(aces[0], default[0], atol=1e-3)
    first = read_exr(shot.parent / "plate.1001.exr", max_pixels=10**6)
    expected = np.clip(_apply(_view(IN, ocio.TRANSFORM_DIR_FORWARD), first.rgb), 0, 1)
    np.testing.assert_allclose(aces[0].permute(1, 2, 0).numpy(), expected, atol=1e-6)


def test_the_colour_options_are_in_every_frames_hash(shot, style):
    source = open_frames(shot)
    base = RenderConfig(**FAST)
    hashes = [shot_digests(config, VIDEO, source, [style]) for config in (
        base, base.replace({"input_colorspace": IN}), base.replace({"output_colorspace": OUT}),
        base.replace({"view": "Un-tone-mapped"}), base.replace({"input_colorspace": IN, "output_colorspace": OUT}))]
    firsts = {digests[0] for digests in hashes}
    assert len(firsts) == len(hashes)  # every option, alone or together, makes other frames
    assert all(len(set(digests)) == 3 for digests in hashes)


def test_the_frames_hash_covers_an_exr_frames_alpha(shot):
    """The alpha reaches the output frame untouched: a frame whose alpha changed is another input."""
    before = open_frames(shot).digests
    path = shot.parent / "plate.1002.exr"
    exr = read_exr(path, max_pixels=10**6)
    path.write_bytes(encode_exr(exr.rgb, 1.0 - exr.alpha, pixel_type="float", compression="PIZ_COMPRESSION",
                                data_window=DATA_WINDOW, display_window=DISPLAY_WINDOW))
    after = open_frames(shot).digests
    assert (before[0], before[2]) == (after[0], after[2]) and before[1] != after[1]


def test_a_resume_with_other_colour_options_is_refused_and_overwrite_renders_again(tmp_path, shot, style):
    store = frame_store(tmp_path / "out" / "styled.####.exr")
    aces = RenderConfig(**FAST, input_colorspace=IN)
    render_shot(aces, open_frames(shot), [style], store, video=VIDEO)
    before = {number: (tmp_path / "out" / f"styled.{number}.exr").read_bytes() for number in range(1001, 1004)}
    assert render_shot(aces, open_frames(shot), [style], store, video=VIDEO).resumed == 3  # the same: resumed
    other = aces.replace({"output_colorspace": OUT})
    with pytest.raises(ImageError, match="not this shot's frame"):
        render_shot(other, open_frames(shot), [style], store, video=VIDEO)
    assert {number: (tmp_path / "out" / f"styled.{number}.exr").read_bytes() for number in before} == before
    result = render_shot(other, open_frames(shot), [style], store, video=VIDEO, overwrite=True)
    assert (result.rendered, result.resumed) == (3, 0)
    assert read_metadata(tmp_path / "out" / "styled.1003.exr")["config"]["output_colorspace"] == OUT


def test_a_killed_shot_resumes_from_its_last_frame_as_written_in_the_output_space(tmp_path, shot, style,
                                                                                   monkeypatch):
    """The next frame starts from the previous one as written, seen through the view from the
    output space, whether it was just written or read back by a resumed run."""
    from styleforge.engine.video import _shot

    starts = []
    warped_previous = _shot._warped_previous

    def capturing(previous_input, current, previous_output, preset):
        starts.append(previous_output.clone())
        return warped_previous(previous_input, current, previous_output, preset)

    monkeypatch.setattr(_shot, "_warped_previous", capturing)
    config = RenderConfig(**FAST, input_colorspace=IN, output_colorspace=OUT)
    whole = frame_store(tmp_path / "whole" / "styled.####.exr")
    render_shot(config, open_frames(shot), [style], whole, video=VIDEO)
    written = read_exr(tmp_path / "whole" / "styled.1001.exr", max_pixels=10**6).rgb
    seen = np.clip(_apply(_processor(ocio.DisplayViewTransform(
        src=OUT, display="sRGB - Display", view="ACES 2.0 - SDR 100 nits (Rec.709)",
        direction=ocio.TRANSFORM_DIR_FORWARD)), written), 0, 1)
    np.testing.assert_allclose(starts[0].permute(1, 2, 0).numpy(), seen, atol=1e-6)

    def kill_after_the_first_frame(event):
        if event.status == "done" and event.frame == 0:
            raise KeyboardInterrupt

    resumed = frame_store(tmp_path / "resumed" / "styled.####.exr")
    with pytest.raises(KeyboardInterrupt):
        render_shot(config, open_frames(shot), [style], resumed, video=VIDEO, callback=kill_after_the_first_frame)
    assert render_shot(config, open_frames(shot), [style], resumed, video=VIDEO).resumed == 1
    for number in range(1001, 1004):
        ours = read_exr(tmp_path / "resumed" / f"styled.{number}.exr", max_pixels=10**6)
        np.testing.assert_array_equal(ours.rgb, read_exr(tmp_path / "whole" / f"styled.{number}.exr",
                                                         max_pixels=10**6).rgb)


def test_bad_colour_names_are_refused_before_any_work(tmp_path, shot, style):
    for option in ("input_colorspace", "output_colorspace", "view"):
        config = RenderConfig(**FAST, **{option: "ACEScgg"})
        with pytest.raises(ConfigError, match=rf"^{option}: unknown value 'ACEScgg'"):
            render_shot(config, open_frames(shot), [style], frame_store(tmp_path / "out" / "styled.####.exr"))
    assert not (tmp_path / "out").exists()


def test_png_frames_written_as_exr_take_the_options_as_render_does(tmp_path, style, monkeypatch):
    """No plate behind a PNG frame: its EXR is the inverse view of the render, in the output space."""
    folder = tmp_path / "pngs"
    folder.mkdir()
    texture = (torch.rand(24, 36, 3, generator=torch.Generator().manual_seed(3)) * 255).byte().numpy()
    for t in range(2):
        Image.fromarray(texture[:, 2 * t:2 * t + 32].copy()).save(folder / f"{t}.png")
    renders = _capture_renders(monkeypatch)
    config = RenderConfig(**FAST, input_colorspace=IN, output_colorspace=OUT)
    render_shot(config, open_frames(folder), [style], frame_store(tmp_path / "out" / "%02d.exr"), video=VIDEO)
    out = read_exr(tmp_path / "out" / "01.exr", max_pixels=10**6)
    assert out.alpha is None
    inverse = _processor(ocio.DisplayViewTransform(src=OUT, display="sRGB - Display",
                                                   view="ACES 2.0 - SDR 100 nits (Rec.709)",
                                                   direction=ocio.TRANSFORM_DIR_INVERSE))
    expected = _apply(inverse, renders[0].clamp(0, 1).permute(1, 2, 0).numpy())
    np.testing.assert_allclose(out.rgb, expected.astype(np.float16).astype(np.float32), rtol=2e-3, atol=1e-4)
    assert "color" not in read_metadata(tmp_path / "out" / "01.exr")  # no plate: as render records it


def _manifest(folder, *jobs):
    path = folder / "jobs.jsonl"
    path.write_text("\n".join(json.dumps(job) for job in [{"defaults": FAST}, *jobs]) + "\n")
    generator = torch.Generator().manual_seed(0)
    Image.fromarray((torch.rand(32, 32, 3, generator=generator) * 255).byte().numpy()).save(folder / "s.png")
    return path


def test_a_manifest_renders_a_range_of_a_numbered_shot_in_its_colour_spaces(tmp_path, shot):
    path = _manifest(tmp_path, {"kind": "video", "content": "shot/plate.####.exr", "style": "s.png",
                                "output": "out/styled.####.exr", "frames": "1002-1003", "frame_iterations": 1,
                                "input_colorspace": IN, "output_colorspace": OUT})
    jobs = load_manifest(path)
    assert jobs[0].frames == (1002, 1003)
    assert [outcome.status for outcome in run_batch(jobs)] == ["done"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["styled.1002.exr", "styled.1003.exr"]
    out = read_exr(tmp_path / "out" / "styled.1003.exr", max_pixels=10**6)
    source = read_exr(shot.parent / "plate.1003.exr", max_pixels=10**6)
    np.testing.assert_array_equal(out.alpha, source.alpha)
    assert out.rgb[HIGHLIGHT].min() > 300.0
    metadata = read_metadata(tmp_path / "out" / "styled.1003.exr")
    assert metadata["config"]["output_colorspace"] == OUT and metadata["color"]["colorspace"] == IN
    assert [outcome.status for outcome in run_batch(load_manifest(path))] == ["skipped"]


@pytest.mark.parametrize(("job", "message"), [
    ({"frames": "1003-1002"}, r"frames: '1003-1002' ends before it starts"),
    ({"frames": "first"}, r"frames: 'first' is not a frame range"),
    ({"frames": [1001, 1002]}, r"frames: \[1001, 1002\] is not a frame range"),
    ({"frames": True}, r"frames: True is not a frame range"),
    ({"frames": "1001-1005"}, r"missing frames 1004-1005 \(of 1001-1005; 3 found\)"),
    ({"frames": "1001", "content": "shot"}, r"frames: .*shot: a range of frames needs a numbered sequence"),
    ({"frames": "1001", "kind": "image", "content": "shot/plate.1001.exr", "output": "o.exr"},
     r'frames: a range of frames is for a video job \(kind = "video"\)'),
])
def test_bad_frames_in_a_manifest_name_the_file_the_job_and_the_key(tmp_path, shot, job, message):
    path = _manifest(tmp_path, {"content": "shot/plate.1001.exr", "style": "s.png", "output": "still.exr"},
                     {"kind": "video", "content": "shot/plate.####.exr", "style": "s.png",
                      "output": "out/styled.####.exr", **job})
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: 1 bad job(s): line 3: "), text
    assert re.search(message, text), text


def test_a_toml_manifest_takes_one_frame_as_a_number(tmp_path, shot):
    Image.new("RGB", (32, 32)).save(tmp_path / "s.png")
    path = tmp_path / "jobs.toml"
    path.write_text('[[job]]\nkind = "video"\ncontent = "shot/plate.####.exr"\nstyle = "s.png"\n'
                    'output = "out/styled.####.exr"\nframes = 1002\n')
    assert load_manifest(path)[0].frames == (1002, 1002)
