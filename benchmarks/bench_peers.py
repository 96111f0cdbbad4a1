"""A peer on the same weights: pastiche (plain PyTorch Gatys) against styleforge, per evaluation.

pastiche 1.6.0 renders with exactly the weights of ``vgg19-oxford-8bit`` (its own 8-bit VGG19,
dequantised the same way), so the two sides differ only in how they compute. Both run the same
pair, size (long side), layers (pastiche's defaults: content relu4_2, style relu1_1 ... relu5_1),
pooling (max), start (the content) and optimiser (L-BFGS); pastiche with its own loss weights
(no TV), styleforge with its own (TV included: a negligible cost).

Seconds per evaluation come from two iteration counts: each (side, count) runs in a fresh
process, timed from before the network is built to the final image, and
``(t(N2) - t(N1)) / (evaluations(N2) - evaluations(N1))`` cancels imports, weights, targets and
first-call warm-up. Sides alternate within each round (pastiche, styleforge at ``--precision
auto``, styleforge fp32), so a neighbour's load falls on all of them. Each child's peak RSS is
its own. The final picture of each side (at N2) is saved beside the JSON.

    pip install '.[bench]'                                   # pastiche (never needed by styleforge)
    python benchmarks/bench_peers.py                         # 512 px, iterations 5 and 15, 2 rounds
    python benchmarks/bench_peers.py --size 64 --iterations 1 2 --rounds 1 --output /tmp/peers.json  # dry run

Goal on a CPU: styleforge at least 2x pastiche per evaluation at 512 px, and never behind in fp32.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from _report import write_report  # noqa: E402

from styleforge import engine  # noqa: E402

MODEL = "vgg19-oxford-8bit"
CONTENT_LAYERS = ("relu4_2",)
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
SIDES = {"pastiche": None, "styleforge": "auto", "styleforge-fp32": "fp32"}  # side -> styleforge precision


def _pastiche_layer(tap: str) -> str:
    """``relu4_2`` -> pastiche's ``block4_relu2``."""
    block, index = tap[4:].split("_")
    return f"block{block}_relu{index}"


def pastiche_run(content: str, style: str, size: int, iterations: int, picture: Path) -> int:
    """pastiche's own loop (its ``main`` without the printing): one closure per ``draw``."""
    from pastiche.pastiche import PasticheArtist, save_image  # only the child that runs pastiche needs it

    artist = PasticheArtist(content, [style], device="cpu", size=size, optimizer="lbfgs", pooling="max",
                            content_layers=[_pastiche_layer(t) for t in CONTENT_LAYERS],
                            style_layers=[_pastiche_layer(t) for t in STYLE_LAYERS])
    evaluations = 0
    calc_loss = artist._calc_loss

    def counted():
        nonlocal evaluations
        evaluations += 1
        return calc_loss()

    artist._calc_loss = counted
    for _ in range(iterations):
        artist.draw()
    save_image(artist.pastiche, str(picture))
    return evaluations


def styleforge_run(content: str, style: str, size: int, iterations: int, precision: str, picture: Path) -> int:
    config = engine.RenderConfig(model=MODEL, size=size, levels=1, iterations=iterations, init="content",
                                 content_layers=CONTENT_LAYERS, style_layers=STYLE_LAYERS, pooling="max",
                                 optimizer="lbfgs", precision=precision, device="cpu", backend="torch")
    events: list[int] = []
    result = engine.render(config, engine.load_image(content), [engine.load_image(style)],
                           callback=lambda event: events.append(event.iteration))
    engine.save_image(result.image, picture, overwrite=True)  # an earlier round's picture of this run
    return len(events)


def child(side: str, args: argparse.Namespace, iterations: int) -> dict:
    engine.use_physical_cores()  # styleforge does this itself; pastiche gets the same threads
    picture = args.output.with_suffix("") / f"{side}_{iterations}.png"
    picture.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if side == "pastiche":
        evaluations = pastiche_run(args.content, args.style, args.size, iterations, picture)
    else:
        evaluations = styleforge_run(args.content, args.style, args.size, iterations, SIDES[side], picture)
    return {"side": side, "iterations": iterations, "evaluations": evaluations,
            "seconds": time.perf_counter() - started, "picture": str(picture),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "threads": torch.get_num_threads()}


