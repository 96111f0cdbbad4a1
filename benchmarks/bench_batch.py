"""Jobs per hour of `styleforge batch`: shared style targets on/off, I/O overlapped with the
renders or in turn (local-in-turn: read, render, write one after another), local vs Ray.

    python benchmarks/bench_batch.py                                  # 100 jobs, 4 styles, 512 px
    python benchmarks/bench_batch.py --jobs 16 --size 128 --iterations 10 --model vgg19-random

Contents cycle through ../shared/images/content, styles through four paintings, so every style is
shared by a quarter of the jobs. Each mode renders into its own folder.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _report import write_report

from styleforge.engine import TargetCache, load_manifest, run_batch

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "images"
STYLES = ["starry_night.jpg", "the_scream.jpg", "shipwreck.jpg", "woman-with-hat-matisse.jpg"]


class NoSharing(TargetCache):
    """Computes every target, as a batch without the shared cache would."""

    def get(self, key, compute):
        self.computed += 1
        return compute()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--model", default="vgg16-hed")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--modes", nargs="+", default=["local-shared", "local-in-turn", "local-unshared", "ray"],
                        choices=["local-shared", "local-in-turn", "local-unshared", "ray"])
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "batch.json")
    args = parser.parse_args()

    contents = sorted((SHARED / "content").glob("*.jpg"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="styleforge-bench-batch-") as scratch:
        for mode in args.modes:
            manifest = Path(scratch) / f"{mode}.jsonl"
            lines = [json.dumps({"defaults": {"size": args.size, "iterations": args.iterations,
                                              "model": args.model, "device": args.device}})]
            for index in range(args.jobs):
                lines.append(json.dumps({
                    "content": str(contents[index % len(contents)]),
                    "style": str(SHARED / "style" / STYLES[index % len(STYLES)]),
                    "output": str(Path(scratch) / mode / f"{index:04d}.png"),
                }))
            manifest.write_text("\n".join(lines) + "\n")
            jobs = load_manifest(manifest)
            cache = NoSharing() if mode == "local-unshared" else TargetCache()
            start = time.perf_counter()
            outcomes = run_batch(jobs, cache=cache, ray_address="auto" if mode == "ray" else None,
                                 overlap=mode != "local-in-turn")
            seconds = time.perf_counter() - start
            failed = sum(o.status == "failed" for o in outcomes)
            row = {"mode": mode, "jobs": len(jobs), "failed": failed, "seconds": round(seconds, 2),
                   "jobs_per_hour": round(len(jobs) / seconds * 3600, 1),
                   "targets_computed": cache.computed}
            rows.append(row)
            print(row, flush=True)
    write_report(args.output, "styleforge batch, jobs per hour", rows,
                 settings=vars(args) | {"output": str(args.output)})


if __name__ == "__main__":
    main()
