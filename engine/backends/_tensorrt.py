"""TensorRT backend: engines built from the exported graphs, in explicit, cached steps.

export -> parse (every parser error reported) -> optimisation profile covering the render's
sizes -> precision after a capability check -> serialize into a cache keyed by the ONNX hash,
TensorRT version, GPU, precision and profile. A cache entry whose checksum does not match, or
that TensorRT refuses to deserialize, is rebuilt, never trusted.

Only the VGG passes run in TensorRT; the losses and the optimiser stay in torch in fp32, so with
fp16/bf16 engines only the features and their gradient are half precision.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

import torch

from .._backbone import VGGFeatures
from .._device import Precision
from .._errors import BackendUnavailableError
from .._files import atomic_write, cache_dir, sha256_file
from .._wait import waiting
from ._base import Backend
from ._export import ExportedGraphs, export_onnx

__all__ = ["TensorRTBackend", "tensorrt_available"]

_WORKSPACE_BYTES = 8 << 30


def tensorrt_available() -> str | None:
    """None when TensorRT and a CUDA GPU are usable, else what is missing."""
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to torch"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt package is not installed (pip install tensorrt-cu13, see README)"
    return None


def _trt() -> ModuleType:
    missing = tensorrt_available()
    if missing is not None:
        raise BackendUnavailableError(f"--backend tensorrt: {missing}")
    import tensorrt

    return tensorrt



#: An optimisation profile: the smallest, the optimal and the largest (height, width).
_Profile = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


class _Engine:
    """One deserialized engine with its execution context, run on torch's current stream."""

    def __init__(self, trt: ModuleType, serialized: bytes, logger: object) -> None:
        self.trt = trt
        self.runtime = trt.Runtime(logger)
        self.engine = self.runtime.deserialize_cuda_engine(serialized)
        if self.engine is None:
            raise ValueError("TensorRT could not deserialize the engine")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def __call__(self, inputs: Mapping[str, torch.Tensor], device: torch.device,
                 stream: int) -> dict[str, torch.Tensor]:
        """Run on ``stream`` (a cudaStream_t as an int), outputs allocated on ``device``: the
        backend's own, not whichever GPU and stream happen to be current."""
        # TensorRT reads raw pointers: converted inputs stay referenced until the enqueue below
        # (after it, torch's stream-ordered allocator makes releasing them safe).
        keep = []
        for name in self.inputs:
            tensor = inputs[name].contiguous()
            expected = _TORCH_DTYPES[self.engine.get_tensor_dtype(name)]
            if tensor.dtype != expected:
                tensor = tensor.to(expected)
            keep.append(tensor)
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            out = torch.empty(shape, dtype=_TORCH_DTYPES[self.engine.get_tensor_dtype(name)], device=device)
            self.context.set_tensor_address(name, out.data_ptr())
            outputs[name] = out
        if not self.context.execute_async_v3(stream):
            raise RuntimeError("TensorRT execution failed")
        return outputs


_TORCH_DTYPES: dict[object, torch.dtype] = {}  # tensorrt.DataType -> torch's


def _fill_dtypes(trt: ModuleType) -> None:
    if not _TORCH_DTYPES:
        _TORCH_DTYPES.update({trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
                              trt.DataType.BOOL: torch.bool, trt.DataType.INT32: torch.int32,
                              trt.DataType.INT64: torch.int64})
        if hasattr(trt.DataType, "BF16"):
            _TORCH_DTYPES[trt.DataType.BF16] = torch.bfloat16


