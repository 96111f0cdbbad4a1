"""The quality benchmark: every reference pair rendered with the default and with each variant
under study, as one labelled contact sheet per pair, to look at.

    python benchmarks/quality.py                                   # the default, 512 px, every pair
    python benchmarks/quality.py --size 256 --variant w2:style_loss=w2 --variant sliced:style_loss=sliced
    python benchmarks/quality.py --pairs tubingen_starry --variant single:levels=1,iterations=250

Pairs: neural-style's five reference renders (tubingen x starry_night, the_scream, seated-nude,
shipwreck; golden_gate x starry_night), CNNMRF's portrait x Picasso with method mrf, and
neural-doodle's Coastline map x Monet; ``--pairs unseen``: four pairs of photos and paintings no
default was tuned on (no reference). Each sheet (benchmarks/results/quality/PAIR.png) shows
content, style, the reference where there is one, ours with the default and with each variant,
labelled; QUALITY.json beside them holds each render's time, iterations and final loss terms.
A variant is NAME:option=value,option=value (render options as the CLI and TOML spell them;
``iterations=50,200`` is one option). ``neural_style=1`` renders a Gram pair at neural-style's own
settings, its weights mapped onto ours for that pair (benchmarks/_neural_style.py):

    python benchmarks/quality.py --variant-methods gram --variant ns:model=vgg19-oxford-8bit,neural_style=1

Reads ../shared/images beside the checkout.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from styleforge.engine import RenderConfig, load_image, read_metadata, render, resize_to, save_image
from styleforge.engine.batch import parse_option_value

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from _neural_style import mapped_weights  # noqa: E402
SHARED = ROOT.parent.parent / "shared" / "images"
OUT = ROOT / "results" / "quality"

#: name -> (content, style, reference, method, maps (content map, style map) or None)
PAIRS = {
    "tubingen_starry": ("content/tubingen.jpg", "style/starry_night.jpg", "reference/neural-style_tubingen_starry.png",
                        "gram", None),
    "tubingen_scream": ("content/tubingen.jpg", "style/the_scream.jpg", "reference/neural-style_tubingen_scream.png",
                        "gram", None),
    "tubingen_seated_nude": ("content/tubingen.jpg", "style/seated-nude.jpg",
                             "reference/neural-style_tubingen_seated_nude.png", "gram", None),
    "tubingen_shipwreck": ("content/tubingen.jpg", "style/shipwreck.jpg",
                           "reference/neural-style_tubingen_shipwreck.png", "gram", None),
    "golden_gate_starry": ("content/golden_gate.jpg", "style/starry_night.jpg",
                           "reference/neural-style_golden_gate_starry.png", "gram", None),
    "portrait_picasso_mrf": ("content/cnnmrf_portrait.jpg", "style/cnnmrf_picasso.jpg",
                             "reference/cnnmrf_portrait_picasso.png", "mrf", None),
    "coastline_monet_doodle": (None, "doodle/Monet.jpg", None, "mrf",
                               ("doodle/Coastline_sem.png", "doodle/Monet_sem.png")),
}
#: Pairs no default was tuned on (photos and paintings outside PAIRS' seven; no reference): a new
#: default is looked at on these too (``--pairs unseen``).
UNSEEN = {
    "brad_pitt_matisse": ("content/brad_pitt.jpg", "style/woman-with-hat-matisse.jpg", None, "gram", None),
    "brad_pitt_picasso": ("content/brad_pitt.jpg", "style/picasso_selfport1907.jpg", None, "gram", None),
    "hoovertowernight_frida": ("content/hoovertowernight.jpg", "style/frida_kahlo.jpg", None, "gram", None),
    "golden_gate_escher": ("content/golden_gate.jpg", "style/escher_sphere.jpg", None, "gram", None),
}
REFERENCE_PAIRS = list(PAIRS)
PAIRS |= UNSEEN
_THUMB = 256  # height of each picture on a sheet


def _variant(text: str) -> tuple[str, dict]:
    name, _, options = text.partition(":")
    values = {}
    for item in filter(None, re.split(r",(?=\s*\w+\s*=)", options)):  # iterations=50,100 is one option
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--variant {text!r}: expected NAME:option=value,...")
        values[key.strip()] = parse_option_value(value.strip())
    return name, values


def _config(method: str, size: int | None, options: dict) -> RenderConfig:
    values = {"method": method, **({"size": size} if size is not None else {}), **options}
    values.pop("neural_style", None)
    return RenderConfig.from_options(values)  # the method's and the model's defaults, as the CLI has them


def _with_neural_style(options: dict, content: torch.Tensor | None, style: torch.Tensor, size: int | None) -> dict:
    """``neural_style=1``: neural-style's settings for this pair (one level of 1000 iterations from
    its gray start, its layers, its weights mapped onto ours: benchmarks/_neural_style.py); the
    variant's other options override them (``neural_style=1,iterations=300`` while exploring)."""
    if not options.get("neural_style") or content is None:
        return options  # _config drops the neural_style key
    model = options.get("model", RenderConfig().runtime.model)
    return {**mapped_weights(model, content, style, size or RenderConfig().pyramid.size), **options}


def _pair_config(name: str, options: dict, size: int | None) -> tuple[RenderConfig, torch.Tensor | None,
                                                                       torch.Tensor]:
    """The pair's config for a variant's options, with its content and style images."""
    content_path, style_path, _, method, _ = PAIRS[name]
    content = load_image(SHARED / content_path) if content_path else None
    style = load_image(SHARED / style_path)
    return _config(method, size, _with_neural_style(options, content, style, size)), content, style


