"""Control sheets (issue 14): regions and colour, rendered to look at.

    python benchmarks/control.py sky-map              # benchmarks/data/golden_gate_sky.png from the photo
    python benchmarks/control.py regions --size 384   # results/control/regions.png
    python benchmarks/control.py color --size 384     # results/control/color.png

``regions``: golden_gate.jpg with the sky in The Starry Night and the rest in The Scream, from the
sky map (each style's map a flat colour: the style is bound to that region). ``color``:
tubingen.jpg in Starry Night with --color-transfer none, luminance and histogram. Each sheet is
labelled, and control.json beside it holds each render's time. Reads ../shared/images beside
the checkout; renders with the default weights (vgg16-hed) and otherwise default options.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from quality import _sheet, _tile  # the quality benchmark's labelled tiles and sheets
from scipy import ndimage

from styleforge.engine import RenderConfig, load_image, load_style_maps, render

ROOT = Path(__file__).resolve().parent
SHARED = ROOT.parent.parent / "shared" / "images"
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sheet", choices=["sky-map", "regions", "color"])
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--option", action="append", default=[], help="a render option, NAME=VALUE (as TOML)")
    args = parser.parse_args()
    if args.sheet == "sky-map":
        print(sky_map())
        return
    options = dict(item.split("=", 1) for item in args.option)
    tiles, rows = {"regions": regions, "color": color}[args.sheet](args.size, options)
    OUT.mkdir(parents=True, exist_ok=True)
    sheet = OUT / f"{args.sheet}.png"
    _sheet(tiles, sheet)
    with Image.open(sheet) as picture:  # 256 colours keep a sheet a few hundred KB
        picture.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(sheet, optimize=True)
    report = OUT / "control.json"
    data = json.loads(report.read_text()) if report.exists() else {}
    data[args.sheet] = {"command": " ".join(sys.argv), "renders": rows}
    report.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
