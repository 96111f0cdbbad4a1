"""The GPU proof of styleforge, as two calls that each fit the lent machine (H100/H200).

    python benchmarks/gpu/prove.py --call A --out /tmp/proof --pack $OUT --weights benchmarks/gpu/weights
    python benchmarks/gpu/prove.py --call B --out /tmp/proof --pack $OUT
    python benchmarks/gpu/prove.py --call all --out OUT --dry     # every step at toy sizes on the CPU (CI)

Call A is the correctness story (environment and matrix rates, ``pytest -m gpu``, compute-sanitizer
on the kernels, CUDA vs CPU render, tiled = untiled, precisions, graphs = eager, batch --devices
0, planner vs measured peak); call B the speed figures, each beside its baseline. Each call stops
starting steps when its ``--budget`` (seconds, default 330) runs out and caps every step at what
is left, so it ends inside the device's limit. Every step runs as its own process: a hang or crash
loses that step only. A step passes only when its process exits 0 *and* its OUT/STEP.json says
every check met its threshold (benchmarks/gpu/checks.py: figures beside thresholds, kernel
fallbacks, skipped GPU tests). OUT/summary.md lists every check's figure beside its threshold.
``--pack DIR`` writes DIR/summary.md and DIR/proof-<call>.tar.gz (OUT's figures, logs and PNGs)
after every step, so a call killed at its time limit still brings back what was done: two files.
``--weights`` takes the default model's weights (vgg19-oxford-8bit) as pack_weights.py makes them
(lossless: uint8 indices into a float32 table per layer, the layers to relu5_1), or its float32
file; they are installed as the engine's verified cache file, so nothing is fetched. Without them,
steps that need real weights use random ones of the same architecture (vgg19-random) and say so.
prove.py reads the default model from the engine, so the project must be importable before it
starts: the README's commands install it first (``pip install --no-deps --no-build-isolation -e .``),
and call A's first step does the same.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from pack_weights import MODEL, packed_model, packed_name, random_model, unpack_weights
from styleforge.engine._weights import _write_sidecar  # the engine's own sidecar, as it checks it

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BENCH = HERE.parent
PY = sys.executable
CALLS = ("A", "B")


@dataclass(frozen=True)
class Step:
    """One step: ``command`` on the GPU, ``dry`` at toy sizes on the CPU (None: the same)."""

    name: str
    call: str
    command: list[str]
    timeout: int
    dry: list[str] | None = None
    needs: tuple[str, ...] = field(default=())  # "weights": real weights make its figures meaningful


def _check(name: str, *extra: str) -> list[str]:
    return [PY, str(HERE / "checks.py"), name, *extra]


def steps(out: Path, model: str) -> list[Step]:
    """Every step, in order, with its time limit on an H100 (each call's limits add to <= 330 s)."""
    res = str(out)

    def check(name: str, timeout: int, call: str, *, weights: bool = False) -> Step:
        extra = ("--model", model) if weights else ()
        return Step(name, call, _check(name, "--out", res, *extra), timeout, _check(name, "--out", res, "--dry"),
                    needs=("weights",) if weights else ())

    return [
        # --- call A: is it right ---------------------------------------------------------------------
        Step("install", "A", [PY, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "-e",
                              str(ROOT)], 40, [PY, "-c", "print('dry run: the project is installed already')"]),
        check("env", 30, "A"),
        check("gpu-tests", 75, "A"),
        check("sanitize", 60, "A"),
        check("render-parity", 25, "A", weights=True),
        check("tiled-equals-untiled", 15, "A"),
        check("precision", 30, "A", weights=True),
        check("cuda-graphs", 15, "A"),
        check("batch-devices", 15, "A"),
        check("planner-memory", 25, "A"),
        # --- call B: how fast ------------------------------------------------------------------------
        check("per-iteration", 110, "B"),
        check("gram-speed", 30, "B"),
        check("renders", 130, "B", weights=True),
        Step("backends", "B", [PY, str(BENCH / "bench_backends.py"), "--device", "cuda", "--sizes", "1024",
                               "2048", "--output", f"{res}/backends.json"], 40,
             [PY, str(BENCH / "bench_backends.py"), "--device", "cpu", "--sizes", "64", "--iterations", "1",
              "--warmup", "0", "--output", f"{res}/backends.json"]),
        # Only when time is left over (the budget stops them otherwise).
        check("mrf-doodle", 60, "B", weights=True),
        check("batch-rate", 60, "B", weights=True),
    ]


def _install_weights(weights: Path | None, cache: Path, model: str = MODEL) -> bool:
    """Put the default model's weights where the engine looks (a cache folder of our own) as the
    float32 file it loads, pack_weights.py's file unpacked bit for bit, with the sha256 sidecar
    the engine verifies a cached file against. The sidecar matters: a cached file without one is
    checked for every convolution (VGG19's 16), which the packed layers (to conv5_1) fail, so the
    engine would move it aside and fetch the weights from the package index."""
    if weights is None:
        return False
    candidates = [weights] if weights.is_file() else [weights / name for name in (
        packed_name(model), f"{model}.safetensors")]
    source = next((path for path in candidates if path.is_file()), None)
    if source is None:
        raise SystemExit(f"--weights: none of {', '.join(map(str, candidates))} exists")
    packed = packed_model(source)
    if packed not in (None, model):
        raise SystemExit(f"--weights: {source} holds {packed}, the default render's model is {model}: pack again")
    target = cache / "weights" / f"{model}.safetensors"  # the engine's cache file (engine/_weights.py)
    target.parent.mkdir(parents=True, exist_ok=True)
    unpack_weights(source, target)
    _write_sidecar(target)
    return True


def _run(step: Step, command: list[str], out: Path, timeout: int, env: dict) -> dict:
    log = out / "logs" / f"{step.name}.log"
    for stale in (out / f"{step.name}.json", out / f"{step.name}.jsonl"):  # from an earlier run
        stale.unlink(missing_ok=True)
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
    verdict = _verdict(out / f"{step.name}.json")
    if verdict != "passed":  # the checks' own words, whatever the exit status said
        status = verdict if status == "passed" else f"{status}: {verdict}"
    return {"step": step.name, "call": step.call, "status": status, "seconds": seconds, "log": str(log),
            "tail": tail}


def _verdict(figures: Path) -> str:
    """'passed' unless the step's own JSON says a check failed (exit 0 is not enough)."""
    if not figures.exists():
        return "passed"
    try:
        data = json.loads(figures.read_text())
    except ValueError:
        return "failed (unreadable figures)"
    if data.get("passed") is False:
        failed = [check["check"] for check in data.get("checks", []) if not check.get("passed")]
        return f"failed (checks: {'; '.join(failed)})"
    return "passed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for figures, logs and summary.md")
    parser.add_argument("--weights", type=Path, default=None,
                        help=f"folder (or file) with {packed_name()} (pack_weights.py) or {MODEL}.safetensors")
    parser.add_argument("--call", default="all", choices=(*CALLS, "all"))
    parser.add_argument("--only", nargs="*", default=None, help="run only these steps")
    parser.add_argument("--dry", action="store_true", help="toy sizes on the CPU: what CI runs")
    parser.add_argument("--budget", type=float, default=330, help="seconds for the whole call (GPU runs)")
    parser.add_argument("--step-timeout", type=int, default=None, help="cap on every step's time limit (s)")
    parser.add_argument("--pack", type=Path, default=None, help="folder for summary.md + one tarball, after every step")
    parser.add_argument("--plant", default=None,
                        help="make this check's thresholds impossible (CI: a failure must fail)")
    args = parser.parse_args()

    started = time.monotonic()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["STYLEFORGE_CACHE"] = str(out / "cache")
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH), env.get("PYTHONPATH", "")])
    if args.plant:
        env["STYLEFORGE_PROOF_PLANT"] = args.plant
    have_weights = not args.dry and _install_weights(args.weights, out / "cache")
    model = MODEL if have_weights else random_model(MODEL)
    record_path = out / "steps.json"
    records = json.loads(record_path.read_text()) if record_path.exists() else {}
    for step in steps(out, model):
        if args.call != "all" and step.call != args.call:
            continue
        if args.only is not None and step.name not in args.only:
            continue
        command = step.dry if args.dry and step.dry is not None else step.command
        timeout = min(step.timeout, args.step_timeout or step.timeout)
        if args.dry:
            timeout = args.step_timeout or 600  # two CPU cores run the toy sizes slower than a GPU the real ones
        else:
            left = args.budget - (time.monotonic() - started)
            if left < min(20, step.timeout):
                records[step.name] = {"step": step.name, "call": step.call, "seconds": 0, "tail": [],
                                      "status": f"not started: {left:.0f} s of the call's budget left"}
                print(f"{step.name:22s} {records[step.name]['status']}", flush=True)
                continue
            timeout = int(min(timeout, left))
        record = _run(step, command, out, timeout, env)
        record["random_weights"] = "weights" in step.needs and not have_weights
        records[step.name] = record
        record_path.write_text(json.dumps(records, indent=2) + "\n")
        _publish(out, records, args)
    summary = _publish(out, records, args)
    print(summary)
    failed = [name for name, record in records.items() if record["status"] != "passed"]
    raise SystemExit(1 if failed else 0)


