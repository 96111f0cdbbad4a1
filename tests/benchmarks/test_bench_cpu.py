"""The CPU benchmark (benchmarks/bench_cpu.py) in its tiny dry mode: both sides run, the ratio
and peak RSS land in its JSON, so the script cannot rot between the runs that take minutes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_cpu.py"


def test_a_tiny_run_prints_and_records_the_ratio(tmp_path):
    output = tmp_path / "cpu.json"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run([sys.executable, str(SCRIPT), "--size", "64", "--evaluations", "1", "--rounds", "1",
                           "--warmup", "1", "--output", str(output)], capture_output=True, text=True, timeout=600,
                          env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "x the baseline's speed per evaluation" in done.stdout
    report = json.loads(output.read_text())
    rows = {row["side"]: row for row in report["results"]}
    assert set(rows) == {"baseline", "styleforge"}
    for row in rows.values():
        assert row["seconds_per_evaluation"] > 0 and row["peak_rss_bytes"] > 0 and row["evaluations_timed"] == 1
    assert report["speedup"] > 0 and report["size"] == [48, 64] and isinstance(report["cpu_flags"], list)
