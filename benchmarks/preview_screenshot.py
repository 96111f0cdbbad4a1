"""The README's picture of the live preview: a render of examples/tubingen.jpg in the style of
examples/starry_night.jpg, paused at a share of its work while headless Chromium (Debian's
``chromium``) photographs the page.

    python benchmarks/preview_screenshot.py              # 256 px, vgg16-hed (README's picture) -> results/preview.png
    python benchmarks/preview_screenshot.py --size 96 --model vgg16-random --at 0.3   # a quick look
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import threading
import urllib.request
from pathlib import Path

from styleforge.engine import RenderConfig, load_image, open_preview, render

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--model", default="vgg16-hed")
    parser.add_argument("--at", type=float, default=0.7, help="share of the render's work done when photographed")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "preview.png")
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("needs chromium (apt-get install chromium)")

    config = RenderConfig(size=args.size, model=args.model)
    content, style = load_image(ROOT / "examples" / "tubingen.jpg"), load_image(ROOT / "examples" / "starry_night.jpg")
    photographed, paused = threading.Event(), threading.Event()
    with open_preview("0", title="tubingen.jpg in starry_night.jpg:") as server:
        def callback(event):
            server.feed.render_event(event)
            if event.progress >= args.at and not paused.is_set():
                paused.set()
                photographed.wait(300)

        worker = threading.Thread(target=render, args=(config, content, [style]), kwargs={"callback": callback})
        stream = urllib.request.urlopen(server.url + "events", timeout=600)  # a page watching: pictures are taken
        worker.start()
        try:
            while True:  # until the render waits, and the page has a picture
                line = stream.readline()
                if line.startswith(b"data:") and paused.is_set() and json.loads(line[5:])["image_version"]:
                    break
            stream.close()
            subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            "--window-size=800,500", f"--screenshot={args.output}", server.url],
                           capture_output=True, timeout=120, check=True)
        finally:
            photographed.set()
            worker.join()
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
