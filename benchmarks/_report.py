"""The JSON every benchmark writes: what ran, when, on which machine, and the rows measured."""

from __future__ import annotations

import datetime
import json
import platform
from pathlib import Path

import torch


def write_report(path: Path, benchmark: str, rows: list, **extra) -> None:
    report = {
        "benchmark": benchmark,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
        **extra,
        "results": rows,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