def _render_pair(name: str, label: str, options: dict, size: int | None) -> tuple[torch.Tensor, dict]:
    config, content, style = _pair_config(name, options, size)
    maps = PAIRS[name][4]
    extra = {}
    if maps is not None:
        extra = {"content_map": load_image(SHARED / maps[0]), "style_maps": [load_image(SHARED / maps[1])]}
    events = []
    started = time.perf_counter()
    result = render(config, content, [style], callback=lambda e: events.append(e), **extra)
    seconds = time.perf_counter() - started
    terms = events[-1].loss_terms() if events else {}
    row = {"pair": name, "variant": label, "options": options, "size": config.pyramid.size,
           "seconds": round(seconds, 1), "iterations": result.iterations, "losses": terms,
           "config": config.to_dict()}
    print(f"{name:24s} {label:10s} {seconds:7.1f} s  {result.iterations} iterations  "
          f"total {terms.get('total', float('nan')):.4g}", flush=True)
    return result.image, row


def _kept_render(path: Path, name: str, label: str, options: dict,
                 size: int | None) -> tuple[torch.Tensor, dict] | None:
    """A render kept by an earlier --keep-renders run of the same pair and variant, with the same
    resolved options: the same variant options mean another render once a default they leave
    open has changed, so a kept render without its resolved options is not reused."""
    row = read_metadata(path) if path.is_file() else None
    if not row or row.get("config") is None:
        return None
    if row["config"] != _pair_config(name, options, size)[0].to_dict():
        return None
    print(f"{name:24s} {label:10s} reused {path}", flush=True)
    return load_image(path), row


def _tile(image: torch.Tensor, text: str) -> Image.Image:
    height, width = image.shape[-2:]
    thumb = resize_to(image, _THUMB, max(1, round(width * _THUMB / height)))
    array = (thumb.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    picture = Image.new("RGB", (array.shape[1], _THUMB + 22), "white")
    picture.paste(Image.fromarray(array), (0, 22))
    ImageDraw.Draw(picture).text((4, 4), text, fill="black")
    return picture


def _sheet(tiles: list[Image.Image], path: Path) -> None:
    width = sum(tile.width for tile in tiles) + 6 * (len(tiles) - 1)
    sheet = Image.new("RGB", (width, tiles[0].height), "white")
    x = 0
    for tile in tiles:
        sheet.paste(tile, (x, 0))
        x += tile.width + 6
    # 256 colours with dithering: a sheet is ~4x smaller than full-colour PNG and looks the same at
    # this size (the full-size renders, --keep-renders, are what one judges detail on).
    sheet.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG).save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", nargs="*", default=REFERENCE_PAIRS, choices=[*PAIRS, "unseen"],
                        help="default: the seven with a reference; 'unseen': the pairs no default was tuned on")
    parser.add_argument("--variant", action="append", default=[], help="NAME:option=value,... (repeat)")
    parser.add_argument("--size", type=int, default=None, help="long side (default: each method's default)")
    parser.add_argument("--variant-methods", nargs="+", default=["gram", "mrf"], choices=["gram", "mrf"],
                        help="the variants apply to the pairs of these methods (the default renders for all)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--skip-default", action="store_true",
                        help="render only the variants (while exploring; such a sheet lacks the default)")
    parser.add_argument("--keep-renders", action="store_true", help="also save each render as a full-size PNG")
    parser.add_argument("--reuse", action="store_true",
                        help="with --keep-renders: a variant whose full-size render is kept in --out with the same "
                             "resolved options (the variant's on today's defaults, size included) is read back, not "
                             "rendered again (a sheet can grow run by run)")
    args = parser.parse_args()
    args.pairs = [pair for name in args.pairs for pair in (UNSEEN if name == "unseen" else [name])]
    if not SHARED.is_dir():
        raise SystemExit(f"the quality benchmark reads {SHARED}, which is not there")
    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    variants = ([] if args.skip_default else [("default", {})]) + [_variant(text) for text in args.variant]
    report_path = args.out / "QUALITY.json"
    rows = json.loads(report_path.read_text())["renders"] if report_path.exists() else []
    for name in args.pairs:
        content_path, style_path, reference, _, maps = PAIRS[name]
        first = content_path or maps[0]
        tiles = [_tile(load_image(SHARED / first), "content" if content_path else "content map"),
                 _tile(load_image(SHARED / style_path), "style")]
        if reference is not None:
            tiles.append(_tile(load_image(SHARED / reference), "reference"))
        method = PAIRS[name][3]
        for label, options in variants:
            # A variant that is the default is skipped when the default is on the sheet anyway.
            same_as_default = (not args.skip_default and not options.get("neural_style")
                               and _config(method, args.size, options) == _config(method, args.size, {}))
            if label != "default" and (method not in args.variant_methods or same_as_default):
                print(f"{name:24s} {label:10s} not a variant of this pair's method or the default: skipped",
                      flush=True)
                continue
            kept = args.out / f"{name}_{label}.png"
            reused = _kept_render(kept, name, label, options, args.size) if args.reuse else None
            image, row = reused if reused is not None else _render_pair(name, label, options, args.size)
            rows = [r for r in rows if not (r["pair"] == name and r["variant"] == label and r["size"] == row["size"])]
            rows.append(row)
            tiles.append(_tile(image, f"{label} ({row['size']} px, {row['seconds']:.0f} s)"))
            if args.keep_renders and reused is None:
                kept.unlink(missing_ok=True)
                save_image(image, kept, metadata=row)
        _sheet(tiles, args.out / f"{name}.png")
        report_path.write_text(json.dumps({"command": " ".join(sys.argv), "renders": rows}, indent=2) + "\n")
        print(f"wrote {args.out / f'{name}.png'}", flush=True)


if __name__ == "__main__":
    main()
