"""Control sheets (issue 14): regions, colour and photorealism, rendered to look at.

    python benchmarks/control.py sky-map              # benchmarks/data/golden_gate_sky.png from the photo
    python benchmarks/control.py regions --size 384   # results/control/regions.png
    python benchmarks/control.py color --size 384     # results/control/color.png
    python benchmarks/control.py photo --size 384     # results/control/photo.png

``regions``: golden_gate.jpg with the sky in The Starry Night and the rest in The Scream, from the
sky map (each style's map a flat colour: the style is bound to that region). ``color``:
tubingen.jpg in Starry Night with --color-transfer none, luminance and histogram. ``photo``:
tubingen in the look of a night photo (hoovertowernight, used as the style), plain Gram against
the photorealistic preset (``photo = true``: Luan et al.'s matting-Laplacian term), with the
term's own cost per evaluation. Each sheet is labelled (256-colour PNG); control.json (regions,
colour) and photo.json beside them hold each render's time. Reads ../shared/images beside the
checkout; renders with the default model and otherwise default options.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _report import write_report
from PIL import Image
from quality import SHARED, _sheet, _tile  # the quality benchmark's labelled tiles and sheets
from scipy import ndimage

from styleforge.engine import PHOTO_PRESET, RenderConfig, load_image, load_style_maps, render, resize_to
from styleforge.engine.objectives import PhotorealismTerm

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "results" / "control"
SKY_MAP = ROOT / "data" / "golden_gate_sky.png"
SKY, REST = "#0000ff", "#ff0000"


def sky_map(photo: Path = SHARED / "content" / "golden_gate.jpg", path: Path = SKY_MAP) -> Path:
    """Sky blue, everything else red. In each column the sky ends where a run of at least 8 dark
    pixels starts (the towers, then the hills, city and water); the thin cables are shorter runs
    and stay in the sky. A small opening then removes slivers beside the towers."""
    rgb = np.asarray(Image.open(photo).convert("RGB")).astype(np.float32)
    dark = rgb.mean(axis=2) < 125
    # Rows where 8 dark pixels in a row start: a sliding sum over the column.
    run = ndimage.uniform_filter1d(dark.astype(np.float32), size=8, axis=0, origin=-4) > 0.99
    height = dark.shape[0]
    horizon = np.where(run.any(axis=0), run.argmax(axis=0), height)
    sky = np.arange(height)[:, None] < horizon[None, :]
    sky = ndimage.binary_opening(sky, iterations=2)
    colors = np.array([[255, 0, 0], [0, 0, 255]], dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(colors[sky.astype(np.int64)]).save(path, optimize=True)
    return path


def _render(label: str, options: dict, content: str, styles: list[str], **maps) -> tuple[torch.Tensor, dict]:
    config = RenderConfig.from_options(options)
    started = time.perf_counter()
    result = render(config, load_image(SHARED / content), [load_image(SHARED / style) for style in styles], **maps)
    seconds = time.perf_counter() - started
    print(f"{label}: {seconds:.0f} s", flush=True)
    return result.image, {"label": label, "options": options, "seconds": round(seconds, 1),
                          "iterations": result.iterations, "loss": result.losses.get("total")}


def regions(size: int, options: dict) -> tuple[list[Image.Image], list[dict]]:
    """content, map, the two styles, both styles without maps, and the render with the sky in
    Starry Night and the rest in The Scream."""
    styles = ["style/starry_night.jpg", "style/the_scream.jpg"]
    style_images = [load_image(SHARED / style) for style in styles]
    content_map = load_image(SKY_MAP)
    image, row = _render("regions", {"size": size, **options}, "content/golden_gate.jpg", styles,
                         content_map=content_map, style_maps=load_style_maps([SKY, REST], style_images))
    blended, plain = _render("no maps", {"size": size, **options}, "content/golden_gate.jpg", styles)
    tiles = [_tile(load_image(SHARED / "content/golden_gate.jpg"), "golden_gate.jpg"),
             _tile(content_map, "map: sky blue, rest red"), _tile(style_images[0], f"starry_night: map {SKY}"),
             _tile(style_images[1], f"the_scream: map {REST}"), _tile(blended, f"no maps (both styles), {size} px"),
             _tile(image, f"regions, {size} px")]
    return tiles, [row, plain]


def color(size: int, options: dict) -> tuple[list[Image.Image], list[dict]]:
    """tubingen in Starry Night with each colour transfer."""
    tiles = [_tile(load_image(SHARED / "content/tubingen.jpg"), "tubingen.jpg")]
    rows = []
    for transfer in ("none", "luminance", "histogram"):
        image, row = _render(f"color_transfer={transfer}", {"size": size, "color_transfer": transfer, **options},
                             "content/tubingen.jpg", ["style/starry_night.jpg"])
        tiles.append(_tile(image, f"--color-transfer {transfer}, {size} px"))
        rows.append(row)
    return tiles, rows


def _timed_render(config: RenderConfig, content: torch.Tensor, style: torch.Tensor) -> tuple[torch.Tensor, dict]:
    events = []
    started = time.perf_counter()
    result = render(config, content, [style], callback=events.append)
    seconds = time.perf_counter() - started
    return result.image, {"seconds": round(seconds, 1), "evaluations": result.iterations,
                          "seconds_per_evaluation": round(seconds / result.iterations, 4),
                          "losses": events[-1].loss_terms()}


def _term_cost(content: torch.Tensor, shape: tuple[int, int], repeats: int = 20) -> dict:
    """The photo term alone at the output's size: building it once (per level), and one value
    with its gradient (per evaluation)."""
    level = resize_to(content[None].float(), *shape)
    started = time.perf_counter()
    term = PhotorealismTerm(level)
    build = time.perf_counter() - started
    image = (level + 0.05 * torch.randn_like(level)).requires_grad_(True)
    torch.autograd.grad(term.pixel_value(image), image)  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        torch.autograd.grad(term.pixel_value(image), image)
    return {"build_seconds": round(build, 4),
            "seconds_per_evaluation": round((time.perf_counter() - started) / repeats, 4)}


def photo(size: int, out: Path) -> None:
    """content | style | plain gram | --photo, at ``size`` px, and what the term costs."""
    content = load_image(SHARED / "content" / "tubingen.jpg")
    style = load_image(SHARED / "content" / "hoovertowernight.jpg")
    plain_config = RenderConfig(size=size)
    photo_config = RenderConfig.photo_defaults(size=size)
    plain, plain_row = _timed_render(plain_config, content, style)
    photoreal, photo_row = _timed_render(photo_config, content, style)
    term = _term_cost(content, tuple(photoreal.shape[-2:]))
    rows = [{"render": "plain gram", "options": {"size": size}, **plain_row},
            {"render": "--photo", "options": {"photo": True, "size": size}, **photo_row},
            {"render": "photo term alone", **term,
             "share_of_a_plain_evaluation": round(term["seconds_per_evaluation"]
                                                  / plain_row["seconds_per_evaluation"], 3)}]
    for row in rows:
        print(row, flush=True)
    tiles = [_tile(content, "content"), _tile(style, "style (a night photo)"),
             _tile(plain, f"plain gram ({plain_row['seconds']:.0f} s)"),
             _tile(photoreal, f"--photo ({photo_row['seconds']:.0f} s)")]
    out.mkdir(parents=True, exist_ok=True)
    _sheet(tiles, out / "photo.png")
    write_report(out / "photo.json", "control: photorealism", rows, size=size,
                 preset={name: photo_config.to_dict()[name] for name in PHOTO_PRESET})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sheet", choices=["sky-map", "regions", "color", "photo"])
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--option", action="append", default=[], help="a render option, NAME=VALUE (as TOML)")
    args = parser.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"the control benchmarks read {SHARED}, which is not there")
    if args.sheet == "sky-map":
        print(sky_map())
        return
    if args.sheet == "photo":
        photo(args.size, OUT)
        return
    options = dict(item.split("=", 1) for item in args.option)
    tiles, rows = {"regions": regions, "color": color}[args.sheet](args.size, options)
    OUT.mkdir(parents=True, exist_ok=True)
    _sheet(tiles, OUT / f"{args.sheet}.png")  # 256 colours: a few hundred KB
    report = OUT / "control.json"
    data = json.loads(report.read_text()) if report.exists() else {}
    data[args.sheet] = {"command": " ".join(sys.argv), "renders": rows}
    report.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