def _publish(out: Path, records: dict, args) -> str:
    """summary.md in OUT, and with --pack the two files that come back: summary.md and a tarball
    of OUT's figures, logs and pictures (not the cache, which holds the weights)."""
    summary = _summary(out, records, dry=args.dry)
    (out / "summary.md").write_text(summary)
    if args.pack is not None:
        args.pack.mkdir(parents=True, exist_ok=True)
        (args.pack / "summary.md").write_text(summary)
        partial = args.pack / f".proof-{args.call}.tar.gz.partial"
        with tarfile.open(partial, "w:gz") as tar:
            for path in sorted(out.rglob("*")):
                relative = path.relative_to(out)
                if path.is_file() and relative.parts[0] != "cache":
                    tar.add(path, arcname=f"proof-{args.call}/{relative}")
        partial.replace(args.pack / f"proof-{args.call}.tar.gz")
    return summary


def _summary(out: Path, records: dict, *, dry: bool) -> str:
    lines = [f"# GPU proof{' (dry run: toy sizes on the CPU, figures mean nothing)' if dry else ''}", "",
             "| step | call | status | seconds | note |", "| --- | --- | --- | --- | --- |"]
    checks = []
    for name, record in records.items():
        note = "random weights" if record.get("random_weights") else ""
        figures = out / f"{name}.json"
        if figures.exists():
            try:
                data = json.loads(figures.read_text())
                note = "; ".join(filter(None, [note, str(data.get("summary", ""))]))
                checks += [(name, check) for check in data.get("checks", [])]
            except ValueError:
                note = "; ".join(filter(None, [note, "unreadable JSON"]))
        lines.append(f"| {name} | {record.get('call', '')} | {record['status']} | {record['seconds']} | {note} |")
    if checks:
        lines += ["", "| step | check | figure | threshold | verdict |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {name} | {check['check']} | {check['value']} | {check['op']} {check['threshold']} | "
                  f"{'met' if check.get('passed') else '**FAILED**'} |" for name, check in checks]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
