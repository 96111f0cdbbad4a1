"""A benchmark report people can read: ``bench.json`` (the rows and the machine), PNG charts and
a markdown summary in one folder, so two machines' folders can be laid side by side.

Rows are ``BackendTiming.to_dict()`` plus ``precision`` and ``share_of_matrix_rate``, as
``styleforge bench`` measures them; benchmarks/gpu writes the same folders through
``write_bench_report``. matplotlib (the ``bench`` extra) draws the charts and is imported when a
report is written.
"""

from __future__ import annotations

import datetime
import importlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._errors import InputError
from .._files import write_json_atomic

__all__ = ["REPORT_FILES", "check_report_folder", "compare_bench_reports", "machine_lines", "read_bench_report",
           "write_bench_report"]

#: What a report folder holds.
REPORT_FILES = ("bench.json", "README.md", "seconds_per_iteration.png", "share_of_matrix_rate.png",
                "peak_memory.png")
_CHARTS = {  # file -> (y label, value of a row, log y); megapixels on a log x
    "seconds_per_iteration.png": ("seconds per iteration", lambda row: row["ms_per_iteration"] / 1e3, True),
    "share_of_matrix_rate.png": ("share of the measured matrix rate (%)",
                                 lambda row: 100 * row["share_of_matrix_rate"], False),
    "peak_memory.png": ("peak memory (GiB)", lambda row: row["peak_memory_bytes"] / 2**30, False),
}


def _megapixels(row: Mapping[str, Any]) -> float:
    return row["width"] * row["height"] / 1e6


def _series(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Rows by "backend precision", each series ordered by size."""
    series: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        series.setdefault(f"{row['backend']} {row.get('precision', '?')}", []).append(row)
    return {name: sorted(values, key=_megapixels) for name, values in series.items()}


def _title(machine: Mapping[str, Any]) -> str:
    return str(machine.get("gpu") or f"{machine.get('cpu', 'CPU')} ({machine.get('threads', '?')} threads)")


def _matplotlib_figure() -> Any:
    try:
        return importlib.import_module("matplotlib.figure")
    except ImportError as error:
        raise InputError(f"bench --report draws its charts with matplotlib, which is not installed ({error}); "
                         "pip install 'styleforge[bench]'") from None


def check_report_folder(folder: str | Path) -> None:
    """Before any measuring: matplotlib is there, and ``folder`` is a folder (or can be made) that
    holds no files but an earlier report's."""
    _matplotlib_figure()
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--report {folder}: exists and is not a folder")
    if folder.is_dir():
        strangers = sorted(path.name for path in folder.iterdir() if path.name not in REPORT_FILES)
        if strangers:
            raise InputError(f"--report {folder}: holds files that are not a report's ({', '.join(strangers[:3])}); "
                             "choose an empty or new folder")


def _draw(rows: Sequence[Mapping[str, Any]], machine: Mapping[str, Any], folder: Path) -> None:
    figure_module = _matplotlib_figure()
    plain = importlib.import_module("matplotlib.ticker").FuncFormatter(lambda value, _: f"{value:g}")
    for name, (label, value, log) in _CHARTS.items():
        figure = figure_module.Figure(figsize=(6.4, 4.0), dpi=100, layout="constrained")
        axes = figure.add_subplot()
        for series, points in _series(rows).items():
            axes.plot([_megapixels(row) for row in points], [value(row) for row in points], marker="o", label=series)
        axes.set_xlabel("megapixels")
        axes.set_ylabel(label)
        axes.set_title(f"{label}: {_title(machine)}", fontsize=10)
        axes.set_xscale("log")
        if log:
            axes.set_yscale("log")
            axes.yaxis.set_major_formatter(plain)  # 0.5, not 5 x 10^-1
            axes.yaxis.set_minor_formatter(plain)
        sizes = sorted({_megapixels(row) for row in rows})
        axes.set_xticks(sizes, [f"{size:.3g}" for size in sizes])  # ticks at the sizes measured
        axes.xaxis.set_minor_formatter(importlib.import_module("matplotlib.ticker").NullFormatter())
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=8)
        figure.savefig(folder / name)


def _gib(value: Any) -> str:
    return f"{value / 2**30:.1f} GiB" if isinstance(value, (int, float)) else "-"


