"""The CPU policy: physical cores for threads unless the user chose, and bf16 only where it is
native and measured faster (the measurement cached)."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from styleforge.engine import BackendUnavailableError, Precision, RenderConfig, backend_for
from styleforge.engine import _cpu

GATYS_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CPUINFO = "".join(f"processor\t: {cpu}\nphysical id\t: 0\ncore id\t\t: {cpu // 2}\nflags\t\t: fpu avx2 {{flags}}\n\n"
                  for cpu in range(4))  # 4 logical CPUs, 2 cores with SMT siblings


@pytest.fixture
def fake_cpu(monkeypatch):
    def install(flags: str = "", allowed=(0, 1, 2, 3)):
        monkeypatch.setattr(_cpu, "_cpuinfo", lambda: CPUINFO.replace("{flags}", flags))
        monkeypatch.setattr(_cpu.os, "sched_getaffinity", lambda pid: set(allowed), raising=False)
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
        monkeypatch.setattr(_cpu, "_MEMO", {})
    return install


def test_smt_siblings_count_once_and_only_allowed_cpus(fake_cpu):
    fake_cpu()
    assert _cpu.physical_cores() == 2
    fake_cpu(allowed=(0, 1))  # both siblings of core 0
    assert _cpu.physical_cores() == 1


def test_threads_follow_physical_cores_unless_the_user_chose(fake_cpu, monkeypatch):
    fake_cpu(allowed=(0,))
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "7")
        monkeypatch.setattr(_cpu, "_TORCH_DEFAULT_THREADS", before)
        assert _cpu.use_physical_cores() == before  # the user's variable wins
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
        monkeypatch.setattr(_cpu, "_TORCH_DEFAULT_THREADS", before + 1)  # someone called set_num_threads
        assert _cpu.use_physical_cores() == before
        monkeypatch.setattr(_cpu, "_TORCH_DEFAULT_THREADS", before)
        assert _cpu.use_physical_cores() == 1
    finally:
        torch.set_num_threads(before)


def test_auto_is_fp32_without_native_bf16_and_measures_nothing(fake_cpu, monkeypatch):
    fake_cpu("avx512f")
    monkeypatch.setattr(_cpu, "_time_convolutions", lambda dtype: pytest.fail("measured without native bf16"))
    assert Precision.resolve("auto", torch.device("cpu")).name == "fp32"
    assert not _cpu._choice_file().exists()


@pytest.mark.parametrize(("bf16_ms", "expected"), [(5.0, "bf16"), (20.0, "fp32")])
def test_native_bf16_is_chosen_only_where_it_measured_faster_once(fake_cpu, monkeypatch, bf16_ms, expected):
    fake_cpu("avx512_bf16 amx_bf16")
    monkeypatch.setattr(_cpu, "_time_pairs", lambda pairs: ([0.010] * pairs, [bf16_ms / 1e3] * pairs))
    assert Precision.resolve("auto", torch.device("cpu")).name == expected
    record = json.loads(_cpu._choice_file().read_text())
    assert [entry["bf16_preferred"] for entry in record.values()] == [expected == "bf16"]
    monkeypatch.setattr(_cpu, "_time_pairs", lambda pairs: pytest.fail("measured again"))
    assert Precision.resolve("auto", torch.device("cpu")).name == expected  # from the cache
    assert Precision.resolve("fp32", torch.device("cpu")).name == "fp32"  # an explicit choice stands


def test_a_measurement_is_not_reused_on_a_cpu_of_the_same_name_with_other_simd(fake_cpu, monkeypatch):
    """Virtual machines name different CPUs alike ("AMD EPYC"); a shared cache must not carry
    one's choice to the other."""
    fake_cpu("avx512_bf16")
    monkeypatch.setattr(_cpu, "_time_pairs", lambda pairs: ([0.010] * pairs, [0.020] * pairs))
    assert Precision.resolve("auto", torch.device("cpu")).name == "fp32"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")  # same name, wider SIMD
    monkeypatch.setattr(_cpu, "_MEMO", {})
    monkeypatch.setattr(_cpu, "_time_pairs", lambda pairs: ([0.010] * pairs, [0.005] * pairs))
    assert Precision.resolve("auto", torch.device("cpu")).name == "bf16"  # measured again, for this CPU
    assert len(json.loads(_cpu._choice_file().read_text())) == 2


def test_the_real_measurement_runs(fake_cpu, monkeypatch):
    fake_cpu("amx_bf16")
    monkeypatch.setattr(_cpu, "BF16_PAIRS", 2)
    assert isinstance(_cpu.bf16_pays(), bool)


@pytest.mark.parametrize(("fp32_ms", "bf16_ms", "preferred"), [
    ([10] * 7, [5] * 7, True),  # clearly faster in every pair
    ([10] * 7, [9] * 7, False),  # faster in every pair, but by 10%: inside the margin
    ([10] * 7, [10] * 7, False),  # a tie keeps fp32
    ([10, 10, 10, 10, 10, 10, 10], [5, 5, 5, 5, 20, 20, 20], False),  # median 5 ms, but won only 4 of 7 pairs
    ([10, 30, 10, 30, 10, 30, 10], [25, 8, 25, 8, 25, 8, 25], False),  # load alternating: medians 10 vs 25
    ([20, 9, 21, 8, 19, 9, 22], [8, 4, 9, 4, 8, 3, 9], True),  # noisy, but every pair and the median agree
    ([427, 10, 10, 10, 10, 10, 10], [165, 12, 12, 12, 12, 12, 12], False),  # one loaded pair must not decide
    ([10, 10, 10, 10, 10, 10, 10], [5, 5, 5, 5, 5, 12, 12], True),  # a clear majority (5 of 7) and the margin
])
def test_bf16_needs_the_margin_on_the_median_and_a_clear_majority_of_pairs(fp32_ms, bf16_ms, preferred):
    measurement = _cpu.bf16_decision([t / 1e3 for t in fp32_ms], [t / 1e3 for t in bf16_ms])
    assert measurement.bf16_preferred is preferred
    assert measurement.fp32_ms == fp32_ms and measurement.bf16_ms == bf16_ms
    assert measurement.rule == _cpu.BF16_RULE and measurement.measured_at


