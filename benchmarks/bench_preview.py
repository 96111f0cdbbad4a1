"""What the live preview costs a render: the same render with no preview and with a page watching
(an event-stream client connected, so a picture is taken and encoded up to max_fps times a
second), alternated, and the render thread's own share of the hand-off at larger images.

    python benchmarks/bench_preview.py                          # 256 px, 40 iterations, 3 pairs
    python benchmarks/bench_preview.py --size 64 --iterations 5 --pairs 1 --model vgg16-random   # a quick look

Writes benchmarks/results/preview.json.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import threading
import time
import urllib.request
from pathlib import Path

import torch
from _report import write_report

from styleforge.engine import RenderConfig, RenderEvent, load_image, open_preview, render
from styleforge.engine.preview import PreviewFeed

IMAGES = Path(__file__).resolve().parents[1] / "tests" / "data"


def _watch(url: str, stop: threading.Event) -> None:
    """An open page: reads the event stream until told to stop."""
    with urllib.request.urlopen(url + "events", timeout=600) as stream:
        while not stop.is_set() and stream.readline():
            pass


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread: torch's pool, the server's
    return usage.ru_utime + usage.ru_stime


def _render_seconds(config: RenderConfig, content, style, preview: bool) -> tuple[float, float, int, float]:
    """(wall seconds of the render, CPU seconds of the whole process meanwhile, pictures sent,
    CPU seconds the preview spent: pictures in the render thread, and all of the server's thread:
    HTTP, the event stream, reading the losses, the JPEGs)."""
    if not preview:
        cpu = _cpu_seconds()
        result = render(config, content, [style])
        return result.elapsed, _cpu_seconds() - cpu, 0, 0.0
    stop = threading.Event()
    with open_preview("0") as server:
        watcher = threading.Thread(target=_watch, args=(server.url, stop), daemon=True)
        watcher.start()
        while server.feed.watchers == 0:
            time.sleep(0.01)
        cpu, server_cpu = _cpu_seconds(), server.cpu_seconds()
        result = render(config, content, [style], callback=server.feed.render_event)
        cpu, server_cpu = _cpu_seconds() - cpu, server.cpu_seconds() - server_cpu
        pictures = server.feed.snapshot().image_version
        stop.set()
        spent = server.feed.picture_cpu_seconds + server_cpu  # the render thread's pictures, the server thread
    return result.elapsed, cpu, pictures, spent


def _hand_off_ms(side: int, repeats: int = 20) -> dict:
    """Milliseconds the render thread spends in render_event with a page watching: with a picture
    (the area reduction to 512 px) and without (the usual case: at most max_fps calls a second
    take one)."""
    image = torch.rand(3, side * 9 // 16, side)
    feed = PreviewFeed()
    feed.watchers = 1
    event = RenderEvent(1, 10, {"total": torch.tensor(1.0)}, 0.0, 0, image, progress=0.1)
    with_picture, without = [], []
    for _ in range(repeats):
        feed._picture, feed._picture_at = None, 0.0
        start = time.perf_counter()
        feed.render_event(event)
        with_picture.append((time.perf_counter() - start) * 1e3)
        start = time.perf_counter()
        feed.render_event(event)  # the picture just taken is still waiting: none taken
        without.append((time.perf_counter() - start) * 1e3)
    return {"width": side, "height": side * 9 // 16, "ms_with_picture": statistics.median(with_picture),
            "ms_without_picture": statistics.median(without),
            "share_at_2_pictures_per_s": 2 * statistics.median(with_picture) / 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--model", default="vgg16-random")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "preview.json")
    args = parser.parse_args()

    content, style = load_image(IMAGES / "tubingen.jpg"), load_image(IMAGES / "starry_night.jpg")
    config = RenderConfig(size=args.size, iterations=args.iterations, model=args.model, device="cpu")
    render(config.replace({"iterations": 2}), content, [style])  # warm-up: weights, allocator, bf16 probe
    plain, watched, plain_cpu, watched_cpu, pictures, preview_cpu = [], [], [], [], [], []
    for pair in range(args.pairs):  # alternated, so drift in the machine's load hits both alike
        order = (False, True) if pair % 2 == 0 else (True, False)
        for preview in order:
            seconds, cpu, taken, spent = _render_seconds(config, content, style, preview)
            (watched if preview else plain).append(seconds)
            (watched_cpu if preview else plain_cpu).append(cpu)
            if preview:
                pictures.append(taken)
                preview_cpu.append(spent / cpu)
            print(f"pair {pair + 1}: {'preview' if preview else 'plain  '} {seconds:.2f} s, {cpu:.2f} CPU s"
                  + (f" ({taken} pictures; the preview's own CPU {spent * 1e3:.1f} ms = {spent / cpu:.3%})"
                     if preview else ""), flush=True)
    overhead = statistics.median(watched) / statistics.median(plain) - 1
    cpu_overhead = statistics.median(watched_cpu) / statistics.median(plain_cpu) - 1
    print(f"median {statistics.median(plain):.2f} s plain, {statistics.median(watched):.2f} s with a page watching: "
          f"{overhead:+.1%}; CPU time {cpu_overhead:+.1%}; the preview's own CPU time, median "
          f"{statistics.median(preview_cpu):.3%} of the render's (load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs)")
    hand_off = [_hand_off_ms(side) for side in (512, 1920, 3840)]
    for row in hand_off:
        print(f"hand-off at {row['width']}x{row['height']}: {row['ms_with_picture']:.2f} ms with a picture, "
              f"{row['ms_without_picture'] * 1e3:.1f} us without; "
              f"at 2 pictures/s {row['share_at_2_pictures_per_s']:.2%}")
    write_report(args.output, "preview", [{"plain_seconds": plain, "preview_seconds": watched,
                                           "plain_cpu_seconds": plain_cpu,
                                           "preview_cpu_seconds": watched_cpu, "pictures": pictures,
                                           "overhead": overhead, "cpu_overhead": cpu_overhead,
                                           "preview_cpu_share": preview_cpu, "load_average": os.getloadavg()[0]}],
                 size=args.size, iterations=args.iterations, model=args.model, threads=torch.get_num_threads(),
                 hand_off=hand_off)


if __name__ == "__main__":
    main()