def machine_lines(machine: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, text) pairs describing a machine, in the order a reader compares them."""
    gpu = machine.get("gpu")
    return [
        ("CPU", f"{machine.get('cpu', '?')}, {machine.get('physical_cores', '?')} physical cores, "
                f"{machine.get('threads', '?')} threads"),
        ("CPU flags", " ".join(machine.get("cpu_flags") or []) or "-"),
        ("memory", _gib(machine.get("memory_bytes"))),
        ("GPU", f"{gpu}, {_gib(machine.get('gpu_memory_bytes'))}, compute capability "
                f"{machine.get('compute_capability', '?')}" if gpu else "none"),
        ("software", f"torch {machine.get('torch', '?')}, CUDA {machine.get('cuda') or '-'}, "
                     f"Python {machine.get('python', '?')}"),
        ("system", str(machine.get("platform", "?"))),
    ]


def _summary(report: Mapping[str, Any]) -> str:
    machine = report["machine"]
    lines = [f"# styleforge bench: {_title(machine)}", "",
             f"{report['date']}, model {report.get('model', '?')}, device {machine.get('device', '?')}.", "",
             "| machine | |", "| --- | --- |"]
    lines += [f"| {label} | {text} |" for label, text in machine_lines(machine)]
    rates = report.get("matmul_tflops") or {}
    if rates:
        lines += ["", "Measured dense matrix-multiply rate (the yardstick of *of matmul*): "
                  + ", ".join(f"{name} {rate:.2f} TFLOP/s" for name, rate in rates.items()) + "."]
    lines += ["",
              "| backend | precision | size | megapixels | ms/iter | images/s | peak memory | TFLOP/s | of matmul |",
              "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in report["results"]:
        lines.append(f"| {row['backend']} | {row.get('precision', '?')} | {row['width']}x{row['height']} | "
                     f"{_megapixels(row):.3g} | {row['ms_per_iteration']:.1f} | {row['images_per_second']:.2f} | "
                     f"{_gib(row['peak_memory_bytes'])} | {row['tflops']:.2f} | "
                     f"{row.get('share_of_matrix_rate', 0):.0%} |")
    lines += ["", *[f"![{_CHARTS[name][0]}]({name})" for name in _CHARTS], ""]
    return "\n".join(lines)


def write_bench_report(rows: Sequence[Mapping[str, Any]], machine: Mapping[str, Any], folder: str | Path,
                       **fields: Any) -> list[Path]:
    """Write a report folder: bench.json (``fields`` such as model and matmul_tflops, the machine,
    the rows), the three charts and README.md. Returns the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), **fields,
              "machine": dict(machine), "results": [dict(row) for row in rows]}
    _draw(report["results"], machine, folder)
    write_json_atomic(folder / "bench.json", report)
    (folder / "README.md").write_text(_summary(report))
    return [folder / name for name in REPORT_FILES]


def read_bench_report(folder: str | Path) -> dict[str, Any]:
    """A report folder's bench.json (or a bench.json given directly), checked for its rows."""
    path = Path(folder)
    path = path / "bench.json" if path.is_dir() else path
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a bench report ({error})") from None
    if not isinstance(report, dict) or not isinstance(report.get("results"), list):
        raise InputError(f"{path}: not a bench report (no results)")
    report.setdefault("machine", {key: report.get(key) for key in ("platform", "gpu", "threads", "physical_cores",
                                                                  "device")})
    return report


def compare_bench_reports(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per (backend, precision, size) in either report: each one's ms/iter, share of its
    matrix rate and peak memory (None where it did not measure it), and ``speedup`` (a's time over
    b's: above 1, b is faster)."""
    def key(row: Mapping[str, Any]) -> tuple[str, str, int, int]:
        return row["backend"], row.get("precision", "?"), row["width"], row["height"]

    left, right = {key(row): row for row in a["results"]}, {key(row): row for row in b["results"]}
    rows = []
    for backend, precision, width, height in sorted(set(left) | set(right), key=lambda k: (k[0], k[1], k[2] * k[3])):
        one, two = left.get((backend, precision, width, height)), right.get((backend, precision, width, height))
        rows.append({
            "backend": backend, "precision": precision, "width": width, "height": height,
            "ms_a": one["ms_per_iteration"] if one else None, "ms_b": two["ms_per_iteration"] if two else None,
            "share_a": one.get("share_of_matrix_rate") if one else None,
            "share_b": two.get("share_of_matrix_rate") if two else None,
            "memory_a": one["peak_memory_bytes"] if one else None,
            "memory_b": two["peak_memory_bytes"] if two else None,
            "speedup": one["ms_per_iteration"] / two["ms_per_iteration"] if one and two else None,
        })
    return rows
