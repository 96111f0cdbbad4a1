"""Backends: where the VGG forward pass and its image gradient run.

One interface, three implementations:

- ``torch``: autograd, the reference;
- ``onnxruntime``: the exported forward/backward graphs (CPU provider everywhere; CUDA and
  TensorRT execution providers when present, with I/O binding so tensors stay on the GPU);
- ``tensorrt``: engines built from the same graphs with the TensorRT Python API.

The loss terms and the optimiser stay in torch: a backend returns features for an image, then,
given the loss gradients at those features, the gradient with respect to the image.
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from ._backbone import VGGFeatures
from ._config import BACKENDS, PRECISIONS
from ._errors import BackendUnavailableError, check_choice
from ._export import ExportedGraphs, export_onnx
from ._weights import cache_dir

__all__ = [
    "BACKENDS",
    "Backend",
    "OnnxRuntimeBackend",
    "TorchBackend",
    "available_backends",
    "create_backend",
    "record_fastest_backend",
]

class Backend(abc.ABC):
    """Features of an image at the backbone's taps, and the image gradient of a loss on them.

    ``forward(image)`` returns {tap: (1, C, H/s, W/s)} and keeps what ``backward`` needs;
    ``backward({tap: dL/dtap})`` returns dL/dimage (1, 3, H, W) for the last ``forward``; it
    needs a gradient for every tap (zeros for a tap the loss does not use).
    ``features(image)`` is a forward that keeps nothing (for targets).
    """

    name: str

    def __init__(self, backbone: VGGFeatures, device: torch.device) -> None:
        self.backbone = backbone
        self.device = device
        self.taps = tuple(backbone.taps)

    @abc.abstractmethod
    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]: ...

    @abc.abstractmethod
    def backward(self, tap_grads: Mapping[str, torch.Tensor]) -> torch.Tensor: ...

    def features(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward(image)


_HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: Input shapes captured as CUDA graphs per backend (a pyramid's levels; tiles beyond run eagerly).
_MAX_GRAPHS = 16


class _TapTuple(torch.nn.Module):
    """The backbone with its taps as a tuple (what make_graphed_callables accepts)."""

    def __init__(self, backbone: VGGFeatures, taps: Sequence[str]) -> None:
        super().__init__()
        self.backbone, self.taps = backbone, tuple(taps)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.backbone(image)
        return tuple(features[name] for name in self.taps)


class TorchBackend(Backend):
    """Autograd on the torch module, channels-last (measured faster on CPU and GPU).

    ``precision``: fp32; tf32 (cuDNN convolutions in TF32 on CUDA, fp32 on CPU); bf16 or fp16:
    the network runs under autocast and its taps are handed out as fp32, so Gram sums and losses
    are fp32. fp16 gradients are loss-scaled (the normalised losses give per-pixel gradients far
    below fp16's smallest normal number) and unscaled at the image; the image, its gradient and
    the optimiser's state are fp32 throughout.
    """

    name = "torch"

    def __init__(self, backbone: VGGFeatures, device: torch.device, precision: str = "fp32",
                 cuda_graphs: bool = False) -> None:
        super().__init__(backbone.to(device=device, memory_format=torch.channels_last), device)
        self.precision = check_choice("--precision", precision, PRECISIONS)
        if cuda_graphs and device.type != "cuda":
            raise BackendUnavailableError(f"--cuda-graphs needs a CUDA device, not {device.type}")
        self.cuda_graphs = cuda_graphs
        self._graphs: dict[tuple[int, ...], torch.nn.Module] = {}
        self._saved: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None

    def _graphed(self, image: torch.Tensor):
        """The forward + backward for this input shape captured as CUDA graphs (one per shape,
        the few a pyramid needs; other shapes, such as edge tiles, run eagerly)."""
        key = tuple(image.shape)
        if key not in self._graphs:
            if len(self._graphs) >= _MAX_GRAPHS:
                return None
            sample = torch.rand(key, device=self.device).contiguous(memory_format=torch.channels_last)
            with self._context(cache=False):
                self._graphs[key] = torch.cuda.make_graphed_callables(
                    _TapTuple(self.backbone, self.taps), (sample.requires_grad_(True),))
        return self._graphs[key]

    def _context(self, *, autocast: bool = True, cache: bool = True) -> contextlib.ExitStack:
        """cuDNN's TF32 switch as --precision says (its default is on), and autocast for halves."""
        stack = contextlib.ExitStack()
        if self.device.type == "cuda":
            stack.enter_context(torch.backends.cudnn.flags(enabled=True, allow_tf32=self.precision == "tf32"))
        if autocast and self.precision in _HALF:
            # CUDA graphs need autocast's weight-cast cache off (cache=False) while capturing.
            stack.enter_context(torch.autocast(self.device.type, dtype=_HALF[self.precision], cache_enabled=cache))
        return stack

    def _run(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        image = image.contiguous(memory_format=torch.channels_last)
        graphed = self._graphed(image) if self.cuda_graphs and torch.is_grad_enabled() else None
        if graphed is not None:
            # The graph's outputs are static buffers: the next replay overwrites them, which is
            # fine here, since a loss reads its features before the next forward.
            features = dict(zip(self.taps, graphed(image)))
        else:
            with self._context():
                features = self.backbone(image)
        if self.precision not in _HALF:
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
            if self.precision != "fp16":
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


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailableError(
            "--backend onnxruntime needs onnxruntime: pip install onnxruntime "
            "(or onnxruntime-gpu for CUDA, never both)"
        ) from None
    return onnxruntime


class OnnxRuntimeBackend(Backend):
    """The exported graphs on onnxruntime.

    On CPU, inputs and outputs are shared with torch without copies (numpy views). On CUDA the
    CUDA execution provider runs with I/O binding on torch's tensors, so nothing crosses to the
    host per iteration. The session must really use the provider asked for: onnxruntime falls
    back to CPU silently when CUDA is missing, so get_providers() is checked.
    """

    name = "onnxruntime"

    def __init__(self, backbone: VGGFeatures, device: torch.device, *, model: str,
                 threads: int | None = None, providers: list[str] | None = None) -> None:
        super().__init__(backbone, device)
        ort = _ort()
        self.graphs: ExportedGraphs = export_onnx(backbone, model=model)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or (os.cpu_count() or 1)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # The CPU arena keeps peak allocations for reuse: 7.1 GB vs 4.4 GB at 1024 px, as measured
        # for issue #3 (not re-measured here).
        options.enable_cpu_mem_arena = False
        if providers is None:
            providers = ["CUDAExecutionProvider"] if device.type == "cuda" else ["CPUExecutionProvider"]
        wanted = providers[0]
        if wanted not in ort.get_available_providers():
            raise BackendUnavailableError(
                f"--backend onnxruntime on {device.type}: {wanted} is not in this onnxruntime build "
                f"({', '.join(ort.get_available_providers())}); install onnxruntime-gpu for CUDA"
            )
        provider_list = [(p, {"device_id": device.index or 0}) if p == "CUDAExecutionProvider" else p
                         for p in providers]
        self._sessions = {}
        for which, path in (("forward", self.graphs.forward_path), ("backward", self.graphs.backward_path)):
            session = ort.InferenceSession(str(path), sess_options=options, providers=provider_list)
            if session.get_providers()[0] != wanted:
                raise BackendUnavailableError(
                    f"--backend onnxruntime: {wanted} could not start ({session.get_providers()} in use); "
                    "check the CUDA libraries onnxruntime-gpu needs"
                )
            self._sessions[which] = session
        self._masks: list[torch.Tensor] | None = None
        self._image_size: tuple[int, int] = (0, 0)

    def _run(self, which: str, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        session = self._sessions[which]
        if self.device.type == "cpu":
            feeds = {name: tensor.detach().contiguous().numpy() for name, tensor in inputs.items()}
            return [torch.from_numpy(array) for array in session.run(None, feeds)]
        # I/O binding on torch's own CUDA buffers: outputs are allocated here with the shapes the
        # graph will produce, so nothing is copied and nothing goes through the host.
        binding = session.io_binding()
        device_id = self.device.index or 0
        height, width = self._image_size
        keep = []  # bound by raw pointer: the contiguous copies must live until the run is done
        for name, tensor in inputs.items():
            tensor = tensor.detach().contiguous()
            keep.append(tensor)
            binding.bind_input(name, "cuda", device_id, _numpy_dtype(tensor.dtype), tuple(tensor.shape),
                               tensor.data_ptr())
        outputs = []
        for output in session.get_outputs():
            dtype = torch.bool if output.name.startswith("mask_") else torch.float32
            tensor = torch.empty(self.graphs.shape_of(output.name, height, width), dtype=dtype, device=self.device)
            binding.bind_output(output.name, "cuda", device_id, _numpy_dtype(dtype), tuple(tensor.shape),
                                tensor.data_ptr())
            outputs.append(tensor)
        torch.cuda.current_stream(self.device).synchronize()  # inputs written by torch must be ready
        session.run_with_iobinding(binding)
        return outputs

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        self._image_size = tuple(image.shape[-2:])
        outputs = self._run("forward", {"image": image.float()})
        count = len(self.taps)
        self._masks = outputs[count:]
        return dict(zip(self.taps, outputs[:count]))

    def backward(self, tap_grads: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if self._masks is None:
            raise RuntimeError("backward() needs a forward() first")
        inputs = dict(zip(self.graphs.backward_inputs[: len(self._masks)], self._masks))
        inputs.update({f"grad_{name}": tap_grads[name].float() for name in self.taps})
        self._masks = None
        (grad,) = self._run("backward", inputs)
        return grad


def _numpy_dtype(dtype: torch.dtype):
    import numpy as np

    return {torch.float32: np.float32, torch.float16: np.float16, torch.bool: np.bool_}[dtype]


def available_backends(device: torch.device) -> list[str]:
    """Backends that can run on ``device`` here (without building anything)."""
    names = ["torch"]
    try:
        ort = _ort()
        wanted = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
        if wanted in ort.get_available_providers():
            names.append("onnxruntime")
    except BackendUnavailableError:
        pass
    if device.type == "cuda":
        from ._tensorrt import tensorrt_available

        if tensorrt_available() is None:
            names.append("tensorrt")
    return names


def _choice_file() -> Path:
    return cache_dir() / "fastest-backend.json"


def _machine_key(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{os.cpu_count()}"


def record_fastest_backend(device: torch.device, timings: Mapping[str, float]) -> str:
    """Remember which backend measured fastest on this machine (``styleforge bench`` calls it)."""
    fastest = min(timings, key=timings.__getitem__)
    path = _choice_file()
    try:
        record = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        record = {}
    record[_machine_key(device)] = {"fastest": fastest, "ms_per_iteration": dict(timings)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))
    return fastest


def _auto_backend(device: torch.device) -> str:
    """The fastest backend measured on this machine, else TensorRT on a GPU, else torch."""
    present = available_backends(device)
    try:
        record = json.loads(_choice_file().read_text()).get(_machine_key(device), {})
        if record.get("fastest") in present:
            return record["fastest"]
    except (OSError, ValueError):
        pass
    return "tensorrt" if "tensorrt" in present else "torch"


def create_backend(name: str, backbone: VGGFeatures, device: torch.device, *, model: str,
                   precision: str = "fp32", sizes: Sequence[tuple[int, int]] = ((512, 512),),
                   cuda_graphs: bool = False) -> Backend:
    """Build the named backend (``auto`` picks as described in _auto_backend).

    ``sizes``: the (height, width) sizes the render will run at (TensorRT's profile spans them).
    ``cuda_graphs``: capture the torch backend's passes as CUDA graphs (the exported backends
    have their own engines and ignore it).
    """
    check_choice("--backend", name, BACKENDS)
    check_choice("--precision", precision, PRECISIONS)
    if name == "auto":
        name = _auto_backend(device)
        if name == "onnxruntime" and precision in _HALF:
            name = "torch"
    if name == "torch":
        return TorchBackend(backbone, device, precision, cuda_graphs)
    if name == "onnxruntime":
        if precision in _HALF:
            raise BackendUnavailableError(f"--precision {precision}: the onnxruntime backend runs the fp32 graphs; "
                                          "use --backend torch or tensorrt, or --precision fp32")
        return OnnxRuntimeBackend(backbone, device, model=model)
    from ._tensorrt import TensorRTBackend

    return TensorRTBackend(backbone, device, model=model, precision=precision, sizes=sizes)
