"""``styleforge bench --compare A B``: two report folders side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from styleforge import engine

__all__ = ["print_comparison"]


def _ms(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "-"


def _share(value: float | None) -> str:
    return f"{value:.0%}" if value is not None else "-"


def _gib(value: int | None) -> str:
    return f"{value / 2**30:.2f}" if value is not None else "-"


def print_comparison(first: Path, second: Path, console: Console | None = None) -> list[dict[str, Any]]:
    """Print the two machines and their rows side by side; returns the rows compared."""
    a, b = engine.backends.read_bench_report(first), engine.backends.read_bench_report(second)
    console = console or Console()
    machines = Table("", f"A: {first}", f"B: {second}", title="machines")
    for (label, left), (_, right) in zip(engine.backends.machine_lines(a["machine"]), engine.backends.machine_lines(b["machine"])):
        machines.add_row(label, left, right)
    machines.add_row("model", str(a.get("model", "?")), str(b.get("model", "?")))
    machines.add_row("date", str(a.get("date", "?")), str(b.get("date", "?")))
    console.print(machines)
    rows = engine.backends.compare_bench_reports(a, b)
    table = Table("backend", "precision", "size", "ms A", "ms B", "A/B", "matmul A", "matmul B", "GiB A", "GiB B",
                  title="ms per iteration (forward + image gradient), A/B = how many times faster B is, share of "
                        "each machine's matrix rate, peak memory")
    for row in rows:
        speedup = f"{row['speedup']:.2f}x" if row["speedup"] is not None else "-"
        table.add_row(row["backend"], row["precision"], f"{row['width']}x{row['height']}", _ms(row["ms_a"]),
                      _ms(row["ms_b"]), speedup, _share(row["share_a"]), _share(row["share_b"]),
                      _gib(row["memory_a"]), _gib(row["memory_b"]))
    console.print(table)
    return rows
