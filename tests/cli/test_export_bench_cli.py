"""styleforge export and bench, and render on the onnxruntime backend, through the CLI."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from typer.testing import CliRunner

from styleforge.cli import app
from styleforge.engine import _cpu, _device, load_image

runner = CliRunner()


def test_export_writes_checked_onnx_files_into_the_cache(tmp_path):
    result = runner.invoke(app, ["export", "--model", "vgg16-random", "--layers", "relu1_1,relu2_1"])
    assert result.exit_code == 0, result.output
    paths = [line for line in result.output.splitlines() if line.endswith(".onnx")]
    assert [p.rsplit("/", 1)[1] for p in paths] == ["forward.onnx", "backward.onnx"]
    for path in paths:
        onnx.checker.check_model(path)


def test_export_tensorrt_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: the TensorRT export itself is tested instead")
    result = runner.invoke(app, ["export", "--model", "vgg16-random", "--format", "tensorrt"])
    assert result.exit_code == 2
    assert "--format tensorrt: no CUDA GPU" in result.output


def test_export_unknown_format_is_refused():
    result = runner.invoke(app, ["export", "--format", "onnxx"])
    assert result.exit_code == 2 and "did you mean 'onnx'" in result.output


@pytest.mark.parametrize("bf16_pays", [False, True])
def test_bench_times_each_backend_and_writes_json(tmp_path, monkeypatch, bf16_pays):
    """auto is resolved per backend: on a CPU where bf16 pays, torch runs bf16 and onnxruntime
    (fp32 graphs) fp32, both timed."""
    monkeypatch.setattr(_device, "bf16_pays", lambda: bf16_pays)
    output = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", "--size", "32x32", "--backend", "torch", "--backend", "onnxruntime",
                                 "-n", "1", "--warmup", "0", "--device", "cpu", "-o", str(output)])
    assert result.exit_code == 0, result.output
    report = json.loads(output.read_text())
    rows = {row["backend"]: row for row in report["results"]}
    assert set(rows) == {"torch", "onnxruntime"}
    assert (rows["torch"]["precision"], rows["onnxruntime"]["precision"]) == ("bf16" if bf16_pays else "fp32", "fp32")
    for row in rows.values():
        assert (row["height"], row["width"]) == (32, 32)
        assert row["ms_per_iteration"] > 0 and row["tflops"] > 0 and row["peak_memory_bytes"] > 0
    assert "fastest here" in result.output
    assert report["matmul_tflops"]["fp32"] > 0


def test_bench_compares_precisions_and_skips_what_a_backend_cannot_run(tmp_path):
    output = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", "--size", "32x32", "--backend", "torch", "--backend", "onnxruntime",
                                 "--precision", "fp32", "--precision", "bf16", "-n", "1", "--warmup", "0",
                                 "--device", "cpu", "-o", str(output)])
    assert result.exit_code == 0, result.output
    report = json.loads(output.read_text())
    measured = {(row["backend"], row["precision"]) for row in report["results"]}
    assert measured == {("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32")}
    assert "skipped onnxruntime bf16" in result.output
    assert set(report["matmul_tflops"]) == {"fp32", "bf16"}
    assert all(row["share_of_matrix_rate"] > 0 for row in report["results"])


def test_render_on_onnxruntime(tmp_path, test_images):
    output = tmp_path / "ort.png"
    result = runner.invoke(app, [
        "render", str(test_images / "tubingen.jpg"), "-s", str(test_images / "starry_night.jpg"),
        "-o", str(output), "--size", "40", "-n", "5", "--model", "vgg19-random", "--backend", "onnxruntime",
        "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    assert load_image(output).shape == (3, 30, 40)


def test_bench_cpu_precision_retakes_the_measurement_and_prints_it(monkeypatch):
    monkeypatch.setattr(_cpu, "native_bf16", lambda: True)
    monkeypatch.setattr(_cpu, "_time_pairs", lambda pairs: ([0.010] * pairs, [0.005] * pairs))
    result = runner.invoke(app, ["bench", "--cpu-precision"])
    assert result.exit_code == 0, result.output
    assert "fp32 10.0 ms, bf16 5.0 ms" in result.output and "runs bf16 here" in result.output
    monkeypatch.setattr(_cpu, "_time_pairs", lambda pairs: ([0.010] * pairs, [0.0095] * pairs))
    result = runner.invoke(app, ["bench", "--cpu-precision"])
    assert "runs fp32 here" in result.output and _cpu.bf16_pays() is False  # the cached choice replaced


def test_bench_report_folder_and_compare(tmp_path):
    """--report writes the JSON, the charts and the summary; --compare lays two folders side by side."""
    folder = tmp_path / "report"
    result = runner.invoke(app, ["bench", "--size", "32x32", "--size", "48x32", "--backend", "torch", "--precision",
                                 "fp32", "-n", "1", "--warmup", "0", "--device", "cpu", "--model", "vgg16-random",
                                 "--report", str(folder)])
    assert result.exit_code == 0, result.output
    assert f"report: {folder / 'README.md'}" in result.output
    assert sorted(path.name for path in folder.iterdir()) == sorted(
        ["bench.json", "README.md", "seconds_per_iteration.png", "share_of_matrix_rate.png", "peak_memory.png"])
    report = json.loads((folder / "bench.json").read_text())
    assert [(row["width"], row["height"]) for row in report["results"]] == [(32, 32), (48, 32)]
    assert report["machine"]["physical_cores"] >= 1 and report["matmul_tflops"]["fp32"] > 0
    compared = runner.invoke(app, ["bench", "--compare", str(folder), str(folder / "bench.json")])
    assert compared.exit_code == 0, compared.output
    assert "1.00x" in compared.output and report["machine"]["cpu"][:10] in compared.output


def test_bench_report_refuses_a_folder_of_other_files_before_measuring(tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    result = runner.invoke(app, ["bench", "--size", "32x32", "--device", "cpu", "--report", str(tmp_path)])
    assert result.exit_code == 2 and "mine.txt" in result.output
    assert "ms/iter" not in result.output  # nothing was measured
