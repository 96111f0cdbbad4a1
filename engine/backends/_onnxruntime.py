"""The onnxruntime backend: the exported forward/backward graphs on onnxruntime.

CPU provider everywhere; the CUDA provider when onnxruntime-gpu is installed, with I/O binding so
tensors stay on the GPU. fp32 and tf32 only (the graphs are fp32; tf32 is the CUDA provider's
TF32 convolutions, switched off for fp32).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType

import numpy as np
import torch

from .._backbone import VGGFeatures
from .._device import Precision
from .._errors import BackendUnavailableError
from ._base import Backend
from ._export import ExportedGraphs, export_onnx

__all__ = ["OnnxRuntimeBackend", "cuda_provider_options", "onnxruntime_providers"]


def _ort() -> ModuleType:
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailableError(
            "--backend onnxruntime needs onnxruntime: pip install onnxruntime "
            "(or onnxruntime-gpu for CUDA, never both)"
        ) from None
    return onnxruntime


def _cuda_index(device: torch.device) -> int:
    """The GPU a CUDA device means: its index, or torch's current one (a worker's own GPU)."""
    if device.type != "cuda":
        return 0
    return device.index if device.index is not None else torch.cuda.current_device()


class OnnxRuntimeBackend(Backend):
    """The exported graphs on onnxruntime.

    On CPU, inputs and outputs are shared with torch without copies (numpy views). On CUDA the
    CUDA execution provider runs with I/O binding on torch's tensors, so nothing crosses to the
    host per iteration. The session must really use the provider asked for: onnxruntime falls
    back to CPU silently when CUDA is missing, so get_providers() is checked.
    """

    name = "onnxruntime"

    @classmethod
    def unsupported(cls, precision: Precision, device: torch.device) -> str | None:
        if precision.is_half:
            return (f"--precision {precision.name}: the onnxruntime backend runs the fp32 graphs; "
                    "use --backend torch, or --precision fp32")
        return None

    def __init__(self, backbone: VGGFeatures, device: torch.device, precision: Precision | str = "fp32", *,
                 model: str, threads: int | None = None, providers: list[str] | None = None) -> None:
        precision = precision if isinstance(precision, Precision) else Precision(precision)
        reason = self.unsupported(precision, device)
        if reason is not None:
            raise BackendUnavailableError(reason)
        super().__init__(backbone, device, precision)
        ort = _ort()
        self.graphs: ExportedGraphs = export_onnx(backbone, model=model)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
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
        # The CUDA provider runs convolutions in TF32 unless told not to: fp32 must be fp32.
        self._device_id = _cuda_index(device)
        cuda_options = cuda_provider_options(self._device_id, precision)
        provider_list = [(p, cuda_options) if p == "CUDAExecutionProvider" else p for p in providers]
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
        device_id = self._device_id
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
        height, width = image.shape[-2:]
        self._image_size = (height, width)
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


def _numpy_dtype(dtype: torch.dtype) -> type[np.generic]:
    return {torch.float32: np.float32, torch.float16: np.float16, torch.bool: np.bool_}[dtype]


def cuda_provider_options(device_id: int, precision: Precision) -> dict[str, object]:
    """The CUDA execution provider's options.

    TF32 convolutions only for tf32 (the provider's default is on: fp32 must be fp32). cuDNN's
    algorithm by heuristic, not the default exhaustive search, which benchmarks every algorithm
    for every new input shape (each pyramid level and tile size) and can take more workspace than
    the planner counted. The arena grows by what is asked, not by doubling, whose last step can
    reserve nearly twice the peak.
    """
    return {"device_id": device_id, "use_tf32": int(precision.name == "tf32"),
            "cudnn_conv_algo_search": "HEURISTIC", "arena_extend_strategy": "kSameAsRequested"}


def onnxruntime_providers() -> list[str]:
    """The execution providers of the installed onnxruntime ([] when it is not installed)."""
    try:
        return list(_ort().get_available_providers())
    except BackendUnavailableError:
        return []
