"""CUDA kernels: they compile here as CuPy compiles them at run time (NVRTC) and with nvcc, the
runtime asks for exactly what was compiled, and on a GPU they match the references.
The Gram kernel's own tests are in test_gram_cuda.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
import types

import pytest
import torch

from styleforge.kernels import (
    KernelInputError,
    cuda_kernels_unavailable,
    gram_cuda,
    kernel_source,
    mrf_nearest_cuda,
    mrf_nearest_reference,
    normalize_patches,
)
from styleforge.kernels import _cuda, _nvrtc
from styleforge.kernels._cuda import KERNELS, NVRTC_OPTIONS, name_expressions

needs_nvrtc = pytest.mark.skipif(_nvrtc.nvrtc_unavailable() is not None, reason=str(_nvrtc.nvrtc_unavailable()))
def gpu(test):
    """A GPU test: marked ``gpu`` (the GPU proof runs ``pytest -m gpu``), skipped with a reason here."""
    reason = f"CUDA kernels cannot run here: {cuda_kernels_unavailable()}"
    return pytest.mark.gpu(pytest.mark.skipif(cuda_kernels_unavailable() is not None, reason=reason)(test))


@needs_nvrtc
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_kernels_compile_with_nvrtc_as_cupy_compiles_them(name):
    # compute_90 (H100), CuPy's options and name expressions; every kernel must be in the PTX.
    assert b".entry" in _nvrtc.compile_with_nvrtc(name, 90)


@needs_nvrtc
@pytest.mark.parametrize("arch", [75, 80, 90, 120])
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_kernels_assemble_for_each_architecture(name, arch):
    # sm_<arch>: ptxas too (registers, shared memory); 75 has no bf16 tensor cores, 120 is Blackwell.
    if arch not in _nvrtc.nvrtc_archs():
        pytest.skip(f"this NVRTC does not target sm_{arch}")
    assert len(_nvrtc.compile_with_nvrtc(name, arch, cubin=True)) > 0


@needs_nvrtc
def test_nvrtc_compiles_with_its_own_headers_where_no_toolkit_is_installed(monkeypatch):
    monkeypatch.setattr(_nvrtc, "_toolkit_roots", lambda: [])
    _nvrtc.cuda_include_dir.cache_clear()
    try:
        reason = _nvrtc.bundled_headers_unavailable()  # found by calling: see the skew test below
        if reason is not None:
            pytest.skip(reason)
        assert "styleforge-nvrtc-headers" in str(_nvrtc.cuda_include_dir())
        assert b".entry" in _nvrtc.compile_with_nvrtc("gram", 90)
    finally:
        _nvrtc.cuda_include_dir.cache_clear()


def _function_not_found_error() -> type[RuntimeError]:
    """cuda.bindings' own error for a bound function its loaded library lacks (a RuntimeError)."""
    try:
        from cuda.bindings._internal.utils import FunctionNotFoundError
    except ImportError:  # where this private module moved: the same kind of error
        return type("FunctionNotFoundError", (RuntimeError,), {})
    return FunctionNotFoundError


@needs_nvrtc
def test_a_binding_newer_than_its_nvrtc_library_is_a_clear_error_not_a_crash(monkeypatch):
    # torch's CUDA build pins nvidia-cuda-nvrtc 13.0 while the dev extra brings cuda-bindings 13.5:
    # the binding has nvrtcInstallBundledHeaders, the 13.0 library does not, and only the call says so.
    from cuda.bindings import nvrtc

    error = _function_not_found_error()

    def missing_in_the_library(*args):
        raise error("function nvrtcInstallBundledHeaders is not found")

    monkeypatch.setattr(nvrtc, "nvrtcInstallBundledHeaders", missing_in_the_library, raising=False)
    monkeypatch.setattr(_nvrtc, "_toolkit_roots", lambda: [])
    _nvrtc.cuda_include_dir.cache_clear()
    try:
        assert hasattr(nvrtc, "nvrtcInstallBundledHeaders")  # what the old check looked at
        reason = _nvrtc.bundled_headers_unavailable()
        assert reason is not None and "set CUDA_PATH" in reason and "older than cuda-bindings" in reason
        with pytest.raises(_nvrtc.NvrtcError, match="cannot install its bundled headers"):
            _nvrtc.compile_with_nvrtc("gram", 90)
    finally:
        _nvrtc.cuda_include_dir.cache_clear()


