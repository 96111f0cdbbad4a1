"""Which path gram() and mrf_nearest() take on CUDA tensors, and that a fallback to torch the user
did not ask for is counted and warned about (the GPU proof fails on it). CUDA tensors are stood
in for by fakes: the routing reads only device, dimension and dtype."""

from __future__ import annotations

import types

import pytest
import torch

import styleforge.kernels as kernels
from styleforge.kernels import KernelFallbackWarning, gram_route, kernel_fallbacks, reset_kernel_fallbacks


def _cuda_tensor(dtype, dim=4):
    return types.SimpleNamespace(device=torch.device("cuda", 0), is_cuda=True, dtype=dtype, dim=lambda: dim)


@pytest.fixture(autouse=True)
def clean(monkeypatch):
    # allow_tf32 is a property of torch's cuBLAS module, not an attribute in its __dict__: newer
    # pytest's monkeypatch restores such a name with delattr, which that module refuses. So it is
    # set and restored by assignment here, and the tests assign it too.
    monkeypatch.delenv("STYLEFORGE_DISABLE_CUDA_KERNELS", raising=False)
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    reset_kernel_fallbacks()
    yield
    reset_kernel_fallbacks()
    torch.backends.cuda.matmul.allow_tf32 = saved


def test_float64_on_cuda_takes_the_reference_instead_of_raising():
    # It used to reach gram_cuda, whose dtype check raised KernelInputError.
    assert gram_route(_cuda_tensor(torch.float64), None) == "reference"
    assert kernel_fallbacks() == {}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16_bit_features_take_cublas_until_the_kernel_is_measured_faster(dtype, monkeypatch):
    assert gram_route(_cuda_tensor(dtype), None) == "cublas"
    mode = "fp16" if dtype == torch.float16 else "bf16"
    monkeypatch.setattr(kernels._route, "KERNEL_MEASURED_FASTER", frozenset({mode}))
    assert gram_route(_cuda_tensor(dtype), None) == "kernel"


def test_tf32_takes_cublas_and_strict_float32_the_kernel(monkeypatch):
    assert gram_route(_cuda_tensor(torch.float32), None) == "kernel"
    torch.backends.cuda.matmul.allow_tf32 = True  # the fixture restores it
    assert gram_route(_cuda_tensor(torch.float32), None) == "cublas"


def test_a_fallback_nobody_asked_for_is_counted_and_warned_once():
    with pytest.warns(KernelFallbackWarning, match="CuPy is not installed"):
        assert gram_route(_cuda_tensor(torch.float32), "CuPy is not installed") == "fallback"
    gram_route(_cuda_tensor(torch.float32), "CuPy is not installed")
    assert kernel_fallbacks() == {"gram: CuPy is not installed": 2}


def test_kernels_switched_off_by_the_user_are_not_a_fallback(monkeypatch, recwarn):
    monkeypatch.setenv("STYLEFORGE_DISABLE_CUDA_KERNELS", "1")
    assert gram_route(_cuda_tensor(torch.float32), "disabled by STYLEFORGE_DISABLE_CUDA_KERNELS") == "reference"
    assert kernel_fallbacks() == {} and not recwarn.list


def test_mrf_nearest_records_its_fallback(monkeypatch):
    monkeypatch.setattr(kernels, "cuda_kernels_unavailable", lambda: "gram.cu does not compile or load: boom")
    monkeypatch.setattr(kernels, "mrf_nearest_reference", lambda *args, **kwargs: "reference")
    with pytest.warns(KernelFallbackWarning):
        assert kernels.mrf_nearest(_cuda_tensor(torch.float32, dim=2), None) == "reference"
    assert kernel_fallbacks() == {"mrf_nearest: gram.cu does not compile or load: boom": 1}


def test_cpu_routes_are_unchanged():
    assert gram_route(torch.zeros(1, 2, 3, 3), None) == "cpu"
    assert gram_route(torch.zeros(1, 2, 3, 3, dtype=torch.bfloat16), None) == "reference"
    features = torch.randn(2, 5, 4, 3, dtype=torch.float64)
    assert torch.allclose(kernels.gram(features), kernels.gram_reference(features))
