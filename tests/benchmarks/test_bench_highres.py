"""The high-resolution benchmark's chart: one line per backend/precision, from its JSON reports."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_highres.py"


def _row(side: int, precision: str) -> dict:
    return {"long_side": side, "backend": "torch", "precision": precision, "device": "cpu",
            "peak_memory_bytes": side * side * 1000, "levels": [{"s_per_iteration": side / 500}]}


def test_chart_draws_a_png_from_the_reports(tmp_path):
    pytest.importorskip("matplotlib", reason="the chart needs matplotlib (the bench extra)")
    spec = importlib.util.spec_from_file_location("bench_highres", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reports = []
    for precision in ("fp32", "bf16"):
        path = tmp_path / f"{precision}.json"
        path.write_text(json.dumps({"results": [_row(512, precision), _row(1024, precision)]}))
        reports.append(path)
    png = tmp_path / "chart.png"
    module._chart(reports, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
