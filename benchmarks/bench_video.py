"""Temporal consistency of `styleforge video`: warp error (Lai et al., ECCV 2018) and seconds per
frame, frames rendered independently vs with Ruder et al.'s temporal term, at the same style loss.

    python benchmarks/bench_video.py                                  # 48 frames, 256 px, vgg16-hed
    python benchmarks/bench_video.py --frames 8 --size 128            # a quick look
    python benchmarks/bench_video.py --frames 4 --size 64 --iterations 10 --model vgg19-random
    python benchmarks/bench_video.py --independent-frames 12          # independent on the first 12 only

The shot is synthetic, so its flow is known: a crop window of ../shared/images/content/
golden_gate.jpg panning right and zooming in, with a square cut from tubingen.jpg pasted on and
moving against the pan. The warp error of frame t is the mean over the pixels visible in both
frames of |O_t - warp(O_{t-1}, true flow)|^2 (RGB summed); the input frames' own warp error shows
what warping alone leaves. ``--independent-frames N`` renders the independent run on the first N
frames only (it costs the full schedule per frame); both runs' warp errors are then also given
over those N frames, the like-for-like ratio. It also measures each DIS preset's end-point error against the true
flow, and its time. Writes benchmarks/results/video.json and a strip (video_strip.png: input,
independent, temporal, and each one's difference to its warped previous frame, x4) to look at.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _report import write_report
from PIL import Image

from styleforge.engine import RenderConfig, load_image, resize_long_side
from styleforge.engine.video import (
    FLOW_PRESETS,
    VideoConfig,
    frame_store,
    open_frames,
    optical_flow,
    render_shot,
    sequence_warp_error,
    warp,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "images"
RESULTS = Path(__file__).resolve().parent / "results"


def _sample(image: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """``image`` (3, H, W) at pixel coordinates (xs, ys), bicubic."""
    height, width = image.shape[-2:]
    grid = torch.stack([2 * xs / (width - 1) - 1, 2 * ys / (height - 1) - 1], dim=-1)[None]
    return F.grid_sample(image[None], grid, mode="bicubic", align_corners=True)[0].clamp(0, 1)


def synthetic_shot(frames: int, size: int) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """(frames (3, h, w), true flows t -> t-1 (2, h, w), masks of the pixels visible in both (h, w))."""
    background = load_image(SHARED / "content" / "golden_gate.jpg")
    patch_source = load_image(SHARED / "content" / "tubingen.jpg")
    source_h, source_w = background.shape[-2:]
    width, height = size, round(size * 2 / 3)
    side = height // 3
    patch = resize_long_side(patch_source[:, 100:100 + 400, 300:300 + 400], side)
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    # Camera: per frame, the window's centre pans 0.5% of the photo right and its width shrinks 0.3%.
    centres = [(source_w * (0.3 + 0.005 * t), source_h * (0.55 - 0.001 * t)) for t in range(frames)]
    scales = [source_w * 0.55 * (1 - 0.003 * t) / width for t in range(frames)]
    # Object: moves 2 px left and 1 px down per frame at 256 px (scaled with the size, whole pixels).
    step = (-max(1, round(2 * size / 256)), max(1, round(size / 256)))
    corners = [(width * 3 // 4 + step[0] * t, height // 6 + step[1] * t) for t in range(frames)]

    def source_xy(t: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (centres[t][0] + (xs - (width - 1) / 2) * scales[t], centres[t][1] + (ys - (height - 1) / 2) * scales[t])

    def covered(t: int, x: torch.Tensor, y: torch.Tensor, margin: float) -> torch.Tensor:
        left, top = corners[t]
        return (x >= left - margin) & (x < left + side + margin) & (y >= top - margin) & (y < top + side + margin)

    shot, flows, masks = [], [], []
    for t in range(frames):
        frame = _sample(background, *source_xy(t))
        left, top = corners[t]
        frame[:, top:top + side, left:left + side] = patch[:, :side, :side]
        shot.append(frame)
        if t == 0:
            continue
        sx, sy = source_xy(t)
        px = (sx - centres[t - 1][0]) / scales[t - 1] + (width - 1) / 2  # where the point was in frame t - 1
        py = (sy - centres[t - 1][1]) / scales[t - 1] + (height - 1) / 2
        on_object = covered(t, xs, ys, 0)
        flow = torch.stack([px - xs, py - ys])
        flow[0][on_object], flow[1][on_object] = -float(step[0]), -float(step[1])
        inside = (px >= 0) & (px <= width - 1) & (py >= 0) & (py <= height - 1)
        # Visible in both: the object away from its edges, or background that was not under it.
        mask = (covered(t, xs, ys, -2) | (~covered(t, xs, ys, 2) & ~covered(t - 1, px, py, 2) & inside))
        flows.append(flow)
        masks.append(mask)
    return shot, flows, masks


def _flow_presets(shot, flows, masks) -> list[dict]:
    rows = []
    for preset in FLOW_PRESETS:
        errors, seconds = [], []
        for t in range(1, len(shot)):
            started = time.perf_counter()
            estimate = optical_flow(shot[t], shot[t - 1], preset=preset)
            seconds.append(time.perf_counter() - started)
            mask = masks[t - 1]
            errors.append(float((estimate - flows[t - 1]).norm(dim=0)[mask].mean()))
        rows.append({"preset": preset, "end_point_error_px": sum(errors) / len(errors),
                     "ms_per_flow": 1000 * sum(seconds) / len(seconds)})
        print(f"DIS {preset}: end-point error {rows[-1]['end_point_error_px']:.3f} px, "
              f"{rows[-1]['ms_per_flow']:.1f} ms per flow")
    return rows


def _render(mode: str, config: RenderConfig, video: VideoConfig, folder: Path, style: torch.Tensor,
            count: int) -> dict:
    source = open_frames(folder / "input" / "[0-9]*.png")
    if count < source.count:
        source = open_frames(folder / "input" / "first")
    store = frame_store(folder / mode / "%05d.png")
    # Each frame's last loss terms and seconds, kept beside its frames: a resumed run still has them.
    stats_path = folder / mode / "stats.json"
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {"losses": {}, "seconds": {}}
    last: dict[int, dict] = {}

    def on_event(event) -> None:
        if event.status == "step":
            last[event.frame] = event.step.loss_terms()
        elif event.status == "done":
            stats["losses"][str(event.frame)] = last[event.frame]
            stats["seconds"][str(event.frame)] = event.seconds
            stats_path.write_text(json.dumps(stats))
            print(f"  {mode} frame {event.frame + 1}/{event.frames}: {event.seconds:.1f} s, "
                  f"style {last[event.frame]['style']:.4g}", flush=True)

    render_shot(config, source, [style], store, video=video, callback=on_event)
    frames = [load_image(store.path(i)) for i in range(source.count)]
    losses = [stats["losses"][str(i)] for i in range(source.count)]
    seconds = [stats["seconds"][str(i)] for i in range(source.count)]
    return {"frames": frames, "seconds": sum(seconds), "seconds_first_frame": seconds[0],
            "seconds_per_frame": sum(seconds) / len(seconds),
            "seconds_per_later_frame": sum(seconds[1:]) / (len(seconds) - 1) if len(seconds) > 1 else None,
            "style_loss": sum(v["style"] for v in losses) / len(losses),
            "content_loss": sum(v["content"] for v in losses) / len(losses),
            "temporal_loss": sum(v.get("temporal", 0.0) for v in losses[1:]) / max(1, len(losses) - 1)}


def _strip(shot, runs: dict, flows, path: Path, first: int, count: int, tile: int) -> None:
    rows = [shot] + [run["frames"] for run in runs.values()]
    diffs = []
    for run in runs.values():
        out = run["frames"]
        diffs.append([torch.zeros_like(out[0])] + [((out[t] - warp(out[t - 1], flows[t - 1])).abs() * 4).clamp(0, 1)
                                                    for t in range(1, len(out))])
    rows += diffs
    height = round(tile * shot[0].shape[1] / shot[0].shape[2])
    sheet = Image.new("RGB", (tile * count, height * len(rows)), "white")
    for r, row in enumerate(rows):
        for c in range(count):
            image = row[first + c].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
            sheet.paste(Image.fromarray(image).resize((tile, height), Image.LANCZOS), (c * tile, r * height))
    sheet.save(path)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=100, help="every frame of the independent render, "
                                                                    "and the temporal render's first")
    parser.add_argument("--frame-iterations", type=int, default=None, help="the temporal render's later frames")
    parser.add_argument("--temporal-weight", type=float, default=VideoConfig.temporal_weight)
    parser.add_argument("--flow-preset", default=VideoConfig.flow_preset)
    parser.add_argument("--style", default=str(SHARED / "style" / "starry_night.jpg"))
    parser.add_argument("--model", default="vgg16-hed")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--modes", default="independent,temporal")
    parser.add_argument("--independent-frames", type=int, default=None, help="default: every frame")
    parser.add_argument("--work", type=Path, default=None, help="keep the frames here (a rerun resumes the renders); "
                                                                "default: a temporary folder")
    parser.add_argument("--output", type=Path, default=RESULTS / "video.json")
    parser.add_argument("--strip", type=Path, default=RESULTS / "video_strip.png")
    args = parser.parse_args()
    torch.set_num_threads(1)

    shot, flows, masks = synthetic_shot(args.frames, args.size)
    print(f"{args.frames} frames of {shot[0].shape[2]}x{shot[0].shape[1]}; input warp error "
          f"{sequence_warp_error(shot, flows, masks):.5f}")
    presets = _flow_presets(shot, flows, masks)
    config = RenderConfig(size=args.size, iterations=args.iterations, model=args.model, device=args.device)
    style = load_image(args.style)
    modes = {"independent": VideoConfig(temporal_weight=0.0),
             "temporal": VideoConfig(temporal_weight=args.temporal_weight, frame_iterations=args.frame_iterations,
                                     flow_preset=args.flow_preset)}
    runs = {}
    with tempfile.TemporaryDirectory() as work:
        folder = args.work or Path(work)
        (folder / "input" / "first").mkdir(parents=True, exist_ok=True)
        independent_frames = min(args.independent_frames or args.frames, args.frames)
        for stale in [*(folder / "input").glob("*.png"), *(folder / "input" / "first").glob("*.png")]:
            stale.unlink()  # a kept --work folder may hold a longer shot's frames
        for t, frame in enumerate(shot):
            pixels = Image.fromarray(frame.mul(255).round().byte().permute(1, 2, 0).numpy())
            pixels.save(folder / "input" / f"{t:05d}.png")
            if t < independent_frames:
                pixels.save(folder / "input" / "first" / f"{t:05d}.png")
        for mode in args.modes.split(","):
            print(f"{mode}:", flush=True)
            count = independent_frames if mode == "independent" else args.frames
            runs[mode] = _render(mode, config, modes[mode], folder, style, count)
            frames = runs[mode]["frames"]
            runs[mode]["frames_rendered"] = len(frames)
            runs[mode]["warp_error"] = sequence_warp_error(frames, flows[:len(frames) - 1], masks[:len(frames) - 1])
            runs[mode]["warp_error_first_frames"] = sequence_warp_error(
                frames[:independent_frames], flows[:independent_frames - 1], masks[:independent_frames - 1])
            print(f"{mode}: warp error {runs[mode]['warp_error']:.5f}, style loss {runs[mode]['style_loss']:.4g}, "
                  f"{runs[mode]['seconds_per_frame']:.2f} s/frame", flush=True)
    rows = [{"mode": mode, **{k: v for k, v in run.items() if k != "frames"}} for mode, run in runs.items()]
    extra = {}
    if {"independent", "temporal"} <= set(runs):
        extra["warp_error_ratio"] = (runs["independent"]["warp_error_first_frames"]
                                     / runs["temporal"]["warp_error_first_frames"])
        extra["independent_frames"] = independent_frames
        print(f"warp error over the first {independent_frames} frames: {extra['warp_error_ratio']:.2f}x lower with "
              "the temporal term")
    write_report(args.output, "video", rows, frames=args.frames, size=args.size, iterations=args.iterations,
                 frame_iterations=args.frame_iterations, temporal_weight=args.temporal_weight,
                 flow_preset=args.flow_preset, model=args.model, style=Path(args.style).name,
                 input_warp_error=sequence_warp_error(shot, flows, masks), flow_presets=presets, **extra)
    count = min(6, independent_frames)
    _strip(shot, runs, flows, args.strip, max(0, independent_frames // 2 - count // 2), count, min(192, args.size))


if __name__ == "__main__":
    main()
