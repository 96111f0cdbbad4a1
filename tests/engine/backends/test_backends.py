"""Backends: the explicit VJP, the ONNX export and its cache, onnxruntime parity, TensorRT guards."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from styleforge.engine import (
    BackendUnavailableError,
    Precision,
    RenderConfig,
    VGGFeatures,
    backend_for,
    export_onnx,
    load_backbone,
    load_image,
    render,
)
from styleforge.engine._backbone import CAFFE_PREPROCESSING
from styleforge.engine._files import cache_dir
from styleforge.engine.backends import OnnxRuntimeBackend, TorchBackend, auto_backend, record_fastest_backend
from styleforge.engine.backends._vjp import VGGBackward, VGGForwardWithMasks, expand_windows, max_pool_first_max_mask

FP32 = Precision("fp32")


def _auto_backend(device):
    return auto_backend(device, FP32)


def create_backend(name, backbone, device, *, model, precision="fp32", sizes=((512, 512),)):
    config = RenderConfig(backend=name, model=model, precision=precision)
    return backend_for(config, device, sizes, backbone=backbone)

TAPS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1")
SIZES = [(32, 48), (37, 45), (16, 16), (61, 80)]
CPU = torch.device("cpu")


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


@pytest.fixture(scope="session")
def ort_backend(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STYLEFORGE_CACHE", str(tmp_path_factory.mktemp("ort-cache")))
        backbone = load_backbone("vgg19-random", TAPS, seed=0)
        yield OnnxRuntimeBackend(backbone, CPU, model="vgg19-random"), TorchBackend(backbone, CPU)


@pytest.mark.parametrize("pooling", ["max", "avg"])
@pytest.mark.parametrize("size", SIZES)
def test_explicit_vjp_equals_autograd_in_float64(pooling, size):
    backbone = VGGFeatures("vgg16", TAPS, pooling=pooling, preprocessing=CAFFE_PREPROCESSING)
    backbone.reset_parameters(torch.Generator().manual_seed(0))
    backbone = backbone.double()
    image = torch.rand(1, 3, *size, dtype=torch.float64, requires_grad=True)
    features = backbone(image)
    upstream = [torch.randn_like(features[name]) for name in backbone.taps]
    (expected,) = torch.autograd.grad([features[n] for n in backbone.taps], image, upstream)
    outputs = VGGForwardWithMasks(backbone)(image.detach())
    count = len(backbone.taps)
    for index, name in enumerate(backbone.taps):
        assert torch.equal(outputs[index], features[name])
    gradient = VGGBackward(backbone)(*outputs[count:], *upstream)
    assert _relative(gradient, expected) < 1e-12


def test_max_pool_mask_routes_ties_to_the_first_maximum():
    x = torch.tensor([[[[1.0, 5.0, 2.0, 2.0, 9.0],
                        [5.0, 0.0, 2.0, 2.0, 9.0],
                        [7.0, 7.0, 0.0, 1.0, 9.0]]]])
    mask = max_pool_first_max_mask(x)
    assert mask.shape == (1, 4, 1, 2)  # window-major: 4 flags per output position
    full = expand_windows(mask.to(torch.uint8), 3, 5).bool()
    expected = torch.tensor([[[[False, True, True, False, False],
                               [False, False, False, False, False],
                               [False, False, False, False, False]]]])
    assert torch.equal(full, expected)  # one per window, first in row-major order; dropped edges False
    assert torch.equal(mask.reshape(1, 1, 4, 2).sum(2), torch.ones(1, 1, 2, dtype=torch.long))


def test_export_passes_the_checker_and_is_cached(tmp_path):
    backbone = load_backbone("vgg16-random", ("relu1_1", "relu2_1"), seed=0)
    graphs = export_onnx(backbone, model="vgg16-random", folder=tmp_path / "export")
    for path in (graphs.forward_path, graphs.backward_path):
        onnx.checker.check_model(str(path), full_check=True)
    forward = onnx.load(str(graphs.forward_path))
    assert [o.name for o in forward.graph.output] == ["relu1_1", "relu2_1", "mask_relu1_1", "mask_relu1_2",
                                                      "mask_pool1", "mask_relu2_1"]
    # The shapes the GPU backends preallocate agree with what the graph produces.
    import onnxruntime

    session = onnxruntime.InferenceSession(str(graphs.forward_path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"image": np.random.rand(1, 3, 37, 45).astype(np.float32)})
    for name, value in zip(graphs.forward_outputs, outputs):
        assert graphs.shape_of(name, 37, 45) == value.shape, name
    dims = forward.graph.input[0].type.tensor_type.shape.dim
    assert dims[2].dim_param and dims[3].dim_param  # dynamic height and width

    stamp = graphs.forward_path.stat().st_mtime_ns
    again = export_onnx(backbone, model="vgg16-random", folder=tmp_path / "export")
    assert again.forward_path.stat().st_mtime_ns == stamp  # reused, not exported again

    graphs.backward_path.write_bytes(b"truncated")  # a corrupt entry is rebuilt, never trusted
    rebuilt = export_onnx(backbone, model="vgg16-random", folder=tmp_path / "export")
    onnx.checker.check_model(str(rebuilt.backward_path))


def test_export_cache_key_follows_weights_taps_and_pooling():
    base = load_backbone("vgg16-random", ("relu1_1",), seed=0)
    folders = {
        export_onnx(base, model="vgg16-random").folder,
        export_onnx(load_backbone("vgg16-random", ("relu1_1",), seed=1), model="vgg16-random").folder,
        export_onnx(load_backbone("vgg16-random", ("relu1_2",), seed=0), model="vgg16-random").folder,
        export_onnx(load_backbone("vgg16-random", ("relu1_1",), seed=0, pooling="avg"), model="vgg16-random").folder,
    }
    assert len(folders) == 4
    assert export_onnx(base, model="vgg16-random").folder in folders


@pytest.mark.parametrize("size", SIZES)
def test_onnxruntime_matches_torch(ort_backend, size):
    ort, reference = ort_backend
    image = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(size[0]))
    ours, theirs = ort.forward(image), reference.forward(image)
    for name in TAPS:
        assert ours[name].shape == theirs[name].shape
        assert _relative(ours[name], theirs[name]) < 1e-4, name

    upstream = {name: torch.randn(value.shape, generator=torch.Generator().manual_seed(1))
                for name, value in theirs.items()}
    # The backward graph alone, fed the same saved masks, against the eager explicit VJP.
    masks = list(ort._masks)
    eager = VGGBackward(reference.backbone)(*masks, *[upstream[n] for n in TAPS])
    graph_only = ort.backward(upstream)
    assert _relative(graph_only, eager) < 1e-4
    # End to end: a few ReLU / max decisions may flip on rounding, hence the looser bound.
    assert _relative(graph_only, reference.backward(upstream)) < 5e-3


def test_render_gives_the_same_image_on_torch_and_onnxruntime(ort_backend, test_images):
    """Per evaluation the backends agree to ~1e-7; L-BFGS then amplifies rounding chaotically
    (torch against itself with 1e-6 gradient noise drifts as far), so a short render must match
    to 5e-3 and a 64-iteration one must reach the same loss and a close image."""
    ort, reference = ort_backend
    content = load_image(test_images / "tubingen.jpg")
    style = load_image(test_images / "starry_night.jpg")
    short = RenderConfig(size=48, iterations=8, model="vgg19-random", device="cpu", seed=3)
    images = [render(short, content, [style], backend=backend).image for backend in (reference, ort)]
    assert (images[0] - images[1]).abs().max().item() < 5e-3

    full = RenderConfig(size=48, iterations=64, model="vgg19-random", device="cpu", seed=3)
    results = [render(full, content, [style], backend=backend) for backend in (reference, ort)]
    assert results[1].losses["total"] == pytest.approx(results[0].losses["total"], rel=0.02)
    assert (results[0].image - results[1].image).abs().mean().item() < 0.05


def test_tensorrt_without_a_gpu_says_what_is_missing():
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: the TensorRT tests below run instead")
    backbone = load_backbone("vgg16-random", ("relu1_1",))
    with pytest.raises(BackendUnavailableError, match="--backend tensorrt: no CUDA GPU"):
        create_backend("tensorrt", backbone, CPU, model="vgg16-random")


def test_auto_uses_the_fastest_backend_measured_here():
    assert _auto_backend(CPU) == "torch"  # nothing measured yet
    assert record_fastest_backend(CPU, {"torch": 1200.0, "onnxruntime": 1100.0}) == "onnxruntime"
    assert _auto_backend(CPU) == "onnxruntime"
    record_fastest_backend(CPU, {"torch": 900.0, "onnxruntime": 1100.0})
    assert _auto_backend(CPU) == "torch"


def test_unknown_backend_is_refused_with_a_hint():
    with pytest.raises(Exception, match="did you mean 'onnxruntime'"):
        RenderConfig(backend="onnxruntim")


def needs_cuda(test):
    """A GPU test: marked ``gpu`` (the GPU proof runs ``pytest -m gpu``), skipped with a reason here."""
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")(test))


@needs_cuda
@pytest.mark.parametrize("name", ["onnxruntime", "tensorrt"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_gpu_backends_match_torch(name, precision, monkeypatch):
    if name == "onnxruntime" and precision != "fp32":
        pytest.skip("onnxruntime runs the fp32 graphs; half precision is TensorRT's")
    cuda = torch.device("cuda")
    backbone = load_backbone("vgg19-random", TAPS, seed=0)
    try:
        backend = create_backend(name, backbone, cuda, model="vgg19-random", precision=precision, sizes=[(64, 96)])
    except BackendUnavailableError as missing:
        pytest.skip(str(missing))
    reference = TorchBackend(load_backbone("vgg19-random", TAPS, seed=0), cuda)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # an fp32 reference
    image = torch.rand(1, 3, 64, 96, device=cuda)
    ours, theirs = backend.forward(image), reference.forward(image)
    tolerance = 1e-4 if precision == "fp32" else 2e-2
    for tap in TAPS:
        assert _relative(ours[tap], theirs[tap]) < tolerance, tap
    upstream = {tap: torch.randn_like(value) for tap, value in theirs.items()}
    assert _relative(backend.backward(upstream), reference.backward(upstream)) < max(tolerance, 5e-3)


def test_bench_record_file_is_json():
    record_fastest_backend(CPU, {"torch": 1.0})
    data = json.loads((cache_dir() / "fastest-backend.json").read_text())
    assert next(iter(data.values()))["fastest"] == "torch"
    assert np.isfinite(next(iter(data.values()))["ms_per_iteration"]["torch"])


@pytest.mark.parametrize("dtype", ["fp16"])
def test_typed_export_runs_the_convolutions_in_half_with_float32_inputs_and_outputs(dtype):
    """What a strongly typed TensorRT network reads: half weights and compute, float32 at the
    graph's edges. Traced in torch (onnxruntime's CPU provider has no half convolutions)."""
    from styleforge.engine.backends._export import EXPORT_DTYPES
    from styleforge.engine.backends._vjp import typed_copy

    backbone = load_backbone("vgg16-random", ("relu1_1", "relu2_1"))
    graphs = export_onnx(backbone, model="vgg16-random", dtype=dtype)
    plain = export_onnx(backbone, model="vgg16-random")
    assert graphs.folder != plain.folder and f"-{dtype}-" in graphs.folder.name
    model = onnx.load(str(graphs.forward_path))
    kinds = {initializer.data_type for initializer in model.graph.initializer if len(initializer.dims) == 4}
    assert kinds == {onnx.TensorProto.FLOAT16}
    edges = {value.name: value.type.tensor_type.elem_type for value in [*model.graph.input, *model.graph.output]}
    assert edges["image"] == onnx.TensorProto.FLOAT and edges["relu2_1"] == onnx.TensorProto.FLOAT
    # The typed modules themselves agree with the float32 network to half precision.
    image = torch.rand(1, 3, 32, 48)
    reference = VGGForwardWithMasks(backbone)(image)
    typed = VGGForwardWithMasks(typed_copy(backbone, EXPORT_DTYPES[dtype]))(image)
    assert typed[0].dtype == torch.float32 and _relative(typed[1], reference[1]) < 0.01
