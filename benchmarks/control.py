"""Control benchmarks (issue 14): each renders one control beside the plain render of the same
pair and writes a small labelled sheet to look at, and the timings beside it.

    python benchmarks/control.py photo               # 384 px: content | style | plain gram | --photo
    python benchmarks/control.py photo --size 256

photo: tubingen in the look of a night photo (hoovertowernight, used as the style), plain Gram
against the photorealistic preset (``photo = true``: Luan et al.'s matting-Laplacian term).
Writes benchmarks/results/control/photo.png and photo.json (each render's time, evaluations and
final loss terms, and the term's own cost per evaluation). Reads ../shared/images beside the
checkout.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _report import write_report
from PIL import Image
from quality import SHARED, _sheet, _tile

from styleforge.engine import PHOTO_PRESET, RenderConfig, load_image, render, resize_to
from styleforge.engine.objectives import PhotorealismTerm

OUT = Path(__file__).resolve().parent / "results" / "control"


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
    return {"build_seconds": round(build, 4), "seconds_per_evaluation": round((time.perf_counter() - started) / repeats, 4)}


def _palette_png(path: Path) -> None:
    """Rewrite a sheet with 256 colours: 600 KB -> under 200 KB, no difference to see at its size."""
    with Image.open(path) as sheet:
        small = sheet.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


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
    _palette_png(out / "photo.png")
    write_report(out / "photo.json", "control: photorealism", rows, size=size,
                 preset={name: photo_config.to_dict()[name] for name in PHOTO_PRESET})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="control", required=True)
    photo_parser = commands.add_parser("photo", help="tubingen as a night photo: plain gram against --photo")
    photo_parser.add_argument("--size", type=int, default=384)
    photo_parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"the control benchmarks read {SHARED}, which is not there")
    if args.control == "photo":
        photo(args.size, args.out)


if __name__ == "__main__":
    main()
