"""One command that proves every GPU path of styleforge on a bare H100/H200 machine.

    python benchmarks/gpu/prove.py --out OUT --weights DIR --part 1   # environment, GPU tests, correctness
    python benchmarks/gpu/prove.py --out OUT --weights DIR --part 2   # speed: per iteration, kernels, backends
    python benchmarks/gpu/prove.py --out OUT --weights DIR --part 3   # full renders, MRF, doodle, batch
    python benchmarks/gpu/prove.py --out OUT --dry                    # every step at toy sizes on the CPU (CI)

Each part is planned to finish within 9 minutes. Every step runs as its own process under a time
limit (``--step-timeout`` caps it), so one hang or crash loses that step only; its log lands in
OUT/logs, its figures in OUT/<step>.json, and OUT/summary.md gets a table of every step run so far
with the figures against the project's targets (RESULTS.md takes them from there, with device,
date and command). ``--weights DIR`` holds ``vgg16-hed.safetensors`` (the converted default
weights, copied from a cache that has them); without it, steps that need real weights use random
ones and say so. Part 1 starts by installing the project there
(``pip install --no-deps --no-build-isolation -e .``: that machine has torch, CuPy, onnx,
onnxruntime and the rest, and no network).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BENCH = HERE.parent
PY = sys.executable


@dataclass(frozen=True)
class Step:
    """One step: ``command`` on the GPU, ``dry`` at toy sizes on the CPU (None: the same)."""

    name: str
    part: int
    command: list[str]
    timeout: int
    dry: list[str] | None = None
    needs: tuple[str, ...] = field(default=())  # "weights": real weights make its figures meaningful


def _check(name: str, *extra: str) -> list[str]:
    return [PY, str(HERE / "checks.py"), name, *extra]


def steps(out: Path, model: str) -> list[Step]:
    """Every step, in order. Budgets add up to under 9 minutes per part on an H100."""
    res = str(out)
    return [
        # --- part 1: what is there, and is it right ------------------------------------------------
        Step("install", 1, [PY, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "-e",
                            str(ROOT)], 180, [PY, "-c", "print('dry run: the project is installed already')"]),
        Step("env", 1, _check("env", "--out", res), 120, _check("env", "--out", res, "--dry")),
        Step("gpu-tests", 1, [PY, "-m", "pytest", "-q", "-m", "gpu", "-rs", "--junitxml", f"{res}/gpu-tests.xml",
                              str(ROOT / "tests")], 240),
        Step("render-parity", 1, _check("render-parity", "--out", res, "--model", model), 90,
             _check("render-parity", "--out", res, "--dry"), needs=("weights",)),
        Step("tiled-equals-untiled", 1, _check("tiled-equals-untiled", "--out", res), 60, _check("tiled-equals-untiled", "--out", res, "--dry")),
        Step("precision", 1, _check("precision", "--out", res, "--model", model), 120,
             _check("precision", "--out", res, "--dry"), needs=("weights",)),
        Step("cuda-graphs", 1, _check("cuda-graphs", "--out", res), 60, _check("cuda-graphs", "--out", res, "--dry")),
        Step("batch-devices", 1, _check("batch-devices", "--out", res), 90,
             _check("batch-devices", "--out", res, "--dry")),
        Step("planner-memory", 1, _check("planner-memory", "--out", res), 120,
             _check("planner-memory", "--out", res, "--dry")),
        # --- part 2: speed --------------------------------------------------------------------------
        Step("per-iteration", 2, _check("per-iteration", "--out", res), 300,
             _check("per-iteration", "--out", res, "--dry")),
        Step("kernels", 2, [PY, str(BENCH / "bench_kernels.py"), "--output", f"{res}/kernels.json"], 120,
             [PY, "-c", "print('bench_kernels needs a GPU with CuPy: nothing to do in a dry run')"]),
        Step("backends", 2, [PY, str(BENCH / "bench_backends.py"), "--device", "cuda", "--sizes", "1024", "2048",
                             "3840x2160", "--output", f"{res}/backends.json"], 150,
             [PY, str(BENCH / "bench_backends.py"), "--device", "cpu", "--sizes", "64", "--iterations", "1",
              "--warmup", "0", "--output", f"{res}/backends.json"]),
        # --- part 3: whole renders --------------------------------------------------------------------
        *[Step(f"render-{label}", 3, [PY, str(BENCH / "bench_highres.py"), "--sizes", size, "--precision", precision,
                                      "--model", model, *extra, "--out", f"{res}/render-{label}.json"], timeout,
               [PY, str(BENCH / "bench_highres.py"), "--sizes", "64", "--iterations", "2", "--model", "vgg16-random",
                "--device", "cpu", "--out", f"{res}/render-{label}.json"], needs=("weights",))
          for label, size, precision, extra, timeout in (
              ("512", "512", "bf16", [], 60),
              ("512x500", "512", "bf16", ["--iterations", "500"], 60),
              ("4k", "3840x2160", "bf16", [], 150),
              ("8k", "7680x4320", "bf16", [], 240))],
        Step("mrf-doodle", 3, _check("mrf-doodle", "--out", res, "--model", model), 120,
             _check("mrf-doodle", "--out", res, "--dry"), needs=("weights",)),
        Step("batch-rate", 3, _check("batch-rate", "--out", res, "--model", model), 120,
             _check("batch-rate", "--out", res, "--dry")),
    ]


def _install_weights(weights: Path | None, cache: Path) -> bool:
    """Put the converted default weights where the engine looks (a cache folder of our own)."""
    if weights is None:
        return False
    source = weights / "vgg16-hed.safetensors" if weights.is_dir() else weights
    if not source.is_file():
        raise SystemExit(f"--weights: {source} does not exist")
    target = cache / "weights" / "vgg16-hed.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()  # the sidecar the engine checks the file against
    target.with_name(target.name + ".sha256").write_text(digest + "\n")
    return True


def _run(step: Step, command: list[str], out: Path, timeout: int, env: dict) -> dict:
    log = out / "logs" / f"{step.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log, "w") as handle:
        handle.write(" ".join(command) + "\n\n")
        handle.flush()
        try:
            completed = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout, env=env,
                                       cwd=ROOT, check=False)
            status = "passed" if completed.returncode == 0 else f"failed (exit {completed.returncode})"
        except subprocess.TimeoutExpired:
            status = f"timed out after {timeout} s"
    seconds = round(time.monotonic() - started, 1)
    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
    print(f"{step.name:22s} {status:28s} {seconds:7.1f} s", flush=True)
    return {"step": step.name, "part": step.part, "status": status, "seconds": seconds, "log": str(log),
            "tail": tail}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for figures, logs and summary.md")
    parser.add_argument("--weights", type=Path, default=None, help="folder (or file) with vgg16-hed.safetensors")
    parser.add_argument("--part", default="all", choices=("1", "2", "3", "all"))
    parser.add_argument("--only", nargs="*", default=None, help="run only these steps")
    parser.add_argument("--dry", action="store_true", help="toy sizes on the CPU: what CI runs")
    parser.add_argument("--step-timeout", type=int, default=None, help="cap on every step's time limit (s)")
    args = parser.parse_args()

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["STYLEFORGE_CACHE"] = str(out / "cache")
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH), env.get("PYTHONPATH", "")])
    have_weights = not args.dry and _install_weights(args.weights, out / "cache")
    model = "vgg16-hed" if have_weights else "vgg16-random"
    record_path = out / "steps.json"
    records = json.loads(record_path.read_text()) if record_path.exists() else {}
    for step in steps(out, model):
        if args.part != "all" and str(step.part) != args.part:
            continue
        if args.only is not None and step.name not in args.only:
            continue
        command = step.dry if args.dry and step.dry is not None else step.command
        timeout = min(step.timeout, args.step_timeout or step.timeout)
        if args.dry:
            timeout = max(timeout, 600)  # two CPU cores run the toy sizes slower than a GPU the real ones
            if args.step_timeout:
                timeout = args.step_timeout
        record = _run(step, command, out, timeout, env)
        record["random_weights"] = "weights" in step.needs and not have_weights
        records[step.name] = record
        record_path.write_text(json.dumps(records, indent=2) + "\n")
    summary = _summary(out, records, dry=args.dry)
    (out / "summary.md").write_text(summary)
    print(summary)
    failed = [name for name, record in records.items() if record["status"] != "passed"]
    raise SystemExit(1 if failed else 0)


#: The issue's targets on an H100 (benchmarks, not tests).
TARGETS = {
    "render-512x500": ("512 px x 500 iterations", 1.5),
    "render-4k": ("4K UHD, default schedule", 10.0),
    "render-8k": ("8K UHD, default schedule", 45.0),
}


def _summary(out: Path, records: dict, *, dry: bool) -> str:
    lines = [f"# GPU proof{' (dry run: toy sizes on the CPU, figures mean nothing)' if dry else ''}", "",
             "| step | status | seconds | note |", "| --- | --- | --- | --- |"]
    for name, record in records.items():
        note = "random weights" if record.get("random_weights") else ""
        figures = out / f"{name}.json"
        if figures.exists():
            try:
                data = json.loads(figures.read_text())
                note = "; ".join(filter(None, [note, str(data.get("summary", ""))]))
            except ValueError:
                note = "; ".join(filter(None, [note, "unreadable JSON"]))
        lines.append(f"| {name} | {record['status']} | {record['seconds']} | {note} |")
    rows = []
    for name, (what, target) in ({} if dry else TARGETS).items():
        figures = out / f"{name}.json"
        if figures.exists():
            try:
                seconds = json.loads(figures.read_text())["results"][0]["total_seconds"]
                rows.append(f"| {what} | {seconds} s | < {target} s | {'met' if seconds < target else 'missed'} |")
            except (ValueError, KeyError, IndexError):
                continue
    if rows:
        lines += ["", "| target | measured | goal | |", "| --- | --- | --- | --- |", *rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
