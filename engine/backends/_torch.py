"""The torch backend: autograd on the module itself, the reference every other backend matches."""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import cast

import torch

from styleforge.kernels import WinogradConv3x3

from .._backbone import VGGFeatures
from .._device import Precision
from .._errors import BackendUnavailableError
from .._files import cache_dir
from .._wait import waiting
from ._base import Backend

__all__ = ["TorchBackend"]

#: Winograd pays where the products dominate its additions: layers with this many input channels
#: (measured on an AVX2 EPYC, one core: see benchmarks/RESULTS.md).
WINOGRAD_MIN_CHANNELS = 256
#: Input shapes captured as CUDA graphs per backend when no plan says which (use_graphs); beyond
#: them, shapes run eagerly.
_MAX_GRAPHS = 16


def release_graphed(module: torch.nn.Module) -> None:
    """Free what make_graphed_callables captured for ``module`` now, without waiting for gc.

    torch replaces ``module.forward`` with a closure that refers back to the module (a reference
    cycle), and keeps the CUDA graphs and their static tensors in the closures of a class it
    defines per capture (classes are always in cycles). So ``del`` frees nothing until a
    ``gc.collect()``: here the forward is removed, every CUDAGraph reachable through those local
    closures is reset and every closure cell emptied, which drops the pools' tensors at once.
    """
    forward = module.__dict__.pop("forward", None)
    stack, seen = [forward], set()
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, type):
            stack += [getattr(value, "__func__", value) for value in vars(item).values()]
            continue
        if "<locals>" not in getattr(item, "__qualname__", ""):
            continue  # only the capture's own closures, never a module-level function
        for cell in getattr(item, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if isinstance(value, torch.cuda.CUDAGraph):
                value.reset()
            elif callable(value):
                stack.append(value)
            cell.cell_contents = None


class _TapTuple(torch.nn.Module):
    """The backbone with its taps as a tuple (what make_graphed_callables accepts)."""

    def __init__(self, backbone: VGGFeatures, taps: Sequence[str]) -> None:
        super().__init__()
        self.backbone, self.taps = backbone, tuple(taps)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.backbone(image)
        return tuple(features[name] for name in self.taps)


def winograd_network(backbone: VGGFeatures, *, min_channels: int = WINOGRAD_MIN_CHANNELS) -> VGGFeatures:
    """A shallow copy of ``backbone`` whose 3x3 stride-1 convolutions with at least
    ``min_channels`` inputs run by Winograd F(2x2, 3x3) (same weights; the original is untouched)."""
    network = copy.copy(backbone)
    network._modules = dict(backbone._modules)
    network.convs = torch.nn.ModuleDict({
        name: WinogradConv3x3(conv) if isinstance(conv, torch.nn.Conv2d) and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1) and conv.in_channels >= min_channels else conv
        for name, conv in backbone.convs.items()})
    return network


