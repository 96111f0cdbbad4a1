"""The bench report folder: its JSON, charts and summary, read back and compared."""

from __future__ import annotations

import importlib
import json

import pytest
from PIL import Image

from styleforge.engine import InputError, compare_bench_reports, describe_machine, read_bench_report, write_bench_report
from styleforge.engine._machine import SIMD_FLAGS
from styleforge.engine.backends import REPORT_FILES, _report, check_report_folder


def _row(backend, precision, side, ms, share=0.5, memory=2**30):
    return {"backend": backend, "device": "cpu", "height": side * 3 // 4, "width": side, "ms_per_iteration": ms,
            "ms_per_iteration_min": ms, "images_per_second": 1e3 / ms, "peak_memory_bytes": memory,
            "tflops": 1.0, "precision": precision, "share_of_matrix_rate": share}


ROWS = [_row("torch", "fp32", 256, 100), _row("torch", "fp32", 512, 400), _row("torch", "bf16", 256, 60, 0.3),
        _row("onnxruntime", "fp32", 512, 350, 0.6, 3 * 2**30)]


def test_a_report_folder_holds_json_charts_and_a_summary(tmp_path):
    machine = describe_machine("cpu")
    paths = write_bench_report(ROWS, machine, tmp_path / "a", model="vgg19-random", matmul_tflops={"fp32": 2.0})
    assert sorted(path.name for path in paths) == sorted(REPORT_FILES) and all(path.exists() for path in paths)
    for name in REPORT_FILES:
        if name.endswith(".png"):
            assert Image.open(tmp_path / "a" / name).size == (640, 400)
    report = json.loads((tmp_path / "a" / "bench.json").read_text())
    assert report["results"] == ROWS and report["model"] == "vgg19-random" and report["machine"] == machine
    summary = (tmp_path / "a" / "README.md").read_text()
    assert machine["cpu"] in summary and "| onnxruntime | fp32 | 512x384 | 0.197 | 350.0 |" in summary
    assert "fp32 2.00 TFLOP/s" in summary and "![seconds per iteration](seconds_per_iteration.png)" in summary


def test_the_machine_is_described_with_the_flags_that_matter():
    machine = describe_machine("cpu")
    assert machine["cpu"] and machine["physical_cores"] >= 1 and machine["memory_bytes"] > 0
    assert machine["gpu"] is None and machine["torch"]
    assert set(machine["cpu_flags"]) <= set(SIMD_FLAGS)


def test_two_reports_side_by_side(tmp_path):
    write_bench_report(ROWS, {"cpu": "A"}, tmp_path / "a")
    write_bench_report([_row("torch", "fp32", 256, 50), _row("tensorrt", "fp16", 512, 10)], {"gpu": "B"},
                       tmp_path / "b")
    rows = compare_bench_reports(read_bench_report(tmp_path / "a"), read_bench_report(tmp_path / "b" / "bench.json"))
    by_key = {(row["backend"], row["precision"], row["width"]): row for row in rows}
    assert by_key[("torch", "fp32", 256)]["speedup"] == 2.0
    assert by_key[("torch", "fp32", 512)]["ms_b"] is None and by_key[("tensorrt", "fp16", 512)]["ms_a"] is None
    assert len(rows) == 5


def test_a_folder_that_is_not_a_report_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="notes.txt"):
        check_report_folder(tmp_path)
    with pytest.raises(InputError, match="not a bench report"):
        read_bench_report(tmp_path)


def test_without_matplotlib_the_report_names_the_extra(tmp_path, monkeypatch):
    real = importlib.import_module

    def missing(name, *args):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real(name, *args)

    monkeypatch.setattr(_report.importlib, "import_module", missing)
    with pytest.raises(InputError, match=r"pip install 'styleforge\[bench\]'"):
        check_report_folder(tmp_path / "new")
