"""The GPU proof (benchmarks/gpu/prove.py) in its dry mode: every step at toy sizes on the CPU,
so the script that runs on a lent GPU cannot rot between the sessions that have one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu" / "prove.py"


@pytest.mark.skipif(sys.platform != "linux", reason="the proof targets the Linux GPU machines")
def test_every_step_of_the_gpu_proof_runs_dry(tmp_path):
    completed = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--dry"],
                               capture_output=True, text=True, timeout=1200)
    records = json.loads((tmp_path / "steps.json").read_text())
    failed = {name: record["tail"] for name, record in records.items() if record["status"] != "passed"}
    assert completed.returncode == 0 and not failed, (failed, completed.stdout[-2000:])
    summary = (tmp_path / "summary.md").read_text()
    assert "dry run" in summary and "| per-iteration | passed |" in summary
    for step in ("env", "render-parity", "tiled-equals-untiled", "precision", "batch-devices", "planner-memory",
                 "per-iteration", "mrf-doodle", "batch-rate"):
        assert json.loads((tmp_path / f"{step}.json").read_text())["summary"], step
    assert json.loads((tmp_path / "tiled-equals-untiled.json").read_text())["passed"]


def test_a_hanging_step_is_stopped_and_the_rest_still_runs(tmp_path):
    """A step past its time limit is recorded as timed out; the runner goes on to the next."""
    completed = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--dry", "--only", "env",
                                "kernels", "--step-timeout", "1"], capture_output=True, text=True, timeout=300)
    records = json.loads((tmp_path / "steps.json").read_text())
    assert records["env"]["status"] == "timed out after 1 s"  # importing torch alone takes longer
    assert records["kernels"]["status"] in ("passed", "timed out after 1 s")
    assert completed.returncode == 1
