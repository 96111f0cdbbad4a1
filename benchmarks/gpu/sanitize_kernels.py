"""The CuPy kernels at small, ragged shapes, for compute-sanitizer (memcheck, racecheck,
synccheck): every Gram dtype forward and backward, patch matching with ties. Exits 0 with a
note where the kernels cannot run (the dry run), 1 when a result is wrong."""

from __future__ import annotations

import sys

import torch

from styleforge.kernels import cuda_kernels_unavailable, gram_cuda, gram_reference, mrf_nearest_cuda, normalize_patches


def main() -> int:
    reason = cuda_kernels_unavailable()
    if reason is not None:
        print(f"kernels not run: {reason}")
        return 0
    wrong = 0
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for shape in ((2, 70, 13, 11), (1, 130, 9, 15), (3, 1, 1, 1)):
            features = torch.randn(*shape, device="cuda").to(dtype).requires_grad_(True)
            result = gram_cuda(features)
            result.sum().backward()
            expected = gram_reference(features.detach().double())
            wrong += not torch.allclose(result.double(), expected, rtol=1e-2, atol=1e-2)
    style = normalize_patches(torch.randn(37, 19, device="cuda"))
    patches = torch.cat([style[:5], normalize_patches(torch.randn(28, 19, device="cuda"))])
    index, _ = mrf_nearest_cuda(patches, torch.cat([style, style]))  # every best patch is tied
    wrong += not bool((index[:5].cpu() == torch.arange(5)).all())
    torch.cuda.synchronize()
    print(f"{wrong} wrong results")
    return int(wrong != 0)


if __name__ == "__main__":
    sys.exit(main())
