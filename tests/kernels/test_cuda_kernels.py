"""CUDA kernels: they compile with nvcc here; on a GPU they match the references."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch

from styleforge.kernels import (
    KernelInputError,
    cuda_kernels_unavailable,
    gram_cuda,
    gram_reference,
    kernel_source,
    mrf_nearest_cuda,
    mrf_nearest_reference,
    normalize_patches,
)


@pytest.mark.parametrize("name", ["gram", "patch_match"])
def test_kernel_sources_compile_with_nvcc(tmp_path, name):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    result = subprocess.run([nvcc, "-std=c++17", "-arch=sm_90", "-c", str(kernel_source(name)),
                             "-o", str(tmp_path / f"{name}.o")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / f"{name}.o").stat().st_size > 0


def test_kernels_check_inputs_before_launch():
    with pytest.raises(KernelInputError, match="must be a CUDA tensor"):
        gram_cuda(torch.zeros(1, 4, 8, 8))
    with pytest.raises(KernelInputError, match="must be a CUDA tensor"):
        mrf_nearest_cuda(torch.zeros(4, 3), torch.zeros(5, 3))


gpu = pytest.mark.skipif(cuda_kernels_unavailable() is not None,
                         reason=f"CUDA kernels cannot run here: {cuda_kernels_unavailable()}")


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 64, 32, 32), (1, 35, 17, 9), (2, 512, 64, 48)])
def test_gram_kernel_matches_the_reference(dtype, shape):
    features = torch.randn(*shape, device="cuda").to(dtype)
    expected = gram_reference(features.double()).float()
    result = gram_cuda(features)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2
    assert ((result - expected).abs().max() / expected.abs().max()).item() < tolerance
    leaf = features.float().requires_grad_(True)
    upstream = torch.randn(shape[0], shape[1], shape[1], device="cuda")
    (reference_grad,) = torch.autograd.grad(gram_reference(leaf), leaf, upstream)
    leaf_kernel = features.clone().requires_grad_(True)
    (kernel_grad,) = torch.autograd.grad(gram_cuda(leaf_kernel), leaf_kernel, upstream)
    assert ((kernel_grad.float() - reference_grad).abs().max() / reference_grad.abs().max()).item() < tolerance * 10


@gpu
def test_gram_kernel_rejects_bad_dtype_and_layout():
    with pytest.raises(KernelInputError, match="dtype float64"):
        gram_cuda(torch.zeros(1, 4, 8, 8, device="cuda", dtype=torch.float64))
    with pytest.raises(KernelInputError, match="contiguous"):
        gram_cuda(torch.zeros(1, 8, 8, 4, device="cuda").permute(0, 3, 1, 2))


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