class TorchBackend(Backend):
    """Autograd on the torch module, channels-last (measured faster on CPU and GPU).

    ``precision``: fp32; tf32 (cuDNN convolutions in TF32 on CUDA, fp32 on CPU); bf16 or fp16:
    the network runs under autocast and its taps are handed out as fp32, so Gram sums and losses
    are fp32. fp16 gradients are loss-scaled (the normalised losses give per-pixel gradients far
    below fp16's smallest normal number) and unscaled at the image; the image, its gradient and
    the optimiser's state are fp32 throughout.

    ``winograd`` (CPU, fp32): the 3x3 convolutions with WINOGRAD_MIN_CHANNELS+ inputs run by
    Winograd F(2x2, 3x3) (backend_for turns it on where _cpu.winograd_pays measured it faster).
    ``compile``: the network (forward, and through AOTAutograd its backward) runs through
    ``torch.compile``, once per input size; it pays only where the compile time is won back
    (benchmarks/bench_cpu.py --compile measures both).
    """

    name = "torch"

    def __init__(self, backbone: VGGFeatures, device: torch.device, precision: Precision | str = "fp32",
                 cuda_graphs: bool = False, *, compile: bool = False, winograd: bool = False) -> None:
        precision = precision if isinstance(precision, Precision) else Precision(precision)
        # Module.to takes memory_format (documented, and done here), but torch's stubs list no such overload.
        on_device = backbone.to(device=device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        super().__init__(on_device, device, precision)
        if cuda_graphs and device.type != "cuda":
            raise BackendUnavailableError(f"--cuda-graphs needs a CUDA device, not {device.type}")
        if cuda_graphs and compile:
            raise BackendUnavailableError("--compile and --cuda-graphs: choose one")
        self.cuda_graphs = cuda_graphs
        self.compiled = compile
        self._network: Callable[[torch.Tensor], dict[str, torch.Tensor]] = self.backbone
        if winograd and device.type == "cpu" and not precision.is_half:
            self._network = winograd_network(self.backbone)
        if compile:
            # Inductor's compiled kernels go to styleforge's cache, so a later render of the same
            # network and size loads them instead of compiling again.
            os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "inductor"))
            self._network = torch.compile(self._network, dynamic=False)
        self._graphs: dict[tuple[int, ...], torch.nn.Module] = {}
        self._compiled_shapes: set[tuple[int, ...]] = set()
        self._graph_shapes: frozenset[tuple[int, int]] | None = None  # None: no plan said
        self._saved: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None

    def use_graphs(self, shapes: Collection[tuple[int, int]]) -> None:
        """Capture only these (height, width) shapes from now on; free the captures of others."""
        self._graph_shapes = frozenset((height, width) for height, width in shapes)
        stale = [key for key in self._graphs if tuple(key[-2:]) not in self._graph_shapes]
        for key in stale:
            release_graphed(self._graphs.pop(key))
        if stale and self.device.type == "cuda":
            torch.cuda.empty_cache()  # the freed pools go back to the device, for the next level

    def _graphed(self, image: torch.Tensor) -> torch.nn.Module | None:
        """The forward + backward for this input shape captured as CUDA graphs: the shapes the
        memory plan allows (use_graphs), or without a plan the first _MAX_GRAPHS shapes."""
        key = tuple(image.shape)
        if key not in self._graphs:
            if self._graph_shapes is not None and tuple(key[-2:]) not in self._graph_shapes:
                return None
            if len(self._graphs) >= _MAX_GRAPHS:
                return None
            sample = torch.rand(key, device=self.device).contiguous(memory_format=torch.channels_last)
            with self._context(cache=False):
                # Given one module (not a tuple of callables), it returns that module, its forward graphed.
                self._graphs[key] = cast(torch.nn.Module, torch.cuda.make_graphed_callables(
                    _TapTuple(self.backbone, self.taps), (sample.requires_grad_(True),)))
        return self._graphs[key]

    def _context(self, *, autocast: bool = True, cache: bool = True) -> contextlib.ExitStack:
        """The precision's TF32 switches, and autocast for halves (off for the backward)."""
        stack = contextlib.ExitStack()
        stack.enter_context(self.precision.numerics(self.device))
        if autocast:
            stack.enter_context(self.precision.autocast(self.device, cache=cache))
        return stack

    def _run(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        image = image.contiguous(memory_format=torch.channels_last)
        graphed = self._graphed(image) if self.cuda_graphs and torch.is_grad_enabled() else None
        if graphed is not None:
            # The graph's outputs are static buffers: the next replay overwrites them, which is
            # fine here, since a loss reads its features before the next forward.
            features = dict(zip(self.taps, graphed(image)))
        elif self.compiled and tuple(image.shape) not in self._compiled_shapes:
            self._compiled_shapes.add(tuple(image.shape))
            height, width = image.shape[-2:]
            with waiting(f"compiling the network for {width}x{height} (torch.compile, once per size)"), self._context():
                features = self._network(image)
        else:
            with self._context():
                features = self._network(image)
        if not self.precision.is_half:
            return features
        return {name: value.float() for name, value in features.items()}

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        leaf = image.detach().requires_grad_(True)
        with torch.enable_grad():
            features = self._run(leaf)
        self._saved = (leaf, features)
        return {name: value.detach() for name, value in features.items()}

    def backward(self, tap_grads: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if self._saved is None:
            raise RuntimeError("backward() needs a forward() first")
        leaf, features = self._saved
        self._saved = None
        names = [name for name in self.taps if name in tap_grads]
        grads = [tap_grads[n] for n in names]
        outputs = [features[n] for n in names]
        with self._context(autocast=False):
            if self.precision.name != "fp16":
                (grad,) = torch.autograd.grad(outputs, leaf, grads)
                return grad.contiguous()
            # Loss scaling: a power of two bringing the largest upstream gradient to 1, lowered
            # by 2^8 while the backward overflows (exact to undo; one host sync per iteration).
            largest = torch.stack([g.abs().amax() for g in grads]).amax().clamp_min(1e-30)
            scale = torch.exp2(-torch.floor(torch.log2(largest)))
            for attempt in range(4):
                (grad,) = torch.autograd.grad(outputs, leaf, [g * scale for g in grads], retain_graph=attempt < 3)
                if bool(torch.isfinite(grad).all()):
                    break
                scale = scale / 256
        return (grad / scale).contiguous()

    @torch.no_grad()
    def features(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._run(image)
