"""The CUDA kernels on the CPU: patch_match.cu under the host emulation (tests/kernels/cuda_host:
exact small-integer scores, ties, odd shapes; gram.cu's own harness is run by test_gram_cuda.py),
both harnesses built with AddressSanitizer + UBSan and with ThreadSanitizer (out-of-bounds shared
or global accesses, undefined arithmetic, and races between emulated threads: a missing
__syncthreads shows as a data race), and the launch limits: grid and block in the emulation's
launch(), shared memory and registers per block from ptxas."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from styleforge.kernels import kernel_source
from styleforge.kernels._cuda import _MRF_TILE, _THREADS

HOST = Path(__file__).parent / "cuda_host"
COMPILER = shutil.which("g++") or shutil.which("clang++")
needs_compiler = pytest.mark.skipif(COMPILER is None, reason="no C++ compiler (g++ or clang++) to build the emulation")

HARNESSES = {
    "gram": ("gram_harness.cpp", ["-D__CUDA_ARCH__=800", f'-DGRAM_CU="{kernel_source("gram")}"']),
    "patch_match": ("patch_match_harness.cpp", [f'-DPATCH_MATCH_CU="{kernel_source("patch_match")}"']),
}
#: A few runs per harness: float (CUDA cores) and bfloat16 (WMMA) Gram tiles, ragged; patch
#: matching with ties and with odd shapes (a patch width below, between and above TILE_D).
RUNS = {"gram": [["f", "1", "70", "130", "3", "64"], ["b", "1", "70", "130", "3", "64"]],
        "patch_match": [["33", "37", "19", "1"], ["17", "5", "1", "0"]]}
SANITIZERS = {"address,undefined": ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"],
              "thread": ["-fsanitize=thread"]}


def _build(name: str, folder: Path, flags: list[str], source: Path | None = None) -> Path:
    harness, defines = HARNESSES[name]
    if source is not None:
        defines = [f'-DPATCH_MATCH_CU="{source}"']
    binary = folder / f"{name}_harness"
    command = [COMPILER, "-std=c++20", "-pthread", f"-I{HOST}", *defines, *flags, str(HOST / harness),
               "-o", str(binary)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return binary


def _run(binary: Path, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def patch_match(tmp_path_factory):
    if COMPILER is None:
        pytest.skip("no C++ compiler (g++ or clang++) to build the emulation")
    return _build("patch_match", tmp_path_factory.mktemp("patch_match"), ["-O1"])


@pytest.mark.parametrize(("n", "m", "d", "ties"), [
    (33, 37, 19, 1), (40, 50, 35, 1), (17, 5, 1, 1), (17, 5, 1, 0), (33, 37, 19, 0), (1, 1, 1, 0), (16, 16, 16, 0),
    (5, 100, 3, 1)])
def test_patch_match_is_exact_and_keeps_the_first_maximum(patch_match, n, m, d, ties):
    # n, m not multiples of TILE (16): ragged image and style tiles; d around TILE_D (16).
    result = _run(patch_match, [str(n), str(m), str(d), str(ties)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("0 mismatches")


@needs_compiler
def test_the_harness_catches_a_kernel_that_keeps_the_last_maximum(tmp_path):
    source = kernel_source("patch_match").read_text()
    assert "if (s > my_best)" in source
    planted = tmp_path / "patch_match.cu"
    planted.write_text(source.replace("if (s > my_best)", "if (s >= my_best)"))
    binary = _build("patch_match", tmp_path, ["-O1"], source=planted)
    result = _run(binary, ["33", "37", "19", "1"])
    assert result.returncode == 1 and not result.stdout.startswith("0 mismatches")


@needs_compiler
def test_a_launch_beyond_cudas_limits_is_refused(tmp_path):
    # 65 x 16 = 1040 threads in a block: the device would refuse it, so does the emulation.
    source = tmp_path / "patch_match.cu"
    source.write_text(kernel_source("patch_match").read_text().replace("#define TILE 16", "#define TILE 65"))
    result = _run(_build("patch_match", tmp_path, ["-O0"], source=source), ["3", "3", "3", "0"])
    assert result.returncode == 3 and "launch limits exceeded" in result.stderr


@needs_compiler
@pytest.mark.parametrize("sanitizer", sorted(SANITIZERS))
@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_harnesses_run_clean_under_sanitizers(tmp_path, name, sanitizer):
    binary = _build(name, tmp_path, ["-O1", "-g", "-fno-omit-frame-pointer", *SANITIZERS[sanitizer]])
    for args in RUNS[name]:
        result = _run(binary, args)
        report = result.stderr
        assert result.returncode == 0 and "runtime error" not in report and "Sanitizer" not in report, \
            f"{name} {' '.join(args)} under {sanitizer}:\n{result.stdout}{report[-4000:]}"


@pytest.mark.parametrize(("name", "threads"), [("gram", _THREADS), ("patch_match", _MRF_TILE * _MRF_TILE)])
def test_shared_memory_and_registers_fit_a_block(tmp_path, name, threads):
    # ptxas' own figures for sm_90: static shared memory within 48 KiB per block, and the block's
    # registers within the SM's 64K (a launch past either fails on the device).
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    result = subprocess.run([nvcc, "-std=c++17", "-arch=sm_90", "--resource-usage", "-c", str(kernel_source(name)),
                             "-o", str(tmp_path / f"{name}.o")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    usage = re.findall(r"Used (\d+) registers.*?(\d+) bytes smem", result.stdout + result.stderr)
    expected = 6 if name == "gram" else 1  # every instantiated kernel reports
    assert len(usage) == expected, result.stdout + result.stderr
    for registers, shared in usage:
        assert int(shared) <= 48 * 1024 and int(registers) * threads <= 65536, (registers, shared)
