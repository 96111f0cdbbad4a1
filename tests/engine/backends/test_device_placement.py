"""Backends leave the caller's objects alone and run where they were asked to: the export copies
the backbone, TensorRT writes its outputs on the backend's GPU and enqueues on that GPU's current
stream, onnxruntime's CUDA provider gets heuristic cuDNN search and an arena that grows by what is
asked. CPU tests, with fakes where a GPU library would be needed."""

from __future__ import annotations

import types

import torch

from styleforge.engine import Precision, export_onnx, load_backbone
from styleforge.engine.backends import _tensorrt
from styleforge.engine.backends._onnxruntime import cuda_provider_options


def test_export_leaves_the_callers_backbone_as_it_was(tmp_path):
    backbone = load_backbone("vgg16-random", ("relu1_1",), seed=0).double().train()
    before = {name: tensor.clone() for name, tensor in backbone.state_dict().items()}
    export_onnx(backbone, model="vgg16-random", folder=tmp_path / "export")
    assert backbone.training
    assert all(tensor.dtype == torch.float64 for tensor in backbone.state_dict().values())
    assert all(torch.equal(before[name], tensor) for name, tensor in backbone.state_dict().items())


class _FakeContext:
    def __init__(self):
        self.addresses, self.streams = {}, []

    def set_input_shape(self, name, shape):
        pass

    def set_tensor_address(self, name, pointer):
        self.addresses[name] = pointer

    def get_tensor_shape(self, name):
        return (1, 2)

    def execute_async_v3(self, stream):
        self.streams.append(stream)
        return True


def test_tensorrt_outputs_go_to_the_backends_device_and_stream(monkeypatch):
    engine = object.__new__(_tensorrt._Engine)
    engine.inputs, engine.outputs = ["image"], ["relu1_1"]
    engine.context = _FakeContext()
    engine.engine = types.SimpleNamespace(get_tensor_dtype=lambda name: "float")
    monkeypatch.setitem(_tensorrt._TORCH_DTYPES, "float", torch.float32)
    device = torch.device("cpu")  # stands in for cuda:1: the point is that it is the one passed
    outputs = engine({"image": torch.zeros(1, 3, 4, 4)}, device, 1234)
    assert outputs["relu1_1"].device == device and engine.context.streams == [1234]

    asked = []
    monkeypatch.setattr(torch.cuda, "current_stream",
                        lambda device=None: asked.append(device) or types.SimpleNamespace(cuda_stream=99))
    backend = object.__new__(_tensorrt.TensorRTBackend)
    backend.device = torch.device("cuda", 1)
    assert backend._stream() == 99 and asked == [torch.device("cuda", 1)]


def test_onnxruntime_cuda_options_search_by_heuristic_and_grow_by_request():
    options = cuda_provider_options(1, Precision("fp32"))
    assert options == {"device_id": 1, "use_tf32": 0, "cudnn_conv_algo_search": "HEURISTIC",
                       "arena_extend_strategy": "kSameAsRequested"}
    assert cuda_provider_options(0, Precision("tf32"))["use_tf32"] == 1
