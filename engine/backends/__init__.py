"""Backends: where the VGG forward pass and its image gradient run (torch, onnxruntime,
TensorRT), the exported graphs they share, the one factory that builds them, and their timing and its report."""

from ._base import Backend
from ._bench import BackendTiming, conv_flops, machine_facts, matrix_tflops, time_backend
from ._export import ExportedGraphs, export_onnx
from ._onnxruntime import OnnxRuntimeBackend
from ._report import (REPORT_FILES, check_report_folder, compare_bench_reports, machine_lines, read_bench_report,
                      write_bench_report)
from ._registry import (BACKEND_TYPES, auto_backend, available_backends, backend_for, backend_key,
                        record_fastest_backend, resolve_precision)
from ._tensorrt import TensorRTBackend, tensorrt_available
from ._torch import TorchBackend

__all__ = [
    "Backend", "TorchBackend", "OnnxRuntimeBackend", "TensorRTBackend",
    "backend_for", "backend_key", "auto_backend", "available_backends", "record_fastest_backend", "resolve_precision",
    "BACKEND_TYPES",
    "ExportedGraphs", "export_onnx", "tensorrt_available",
    "BackendTiming", "conv_flops", "machine_facts", "matrix_tflops", "time_backend",
    "write_bench_report", "read_bench_report", "compare_bench_reports", "machine_lines", "REPORT_FILES",
    "check_report_folder",
]