@needs_nvrtc
def test_nvrtc_errors_name_the_file_and_quote_the_log(tmp_path, monkeypatch):
    # The bug this check exists for: INFINITY comes from math.h, which nvcc includes and NVRTC lacks.
    source = kernel_source("patch_match").read_text().replace("float my_best = NEG_INF", "float my_best = -INFINITY")
    (tmp_path / "patch_match.cu").write_text(source)
    monkeypatch.setattr(_nvrtc, "kernel_source", lambda name: tmp_path / f"{name}.cu")
    with pytest.raises(_nvrtc.NvrtcError, match=r"(?s)patch_match\.cu.*-std=c\+\+17.*INFINITY.*undefined"):
        _nvrtc.compile_with_nvrtc("patch_match")


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_kernel_sources_compile_with_nvcc(tmp_path, name):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    result = subprocess.run([nvcc, "-std=c++17", "-arch=sm_90", "-c", str(kernel_source(name)),
                             "-o", str(tmp_path / f"{name}.o")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / f"{name}.o").stat().st_size > 0


class _FakeRawModule:
    """Stands in for cupy.RawModule: records what the runtime compiles; ``error`` fails every kernel."""

    calls: list = []
    error: Exception | None = None

    def __init__(self, code, options, name_expressions):
        self.calls.append((code, options, name_expressions))

    def get_function(self, name):
        if self.error is not None:
            raise self.error
        return name


@pytest.fixture
def fake_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(RawModule=_FakeRawModule))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("STYLEFORGE_DISABLE_CUDA_KERNELS", raising=False)
    _FakeRawModule.calls, _FakeRawModule.error = [], None
    _cuda._module.cache_clear()
    cuda_kernels_unavailable.cache_clear()
    yield _FakeRawModule
    _cuda._module.cache_clear()
    cuda_kernels_unavailable.cache_clear()


def test_runtime_compiles_what_the_nvrtc_test_compiles(fake_cupy):
    assert cuda_kernels_unavailable() is None  # builds every module, once
    assert fake_cupy.calls == [(kernel_source(name).read_text(), NVRTC_OPTIONS, name_expressions(name) or None)
                               for name in KERNELS]
    assert name_expressions("gram") == KERNELS["gram"] and name_expressions("patch_match") == ()


def test_a_kernel_that_does_not_compile_is_the_reason_kernels_are_unavailable(fake_cupy):
    fake_cupy.error = RuntimeError("NVRTC: identifier INFINITY is undefined")
    assert cuda_kernels_unavailable() == "gram.cu does not compile or load: NVRTC: identifier INFINITY is undefined"


def test_kernels_check_inputs_before_launch():
    with pytest.raises(KernelInputError, match="must be a CUDA tensor"):
        gram_cuda(torch.zeros(1, 4, 8, 8))
    with pytest.raises(KernelInputError, match="must be a CUDA tensor"):
        mrf_nearest_cuda(torch.zeros(4, 3), torch.zeros(5, 3))


@gpu
@pytest.mark.parametrize(("n", "m", "d"), [(100, 300, 27), (1000, 4000, 2304), (17, 5, 1)])
def test_patch_match_kernel_matches_the_reference(n, m, d):
    patches = normalize_patches(torch.randn(n, d, device="cuda"))
    style = normalize_patches(torch.randn(m, d, device="cuda"))
    index, score = mrf_nearest_cuda(patches, style)
    expected_index, expected_score = mrf_nearest_reference(patches.cpu(), style.cpu(), normalized=True)
    assert torch.allclose(score.cpu(), expected_score, atol=1e-5)
    # Near-ties may flip on rounding: the chosen patch must score as well as the reference's.
    chosen = (patches * style[index]).sum(1).cpu()
    assert (chosen >= expected_score - 1e-5).all()
    assert (index.cpu() == expected_index).float().mean() > 0.99
