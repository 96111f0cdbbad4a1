"""Fewer evaluations: how low each optimiser setting takes the loss for the same work.

Each variant renders the quality benchmark's Gatys pairs (``--model``, vgg16-hed unless given: the
default model when these figures were taken) and records
the loss after every evaluation. Work is counted in full-size evaluations: an evaluation at a
pyramid level of a quarter of the pixels counts a quarter, so a pyramid and a single level get
the same budget. Reported per variant: the final loss (at the output size: the same objective
for every variant, so comparable), the loss after a quarter and half of the budget (single level
only: a pyramid's early losses are at other sizes), the work needed to reach the default's final
loss, and the wall time.

    python benchmarks/bench_convergence.py --size 160 --budget 150          # small, one pair
    python benchmarks/bench_convergence.py --size 192 --pairs tubingen_starry tubingen_scream

Variants are NAME:option=value,... as in quality.py; ``line_search=strong_wolfe`` (not a render
option) runs torch's L-BFGS with its strong-Wolfe line search, several evaluations per step.
The render defaults are not changed here (the schedule is chosen in issue 12): this measures.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from _report import write_report  # noqa: E402
from quality import PAIRS, SHARED  # noqa: E402

from styleforge.engine import RenderConfig, load_image, render  # noqa: E402
from styleforge.engine.batch import parse_option_value  # noqa: E402

#: name -> options. Budgets are set per run (``--budget``); "iterations" here is per level.
VARIANTS = {
    "lbfgs-h50": "levels=1",
    "lbfgs-h10": "levels=1,lbfgs_history=10",
    "lbfgs-h20": "levels=1,lbfgs_history=20",
    "lbfgs-h50-wolfe": "levels=1,line_search=strong_wolfe",
    "adam-0.02": "levels=1,optimizer=adam",
    "adam-0.05": "levels=1,optimizer=adam,learning_rate=0.05",
    "pyramid-3-even": "levels=3,pyramid=even",
    "pyramid-3-fine": "levels=3,pyramid=fine",
}


class _WolfeLBFGS(torch.optim.LBFGS):
    """torch's L-BFGS with the strong-Wolfe line search (the render loop runs it without)."""

    def __init__(self, params, **options):
        options["line_search_fn"] = "strong_wolfe"
        super().__init__(params, **options)


def _schedule(kind: str, levels: int, budget: int, size: int) -> tuple[int, ...]:
    """Iterations per level spending ``budget`` full-size evaluations: "even" gives every level
    the same count (the default's shape), "fine" gives the output level half of the budget."""
    shares = [RenderConfig(size=size, levels=levels).pyramid.level_shapes(None)[i] for i in range(levels)]
    weights = [h * w / (shares[-1][0] * shares[-1][1]) for h, w in shares]
    if kind == "even":
        return (max(1, round(budget / sum(weights))),) * levels
    coarse = budget / 2 / sum(weights[:-1])
    return (*(max(1, round(coarse)) for _ in weights[:-1]), max(1, round(budget / 2)))


def _options(text: str, budget: int, size: int) -> tuple[dict, bool]:
    values = dict(item.split("=", 1) for item in text.split(",") if item)
    wolfe = values.pop("line_search", None) == "strong_wolfe"
    pyramid = values.pop("pyramid", None)
    levels = int(values.get("levels", 1))
    values = {key: parse_option_value(value) for key, value in values.items()}
    values["iterations"] = _schedule(pyramid, levels, budget, size) if pyramid else (budget,)
    return values, wolfe


def run_variant(content, style, size: int, text: str, budget: int, model: str) -> dict:
    values, wolfe = _options(text, budget, size)
    config = RenderConfig.from_options({"size": size, "model": model, "device": "cpu", "backend": "torch", **values})
    areas = [h * w for h, w in config.pyramid.level_shapes(tuple(content.shape[-2:]))]
    work, trace = [0.0], []

    def on_event(event) -> None:
        work[0] += areas[event.level] / areas[-1]
        trace.append((round(work[0], 3), event.level, event.loss))

    original = torch.optim.LBFGS
    torch.optim.LBFGS = _WolfeLBFGS if wolfe else original
    try:
        started = time.perf_counter()
        render(config, content, [style], callback=on_event)
        seconds = time.perf_counter() - started
    finally:
        torch.optim.LBFGS = original
    final_level = len(areas) - 1
    return {"iterations": list(config.pyramid.level_iterations()), "seconds": round(seconds, 1),
            "work": round(work[0], 1), "final_loss": trace[-1][2], "trace": trace, "final_level": final_level}


def _loss_at(trace, fraction: float, budget: int) -> float | None:
    levels = {level for _, level, _ in trace}
    if len(levels) > 1:
        return None
    return next((loss for work, _, loss in trace if work >= fraction * budget), trace[-1][2])


def _work_to_reach(trace, final_level: int, target: float) -> float | None:
    return next((work for work, level, loss in trace if level == final_level and loss <= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--budget", type=int, default=150, help="full-size evaluations per variant")
    parser.add_argument("--pairs", nargs="*", default=["tubingen_starry"],
                        choices=[name for name, pair in PAIRS.items() if pair[3] == "gram"])
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--model", default="vgg16-hed", help="vgg16-random for a dry run (no weights)")
    parser.add_argument("--output", type=Path, default=ROOT / "results" / "convergence.json")
    args = parser.parse_args()

    rows = []
    for pair in args.pairs:
        content_path, style_path = PAIRS[pair][:2]
        content, style = load_image(SHARED / content_path), load_image(SHARED / style_path)
        results = {name: run_variant(content, style, args.size, VARIANTS[name], args.budget, args.model)
                   for name in args.variants}
        target = results[args.variants[0]]["final_loss"]  # the first variant (the default's optimiser)
        for name, result in results.items():
            reached = _work_to_reach(result["trace"], result["final_level"], target)
            quarter, half = (_loss_at(result["trace"], f, args.budget) for f in (0.25, 0.5))
            row = {"pair": pair, "variant": name, "options": VARIANTS[name], **result, "loss_at_quarter": quarter,
                   "loss_at_half": half, "work_to_reach_first_variants_final_loss": reached}
            rows.append(row)
            shown = lambda value: "-" if value is None else f"{value:.4g}"  # noqa: E731
            print(f"{pair:16s} {name:16s} final {result['final_loss']:.4g}  1/4 {shown(quarter):>8s}  "
                  f"1/2 {shown(half):>8s}  work to {target:.4g}: {shown(reached):>6s}  "
                  f"{result['seconds']:6.1f} s  iterations {result['iterations']}", flush=True)
    write_report(args.output, "convergence: loss after the same work per optimiser setting", rows,
                 size=args.size, budget=args.budget, model=args.model, finite=all(math.isfinite(r["final_loss"])
                                                                                  for r in rows))


if __name__ == "__main__":
    main()