class TensorRTBackend(Backend):
    """The exported forward/backward graphs as TensorRT engines.

    ``sizes``: the (height, width) image sizes the render will use (every pyramid level); the
    optimisation profile spans them, and a size outside it triggers a rebuild with a wider one.
    """

    name = "tensorrt"

    @classmethod
    def unsupported(cls, precision: Precision, device: torch.device) -> str | None:
        missing = tensorrt_available()
        if missing is not None:
            return f"--backend tensorrt: {missing}"
        if precision.name == "bf16":
            # Halves come from the exported graphs' types, and ONNX's Conv takes bfloat16 only from
            # opset 22, beyond what the TorchScript exporter writes.
            return ("--precision bf16: the TensorRT backend runs fp16 (ONNX Conv has no bfloat16 before opset 22); "
                    "use --precision fp16, or --backend torch for bf16")
        return None

    def __init__(self, backbone: VGGFeatures, device: torch.device, precision: Precision | str = "fp32", *,
                 model: str, sizes: Sequence[tuple[int, int]] = ((512, 512),)) -> None:
        precision = precision if isinstance(precision, Precision) else Precision(precision)
        reason = self.unsupported(precision, device)
        if reason is not None:
            raise BackendUnavailableError(reason)
        super().__init__(backbone, device, precision)
        self.trt = _trt()
        _fill_dtypes(self.trt)
        # Halves come from the graphs' own types, in a strongly typed network: TensorRT 11 has no
        # FP16/BF16 builder flags (and with them, 10 would be free to pick other precisions).
        self.typed = precision.is_half
        self.graphs: ExportedGraphs = export_onnx(backbone, model=model,
                                                  dtype=precision.name if self.typed else "fp32")
        self.logger = self.trt.Logger(self.trt.Logger.WARNING)
        self._sizes = list(sizes)
        self._engines: dict[str, _Engine] = {}
        self._profile: _Profile | None = None
        self._masks: dict[str, torch.Tensor] | None = None
        self.engine_paths: list[Path] = []

    def build(self) -> list[Path]:
        """Build (or load from the cache) engines whose profile spans every size given."""
        height, width = max(self._sizes, key=lambda hw: hw[0] * hw[1])
        self._ensure(height, width)
        return list(self.engine_paths)

    # --- building ---------------------------------------------------------------------------

    def _profile_for(self, size: tuple[int, int]) -> _Profile:
        sizes = self._sizes + [size]
        low = (min(h for h, _ in sizes), min(w for _, w in sizes))
        high = (max(h for h, _ in sizes), max(w for _, w in sizes))
        return low, size, high

    def _engine(self, which: str, onnx_path: Path, profile: _Profile) -> _Engine:
        trt = self.trt
        low, opt, high = profile
        gpu = torch.cuda.get_device_name(self.device)
        capability = torch.cuda.get_device_capability(self.device)
        key_text = json.dumps([sha256_file(onnx_path), trt.__version__, gpu, capability, self.precision.name,
                               low, opt, high])
        key = hashlib.sha256(key_text.encode()).hexdigest()[:24]
        path = cache_dir() / "tensorrt" / f"{which}-{self.precision.name}-{key}.engine"
        checksum = path.with_name(path.name + ".sha256")
        self.engine_paths.append(path)
        if path.exists() and checksum.exists() and checksum.read_text().strip() == sha256_file(path):
            try:
                return _Engine(trt, path.read_bytes(), self.logger)
            except ValueError:
                pass  # stale or corrupt: rebuild below
        serialized = self._build(onnx_path, profile)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, serialized)
        atomic_write(checksum, (sha256_file(path) + "\n").encode())
        return _Engine(trt, serialized, self.logger)

    def _build(self, onnx_path: Path, profile: _Profile) -> bytes:
        trt = self.trt
        builder = trt.Builder(self.logger)
        strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        flags = 0
        if self.typed:
            if strongly_typed is None:
                raise BackendUnavailableError(f"--precision {self.precision.name}: TensorRT {trt.__version__} cannot "
                                              "build strongly typed networks; use --precision fp32 or tf32, or "
                                              "--backend torch")
            flags = 1 << int(strongly_typed)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendUnavailableError(f"TensorRT could not parse {onnx_path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, _WORKSPACE_BYTES)
        if self.precision.name == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)  # strongly typed networks have no precision flags to set
        low, opt, high = profile
        optimisation = builder.create_optimization_profile()
        for index in range(network.num_inputs):
            name = network.get_input(index).name
            shape = self.graphs.shape_of
            optimisation.set_shape(name, shape(name, *low), shape(name, *opt), shape(name, *high))
        config.add_optimization_profile(optimisation)
        with waiting(f"building a TensorRT engine ({self.precision.name}, up to {high[1]}x{high[0]}; cached for "
                     f"later renders)"):
            serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendUnavailableError(f"TensorRT failed to build an engine from {onnx_path}")
        return bytes(serialized)

    def _ensure(self, height: int, width: int) -> None:
        if self._profile is not None:
            (lh, lw), _, (hh, hw) = self._profile
            if lh <= height <= hh and lw <= width <= hw:
                return
        self._profile = self._profile_for((height, width))
        self.engine_paths = []
        self._engines = {
            "forward": self._engine("forward", self.graphs.forward_path, self._profile),
            "backward": self._engine("backward", self.graphs.backward_path, self._profile),
        }

    # --- running ----------------------------------------------------------------------------

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        self._ensure(*image.shape[-2:])
        outputs = self._engines["forward"]({"image": image.float()}, self.device, self._stream())
        self._masks = {f"mask_{name}": outputs[f"mask_{name}"] for name in self.graphs.masks}
        return {name: outputs[name].float() for name in self.taps}

    def backward(self, tap_grads: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if self._masks is None:
            raise RuntimeError("backward() needs a forward() first")
        inputs = dict(self._masks)
        inputs.update({f"grad_{name}": tap_grads[name] for name in self.taps})
        self._masks = None
        return self._engines["backward"](inputs, self.device, self._stream())["image_grad"].float()

    def _stream(self) -> int:
        """torch's current stream on this backend's GPU (what the loss and optimiser run on)."""
        return torch.cuda.current_stream(self.device).cuda_stream