def _spawn(side: str, args: argparse.Namespace, iterations: int) -> dict:
    command = [sys.executable, __file__, "--child", side, "--child-iterations", str(iterations), "--size",
               str(args.size), "--content", args.content, "--style", args.style, "--output", str(args.output)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{side} failed: {done.stderr.strip().splitlines()[-3:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def per_evaluation(short: dict, long: dict) -> float:
    """Seconds per evaluation from two runs of one side: start-up cancels in the difference."""
    extra = long["evaluations"] - short["evaluations"]
    if extra <= 0:
        raise SystemExit(f"{long['side']}: {long['evaluations']} evaluations at {long['iterations']} iterations, "
                         f"not more than {short['evaluations']} at {short['iterations']}")
    return (long["seconds"] - short["seconds"]) / extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="long side of both renders")
    parser.add_argument("--iterations", type=int, nargs=2, default=(5, 15), metavar=("N1", "N2"),
                        help="the two iteration counts whose difference is timed")
    parser.add_argument("--rounds", type=int, default=2, help="the sides alternate this many times")
    parser.add_argument("--content", default=str(ROOT.parent / "examples" / "tubingen.jpg"))
    parser.add_argument("--style", default=str(ROOT.parent / "examples" / "starry_night.jpg"))
    parser.add_argument("--output", type=Path, default=ROOT / "results" / "peers.json")
    parser.add_argument("--child", choices=tuple(SIDES), help=argparse.SUPPRESS)
    parser.add_argument("--child-iterations", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args, args.child_iterations)))
        return
    short, long = sorted(args.iterations)
    engine.resolve_weights(MODEL)  # fetched once here, not inside a timed child

    per_side: dict[str, list[float]] = {side: [] for side in SIDES}
    runs: list[dict] = []
    for round_ in range(args.rounds):
        for side in SIDES:
            pair = [_spawn(side, args, short), _spawn(side, args, long)]
            runs += pair
            per_side[side].append(per_evaluation(*pair))
            print(f"round {round_ + 1} {side:16s} {per_side[side][-1] * 1000:9.1f} ms/evaluation "
                  f"({pair[1]['evaluations']} - {pair[0]['evaluations']} evaluations), peak RSS "
                  f"{pair[1]['peak_rss_bytes'] / 2**30:.2f} GiB", flush=True)
    rows = []
    for side, values in per_side.items():
        mine = [run for run in runs if run["side"] == side]
        rows.append({"side": side, "seconds_per_evaluation": statistics.median(values),
                     "seconds_per_evaluation_rounds": values,
                     "peak_rss_bytes": max(run["peak_rss_bytes"] for run in mine),
                     "picture": mine[-1]["picture"], "threads": mine[-1]["threads"]})
    by_side = {row["side"]: row["seconds_per_evaluation"] for row in rows}
    speedups = {side: by_side["pastiche"] / by_side[side] for side in SIDES if side != "pastiche"}
    for row in rows:
        print(f"{row['side']:16s} {row['seconds_per_evaluation'] * 1000:9.1f} ms/evaluation, peak RSS "
              f"{row['peak_rss_bytes'] / 2**30:.2f} GiB, picture {row['picture']}")
    for side, speedup in speedups.items():
        print(f"{side} is {speedup:.2f}x pastiche's speed per evaluation")
    write_report(args.output, "peers: pastiche vs styleforge per evaluation, same weights", rows,
                 size=args.size, iterations=[short, long], rounds=args.rounds, model=MODEL,
                 content_layers=CONTENT_LAYERS, style_layers=STYLE_LAYERS, speedup_over_pastiche=speedups,
                 content=Path(args.content).name, style=Path(args.style).name, runs=runs,
                 cpu_flags=sorted(flag for flag in engine.cpu_flags() if flag.startswith(("avx", "amx", "fma"))),
                 cpu_capability=torch.backends.cpu.get_cpu_capability())


if __name__ == "__main__":
    main()
