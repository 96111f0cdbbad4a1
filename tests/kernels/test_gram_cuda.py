"""The split-K Gram kernel (kernels/cuda/gram.cu): on the CPU, its index math under emulation,
its launch plan and its float32 summation order; on a GPU, against float64 up to 8K UHD."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from styleforge.kernels import _nvrtc, cuda_kernels_unavailable, gram, gram_cuda, kernel_source
from styleforge.kernels._cuda import (
    _K_TILE, _MAX_PARTIALS, _MIN_CHUNK, _SUB_TILES, _THREADS, _TILE, gram_splits, pairwise_sum_)

HOST = Path(__file__).parent / "cuda_host"
def gpu(test):
    """A GPU test: marked ``gpu`` (the GPU proof runs ``pytest -m gpu``), skipped with a reason here."""
    reason = f"CUDA kernels cannot run here: {cuda_kernels_unavailable()}"
    return pytest.mark.gpu(pytest.mark.skipif(cuda_kernels_unavailable() is not None, reason=reason)(test))


def test_launch_constants_match_the_source():
    defines = dict(re.findall(r"^#define (\w+) (\d+)", kernel_source("gram").read_text(), re.M))
    names = ("TILE", "K_TILE", "SUB_TILES", "THREADS")
    assert (_TILE, _K_TILE, _SUB_TILES, _THREADS) == tuple(int(defines[name]) for name in names)


@pytest.mark.skipif(_nvrtc.nvrtc_unavailable() is not None, reason=str(_nvrtc.nvrtc_unavailable()))
@pytest.mark.parametrize(("arch", "tensor_cores"), [(75, {"__half"}), (90, {"__half", "__nv_bfloat16"})])
def test_16_bit_features_take_tensor_cores_where_the_gpu_has_them(arch, tensor_cores):
    ptx = _nvrtc.compile_with_nvrtc("gram", arch).decode()
    entries = {re.match(r"\.\w+ \.entry (\w+)", part).group(1): part
               for part in re.split(r"(?=\.\w+ \.entry )", ptx)[1:]}
    for mangled, type_name in (("IfE", "float"), ("I6__halfE", "__half"), ("I13__nv_bfloat16E", "__nv_bfloat16")):
        assert ("wmma.mma" in entries[f"_Z12gram_partial{mangled}vPKT_Pfixx"]) == (type_name in tensor_cores)
        assert "wmma.mma" not in entries[next(name for name in entries if "backward" in name and mangled in name)]


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    """gram.cu built for the CPU with cuda_host/ (tensor-core path: __CUDA_ARCH__ 800)."""
    compiler = shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler (g++ or clang++) to build the CPU emulation")
    binary = tmp_path_factory.mktemp("emulation") / "gram_harness"
    command = [compiler, "-std=c++20", "-O0", "-pthread", "-D__CUDA_ARCH__=800", f"-I{HOST}",
               f'-DGRAM_CU="{kernel_source("gram")}"', str(HOST / "gram_harness.cpp"), "-o", str(binary)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return binary


@pytest.mark.parametrize("dtype", ["float", "half", "bfloat16"])
def test_kernels_are_exact_under_cpu_emulation(harness, dtype):
    # Integer features, so every float32 sum is exact and any indexing slip shows. Batch 2; 70
    # channels: a diagonal and an off-diagonal tile, both ragged; 130 positions in chunks of 64:
    # three splits, the last of 2 positions. half and bfloat16 take the WMMA path.
    result = subprocess.run([str(harness), dtype[0], "2", "70", "130", "3", "64"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("batch", "channels", "positions"), [
    (1, 64, 3840 * 2160), (1, 64, 7680 * 4320), (1, 512, 480 * 270), (2, 512, 64 * 48), (1, 35, 153), (3, 1, 1)])
def test_splits_fill_the_gpu_and_cover_every_position_once(batch, channels, positions):
    splits, chunk = gram_splits(batch, channels, positions, sms=132)
    assert chunk % _K_TILE == 0 and (splits - 1) * chunk < positions <= splits * chunk
    assert batch * splits * channels**2 <= max(_MAX_PARTIALS, batch * channels**2)
    side = -(-channels // _TILE)
    if positions >= 8 * 132 * _MIN_CHUNK:  # big maps: several blocks per SM of an H100
        assert side * (side + 1) // 2 * splits * batch >= 4 * 132


@pytest.mark.parametrize("count", range(1, 10))
def test_pairwise_sum_adds_every_partial_once(count):
    partials = (2.0 ** torch.arange(count, dtype=torch.float64)).repeat(2, 3, 1).permute(0, 2, 1).contiguous()
    assert torch.equal(pairwise_sum_(partials), torch.full((2, 3), 2.0**count - 1, dtype=torch.float64))


def test_kernel_summation_order_keeps_float32_error_small_at_4k():
    """One diagonal entry of relu-like features at 4K UHD, summed in float32 in the kernel's order:
    FMA chains of K_TILE * SUB_TILES positions, folded per block, then the host's pairwise tree."""
    positions = 3840 * 2160
    x = np.random.default_rng(0).random(positions, dtype=np.float32)
    products = x * x
    exact = float(np.dot(x.astype(np.float64), x.astype(np.float64)))
    serial = float(np.cumsum(products, dtype=np.float32)[-1])  # the old kernel: one running sum
    splits, chunk = gram_splits(1, 64, positions, sms=132)
    sub = _K_TILE * _SUB_TILES
    flat = np.zeros(splits * chunk, np.float32)
    flat[:positions] = products
    blocks = np.zeros((splits, -(-chunk // sub) * sub), np.float32)  # zeros change no float sum
    blocks[:, :chunk] = flat.reshape(splits, chunk)
    chains = np.cumsum(blocks.reshape(splits, -1, sub), axis=2, dtype=np.float32)[:, :, -1]
    folded = np.cumsum(chains, axis=1, dtype=np.float32)[:, -1]
    total = pairwise_sum_(torch.from_numpy(folded)[None]).item()
    assert abs(serial - exact) / exact > 1e-3
    assert abs(total - exact) / exact < 1e-6


def _gram64(features: torch.Tensor) -> torch.Tensor:
    """The float64 Gram, in slices of positions (an 8K map in float64 is 17 GB)."""
    flat = features.flatten(2)
    total = 0
    for start in range(0, flat.shape[2], 1 << 22):
        piece = flat[:, :, start : start + (1 << 22)].double()
        total = total + piece @ piece.transpose(1, 2)
    return total / flat.shape[2]


def _relative(result: torch.Tensor, expected: torch.Tensor) -> float:
    return ((result.double() - expected).abs().max() / expected.abs().max()).item()


def _backward_error(features: torch.Tensor, upstream: torch.Tensor, grad: torch.Tensor) -> float:
    """max |grad - dF| / max |dF| with dF = (dG + dG^T) F / P in float64, in slices of positions."""
    flat, grad = features.flatten(2), grad.flatten(2)
    symmetric = (upstream + upstream.transpose(1, 2)).double() / flat.shape[2]
    error = scale = 0.0
    for start in range(0, flat.shape[2], 1 << 22):
        expected = symmetric @ flat[:, :, start : start + (1 << 22)].double()
        error = max(error, (grad[:, :, start : start + (1 << 22)].double() - expected).abs().max().item())
        scale = max(scale, expected.abs().max().item())
    return error / scale


_FORWARD = {torch.float32: 1e-5, torch.float16: 2e-5, torch.bfloat16: 2e-5}  # vs the same rounded inputs
_BACKWARD = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}  # dF is rounded to the dtype


def _check_forward_and_backward(features: torch.Tensor) -> None:
    batch, channels = features.shape[:2]
    result = gram_cuda(features)
    assert result.dtype == torch.float32 and result.shape == (batch, channels, channels)
    assert torch.equal(result, result.transpose(1, 2))
    assert _relative(result, _gram64(features)) < _FORWARD[features.dtype]
    upstream = torch.randn(batch, channels, channels, device="cuda")
    leaf = features.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(gram_cuda(leaf), leaf, upstream)
    assert grad.dtype == features.dtype and grad.shape == features.shape
    assert _backward_error(features, upstream, grad) < _BACKWARD[features.dtype]


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 64, 32, 32), (1, 35, 17, 9), (2, 512, 64, 48), (2, 70, 300, 301),
                                   (1, 130, 257, 129), (3, 1, 1, 1)])
def test_gram_kernel_matches_float64(dtype, shape):
    _check_forward_and_backward(torch.randn(*shape, device="cuda").to(dtype))


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("height", "width"), [(2160, 3840), (4320, 7680)], ids=["4K-UHD", "8K-UHD"])
def test_gram_kernel_matches_float64_at_uhd_sizes(dtype, height, width):
    # relu1_1 of a 4K / 8K render: 64 channels, 8.3M / 33.2M positions, all >= 0 (no cancellation).
    _check_forward_and_backward(torch.randn(1, 64, height, width, device="cuda").relu_().to(dtype))


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_public_gram_takes_non_contiguous_features(dtype):
    base = torch.randn(2, 48, 37, 41, device="cuda", dtype=dtype)
    for features in (base.to(memory_format=torch.channels_last), base[:, ::2, :, 1:]):
        assert not features.is_contiguous()
        leaf = features.detach().requires_grad_(True)
        result = gram(leaf)
        assert _relative(result, _gram64(features)) < _FORWARD[dtype]
        upstream = torch.randn_like(result)
        (grad,) = torch.autograd.grad(result, leaf, upstream)
        assert _backward_error(features, upstream, grad) < _BACKWARD[dtype]
