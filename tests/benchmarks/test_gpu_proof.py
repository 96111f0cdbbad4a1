"""The GPU proof (benchmarks/gpu/prove.py) in its dry mode: every step at toy sizes on the CPU,
so the script that runs on a lent GPU cannot rot between the sessions that have one; and its
outcomes are honest: a check that misses its threshold fails the step and the proof."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from styleforge.engine import load_backbone, read_bench_report

GPU = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu"
SCRIPT = GPU / "prove.py"
sys.path.insert(0, str(GPU))

import checks  # noqa: E402
import pack_weights  # noqa: E402
import prove  # noqa: E402


@pytest.mark.skipif(sys.platform != "linux", reason="the proof targets the Linux GPU machines")
def test_every_step_of_the_gpu_proof_runs_dry(tmp_path):
    pack = tmp_path / "pack"
    completed = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "out"), "--dry", "--pack",
                                str(pack)], capture_output=True, text=True, timeout=1800)
    records = json.loads((tmp_path / "out" / "steps.json").read_text())
    failed = {name: record["tail"] for name, record in records.items() if record["status"] != "passed"}
    assert completed.returncode == 0 and not failed, (failed, completed.stdout[-2000:])
    assert {record["call"] for record in records.values()} == {"A", "B"}
    summary = (pack / "summary.md").read_text()
    assert "dry run" in summary and "| per-iteration | B | passed |" in summary
    assert "| tiled-equals-untiled | image gradient, max relative error |" in summary  # figure beside threshold
    assert sorted(path.name for path in pack.iterdir()) == ["proof-all.tar.gz", "summary.md"]  # <= 8 files back
    for step in ("env", "gpu-tests", "sanitize", "render-parity", "tiled-equals-untiled", "precision",
                 "batch-devices", "planner-memory", "per-iteration", "renders", "mrf-doodle", "batch-rate"):
        assert json.loads((tmp_path / "out" / f"{step}.json").read_text())["summary"], step
    rows = (tmp_path / "out" / "per-iteration.jsonl").read_text().splitlines()
    assert rows and all(json.loads(row)["s_per_iteration"] > 0 for row in rows)  # written row by row
    # ... and as a bench report, the format `styleforge bench --report` writes and --compare reads
    report = read_bench_report(tmp_path / "out" / "bench-report")
    assert len(report["results"]) == len(rows) and report["machine"]["physical_cores"] >= 1
    assert (tmp_path / "out" / "bench-report" / "seconds_per_iteration.png").stat().st_size > 0


def test_a_check_that_misses_its_threshold_fails_the_step_and_the_proof(tmp_path):
    completed = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--dry", "--only",
                                "tiled-equals-untiled", "--plant", "tiled-equals-untiled"],
                               capture_output=True, text=True, timeout=900)
    assert completed.returncode == 1
    record = json.loads((tmp_path / "steps.json").read_text())["tiled-equals-untiled"]
    assert record["status"].startswith("failed") and "image gradient" in record["status"]
    summary = (tmp_path / "summary.md").read_text()
    assert "| tiled-equals-untiled | image gradient, max relative error (planted" in summary
    assert "| < 0.0001 | **FAILED** |" in summary


def test_exit_zero_with_a_failed_check_is_still_a_failure(tmp_path):
    (tmp_path / "step.json").write_text(json.dumps({"passed": False, "checks": [
        {"check": "GPU tests skipped", "value": 27, "op": "==", "threshold": 0, "passed": False}]}))
    assert prove._verdict(tmp_path / "step.json") == "failed (checks: GPU tests skipped)"
    assert prove._verdict(tmp_path / "absent.json") == "passed"


def test_skipped_gpu_tests_are_counted_from_junit(tmp_path):
    xml = tmp_path / "gpu.xml"
    xml.write_text('<testsuites><testsuite tests="27" failures="0" errors="0" skipped="27"/></testsuites>')
    assert checks.junit_counts(xml) == {"tests": 27, "failures": 0, "errors": 0, "skipped": 27}
    assert checks.junit_counts(tmp_path / "none.xml")["tests"] == 0


def test_packed_weights_are_float16_up_to_conv5_1_and_unpack_to_float32(tmp_path):
    state = {f"{name}.{field}": tensor for name, conv in load_backbone("vgg16-random", ("relu5_3",)).convs.items()
             for field, tensor in (("weight", conv.weight.detach()), ("bias", conv.bias.detach()))}
    save_file(state, str(tmp_path / "vgg16-hed.safetensors"))
    pack_weights.pack_weights(tmp_path / "vgg16-hed.safetensors", tmp_path / "packed.safetensors")
    packed = load_file(str(tmp_path / "packed.safetensors"))
    assert {key.split(".")[0] for key in packed} == set(pack_weights.KEPT)
    assert all(tensor.dtype == torch.float16 for tensor in packed.values())
    assert sum(t.numel() for t in packed.values()) * 2 < 21e6  # ~20 MB travels instead of ~56 MB
    assert prove._install_weights(tmp_path / "packed.safetensors", tmp_path / "cache")
    unpacked = load_file(str(tmp_path / "cache" / "weights" / "vgg16-hed.safetensors"))
    assert unpacked["conv5_1.weight"].dtype == torch.float32
    assert torch.allclose(unpacked["conv5_1.weight"], state["conv5_1.weight"], rtol=1e-3, atol=1e-6)
    load_backbone("vgg16-hed", ("relu5_1",), weights_path=tmp_path / "cache" / "weights" / "vgg16-hed.safetensors")


def test_a_hanging_step_is_stopped_and_the_rest_still_runs(tmp_path):
    """A step past its time limit is recorded as timed out; the runner goes on to the next."""
    completed = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--dry", "--only", "env",
                                "install", "--step-timeout", "1"], capture_output=True, text=True, timeout=300)
    records = json.loads((tmp_path / "steps.json").read_text())
    assert records["env"]["status"] == "timed out after 1 s"  # importing torch alone takes longer
    assert records["install"]["status"] in ("passed", "timed out after 1 s")
    assert completed.returncode == 1