def test_the_pairs_interleave_and_alternate_their_order(monkeypatch):
    calls = []
    monkeypatch.setattr(_cpu, "_convolution_step", lambda dtype: lambda: calls.append("bf16" if dtype else "fp32"))
    fp32, bf16 = _cpu._time_pairs(3)
    assert len(fp32) == len(bf16) == 3
    assert calls == ["fp32", "bf16", "fp32", "bf16", "bf16", "fp32", "fp32", "bf16"]  # warm-ups, then A B, B A, A B


def test_the_measurement_can_be_retaken_and_the_cache_keeps_its_figures(fake_cpu, monkeypatch):
    fake_cpu("avx512_bf16")
    monkeypatch.setattr(_cpu, "_time_pairs", lambda pairs: ([0.010] * pairs, [0.020] * pairs))
    assert Precision.resolve("auto", torch.device("cpu")).name == "fp32"
    monkeypatch.setattr(_cpu, "_time_pairs", lambda pairs: ([0.010] * pairs, [0.005] * pairs))
    assert Precision.resolve("auto", torch.device("cpu")).name == "fp32"  # cached: not measured again
    measurement = _cpu.measure_bf16()
    assert measurement is not None and measurement.bf16_preferred and measurement.bf16_median_ms == 5.0
    assert Precision.resolve("auto", torch.device("cpu")).name == "bf16"  # the retaken answer, in this process too
    (entry,) = json.loads(_cpu._choice_file().read_text()).values()
    assert entry["bf16_preferred"] is True
    figures = entry["bf16_measurement"]
    assert figures["fp32_ms"] == [10.0] * _cpu.BF16_PAIRS and figures["bf16_median_ms"] == 5.0
    assert figures["rule"] == _cpu.BF16_RULE and figures["measured_at"].startswith("20")
    monkeypatch.setattr(_cpu, "_MEMO", {})
    assert _cpu.bf16_pays() is True  # a new process reads it back


def test_retaking_without_native_bf16_measures_nothing(fake_cpu, monkeypatch):
    fake_cpu("avx512f")
    monkeypatch.setattr(_cpu, "_time_pairs", lambda pairs: pytest.fail("measured without native bf16"))
    assert _cpu.measure_bf16() is None


def test_compile_runs_on_torch_and_auto_means_torch_then():
    config = RenderConfig(model="vgg16-random", torch_compile=True)
    with pytest.raises(BackendUnavailableError, match="--compile runs on the torch backend"):
        backend_for(config.replace({"backend": "onnxruntime"}), torch.device("cpu"))
    backend = backend_for(config, torch.device("cpu"))  # compiles lazily: nothing runs here
    assert backend.name == "torch" and backend.compiled


def test_winograd_runs_where_it_pays_and_gives_the_same_features(monkeypatch):
    from styleforge.engine.backends import _registry
    from styleforge.kernels import WinogradConv3x3

    monkeypatch.setattr(_registry, "winograd_pays", lambda: True)
    # fp32 named: Winograd is an fp32 path, and "auto" is bf16 on CPUs where that measures faster.
    backend = backend_for(RenderConfig(model="vgg16-random", precision="fp32", style_layers=GATYS_LAYERS),
                          torch.device("cpu"))  # to relu5_1: every 256+ channel conv
    fast = [name for name, conv in backend._network.convs.items() if isinstance(conv, WinogradConv3x3)]
    assert fast == ["conv3_2", "conv3_3", "conv4_1", "conv4_2", "conv4_3", "conv5_1"]  # 256+ input channels
    assert not any(isinstance(conv, WinogradConv3x3) for conv in backend.backbone.convs.values())
    image = torch.rand(1, 3, 64, 80, generator=torch.Generator().manual_seed(0))
    features, reference = backend.features(image), backend.backbone(image)
    for name, value in reference.items():
        assert ((features[name] - value).abs().max() / value.abs().max()).item() < 1e-5, name


def test_the_winograd_measurement_is_taken_once(fake_cpu, monkeypatch):
    fake_cpu()
    calls = []
    monkeypatch.setattr(_cpu, "_time_convolutions", lambda dtype, winograd=False, **kw: calls.append(winograd) or (
        1.0 if winograd else 2.0))
    assert _cpu.winograd_pays() and _cpu.winograd_pays() and calls == [False, True]


def test_keeping_freed_memory_applies_once_and_can_be_turned_off(monkeypatch):
    _cpu.keep_freed_memory.cache_clear()
    try:
        monkeypatch.setenv("STYLEFORGE_KEEP_FREED_MEMORY", "0")
        assert _cpu.keep_freed_memory() is False
        _cpu.keep_freed_memory.cache_clear()
        monkeypatch.delenv("STYLEFORGE_KEEP_FREED_MEMORY")
        assert _cpu.keep_freed_memory() is (sys.platform == "linux")  # glibc here; elsewhere it does not apply
    finally:
        _cpu.keep_freed_memory.cache_clear()
