"""Compile the CUDA kernels with NVRTC as CuPy does at run time, with no GPU and no CuPy.

CuPy's RawModule hands NVRTC our NVRTC_OPTIONS (kernels/_cuda.py) plus its own: -I<CUDA>/include
(cuda_fp16.h, cuda_bf16.h, mma.h), -ftz=true and -arch=compute_<the GPU's capability>, and
instantiates templated kernels through name expressions (KERNELS). compile_with_nvrtc repeats
that with the cuda-bindings package (cuda.bindings.nvrtc; NVRTC itself from nvidia-cuda-nvrtc or
a CUDA toolkit). Why not nvcc alone: nvcc includes math.h and the CUDA runtime headers implicitly,
NVRTC does not, so a source nvcc accepts can still fail on the first GPU run.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._cuda import KERNELS, NVRTC_OPTIONS, kernel_source, name_expressions

__all__ = [
    "CUPY_OPTIONS", "NvrtcError", "bundled_headers_unavailable", "compile_with_nvrtc", "cuda_include_dir",
    "nvrtc_archs", "nvrtc_unavailable",
]

CUPY_OPTIONS = ("-ftz=true",)  # what cupy.cuda.compiler adds besides -I and -arch


class NvrtcError(RuntimeError):
    """NVRTC rejected a kernel source, or an expected kernel is missing from its output."""


@functools.cache
def nvrtc_unavailable() -> str | None:
    """None when NVRTC can be called from Python, else the reason it cannot."""
    try:
        from cuda.bindings import nvrtc

        _call(nvrtc.nvrtcVersion, "nvrtcVersion")
    except Exception as error:  # ImportError, or the NVRTC library cannot be loaded
        return f"NVRTC is not usable ({error}); pip install cuda-bindings nvidia-cuda-nvrtc"
    return None


def nvrtc_archs() -> tuple[int, ...]:
    """The compute capabilities this NVRTC compiles for (75, 80, ... 120 for CUDA 13)."""
    from cuda.bindings import nvrtc

    return tuple(_call(nvrtc.nvrtcGetSupportedArchs, "nvrtcGetSupportedArchs"))


def _call(function: Callable[..., tuple[Any, ...]], what: str, *args: object) -> Any:
    """Call a cuda.bindings.nvrtc function: check its status, return the rest of its result."""
    from cuda.bindings import nvrtc

    status, *rest = function(*args)
    if status != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise NvrtcError(f"{what} failed: {status.name}")
    return rest[0] if len(rest) == 1 else tuple(rest)


def _toolkit_roots() -> list[str]:
    """Where CuPy looks for the CUDA toolkit, in its order."""
    nvcc = shutil.which("nvcc")
    roots = [os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"),
             nvcc and str(Path(nvcc).resolve().parent.parent), "/usr/local/cuda"]
    return [root for root in roots if root]


@functools.cache
def cuda_include_dir() -> Path:
    """A directory with cuda_fp16.h: a CUDA toolkit's, found as CuPy finds it, else the headers
    that NVRTC bundles (CUDA 13), extracted once to the temporary directory."""
    for root in _toolkit_roots():
        if (Path(root) / "include" / "cuda_fp16.h").is_file():
            return Path(root) / "include"
    return _bundled_headers()


def _bundled_headers() -> Path:
    """NVRTC's own headers, installed once into the temporary directory.

    Whether the library has them is found by calling, not by ``hasattr``: cuda-bindings binds
    every function of its own CUDA version and looks each one up in the loaded library only when
    it is called, so a binding newer than the library (cuda-bindings 13.5 over the 13.0 NVRTC that
    torch's CUDA build pins) has the attribute and raises FunctionNotFoundError on the call.
    """
    from cuda.bindings import nvrtc

    major, minor = _call(nvrtc.nvrtcVersion, "nvrtcVersion")
    target = Path(tempfile.gettempdir()) / f"styleforge-nvrtc-headers-{major}.{minor}"
    missing = (f"no CUDA include directory (set CUDA_PATH to a CUDA toolkit), and NVRTC {major}.{minor} "
               "cannot install its bundled headers")
    install = getattr(nvrtc, "nvrtcInstallBundledHeaders", None)
    if install is None:
        raise NvrtcError(f"{missing}: this cuda-bindings has no nvrtcInstallBundledHeaders")
    try:
        _call(install, "nvrtcInstallBundledHeaders", str(target).encode(),
              nvrtc.NVRTC_INSTALL_HEADERS_SKIP_IF_EXISTS)
    except NvrtcError:
        raise
    except RuntimeError as error:  # cuda.bindings' FunctionNotFoundError: the library predates the binding
        raise NvrtcError(f"{missing} ({error}: the NVRTC library is older than cuda-bindings "
                         f"{_bindings_version()}; an nvidia-cuda-nvrtc of the same version has them)") from None
    return target


def bundled_headers_unavailable() -> str | None:
    """None when this NVRTC can install its bundled headers, else the reason (found by calling)."""
    try:
        _bundled_headers()
    except NvrtcError as error:
        return str(error)
    return None


def _bindings_version() -> str:
    from cuda import bindings

    return str(getattr(bindings, "__version__", "?"))


def compile_with_nvrtc(name: str, arch: int = 90, *, cubin: bool = False) -> bytes:
    """Compile kernels/cuda/<name>.cu as CuPy would on a GPU of compute capability ``arch``.

    Returns the PTX (``-arch=compute_<arch>``, CuPy's choice), or with ``cubin=True`` the SASS of
    ``-arch=sm_<arch>``, which also runs ptxas (register and shared-memory limits). Raises
    NvrtcError naming the file, the options and NVRTC's log when NVRTC rejects the source, or when
    a kernel of KERNELS[name] is missing from the output.
    """
    from cuda.bindings import nvrtc

    path = kernel_source(name)
    target = f"-arch={'sm' if cubin else 'compute'}_{arch}"
    options = [*NVRTC_OPTIONS, f"-I{cuda_include_dir()}", *CUPY_OPTIONS, target]
    program = _call(nvrtc.nvrtcCreateProgram, "nvrtcCreateProgram", path.read_bytes(), path.name.encode(), 0, [], [])
    try:
        for expression in name_expressions(name):
            _call(nvrtc.nvrtcAddNameExpression, "nvrtcAddNameExpression", program, expression.encode())
        (status,) = nvrtc.nvrtcCompileProgram(program, len(options), [o.encode() for o in options])
        log = bytearray(_call(nvrtc.nvrtcGetProgramLogSize, "nvrtcGetProgramLogSize", program))
        _call(nvrtc.nvrtcGetProgramLog, "nvrtcGetProgramLog", program, log)
        if status != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise NvrtcError(f"NVRTC could not compile {path} ({' '.join(options)}):\n"
                             f"{log.rstrip(bytes(1)).decode(errors='replace')}")
        ptx = bytearray(_call(nvrtc.nvrtcGetPTXSize, "nvrtcGetPTXSize", program))
        _call(nvrtc.nvrtcGetPTX, "nvrtcGetPTX", program, ptx)
        for kernel in KERNELS[name]:
            symbol = kernel
            if "<" in kernel:
                symbol = _call(nvrtc.nvrtcGetLoweredName, "nvrtcGetLoweredName", program, kernel.encode()).decode()
            if f".entry {symbol}(".encode() not in ptx:
                raise NvrtcError(f"{path} compiled, but kernel {kernel} ({symbol}) is not in the PTX")
        if not cubin:
            return bytes(ptx.rstrip(bytes(1)))
        binary = bytearray(_call(nvrtc.nvrtcGetCUBINSize, "nvrtcGetCUBINSize", program))
        _call(nvrtc.nvrtcGetCUBIN, "nvrtcGetCUBIN", program, binary)
        return bytes(binary)
    finally:
        nvrtc.nvrtcDestroyProgram(program)
