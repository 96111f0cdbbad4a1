"""--precision on the torch backend (CPU here: bf16 and fp16 autocast), and the pyramid's
resampling of frames and optimiser state."""

from __future__ import annotations

import pytest
import torch

from styleforge.engine import (
    BackendUnavailableError,
    Precision,
    RenderConfig,
    _device,
    backend_for,
    load_backbone,
    render,
)
from styleforge.engine.backends import TorchBackend
from styleforge.engine.rendering import carry_adam_state as _carry_adam_state
from styleforge.engine.rendering import crop_to_frame

TAPS = ("relu1_1", "relu3_1", "relu5_1")


def _pass(precision: str, upstream: float):
    backbone = load_backbone("vgg16-random", TAPS)
    backend = TorchBackend(backbone, torch.device("cpu"), precision)
    image = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    features = backend.forward(image)
    generator = torch.Generator().manual_seed(1)
    grads = {k: torch.randn(v.shape, generator=generator) * upstream for k, v in features.items()}
    return features, backend.backward(grads)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize(("precision", "tolerance"), [("bf16", 0.2), ("fp16", 0.05)])
def test_half_precision_features_are_fp32_tensors_close_to_fp32(precision, tolerance):
    """bf16 keeps 8 mantissa bits, fp16 11: random upstream gradients cancel through 13 layers,
    so the image gradient's error is well above a single rounding (the render test below shows
    what it does to a picture)."""
    reference, reference_grad = _pass("fp32", 1e-3)
    features, grad = _pass(precision, 1e-3)
    for name in TAPS:
        assert features[name].dtype == torch.float32
        assert _relative(features[name], reference[name]) < 0.03
    assert grad.dtype == torch.float32 and _relative(grad, reference_grad) < tolerance


def test_fp16_gradients_survive_tiny_upstream_gradients():
    """The normalised losses give upstream gradients around 1e-9 at high resolution: far below
    fp16's smallest subnormal (6e-8). Without loss scaling the image gradient would be zero."""
    _, reference = _pass("fp32", 1e-9)
    _, grad = _pass("fp16", 1e-9)
    assert grad.abs().max() > 0 and _relative(grad, reference) < 0.05


def test_auto_precision_is_what_the_named_backend_runs(monkeypatch):
    """On a CPU where bf16 pays, auto is bf16 on torch and fp32 on onnxruntime (its graphs are
    fp32), not an error; a render's numerics follow the backend it runs on."""
    monkeypatch.setattr(_device, "bf16_pays", lambda: True)
    config = RenderConfig(model="vgg16-random")
    assert backend_for(config.replace({"backend": "torch"}), torch.device("cpu")).precision.name == "bf16"
    pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs onnxruntime")
    backend = backend_for(config.replace({"backend": "onnxruntime"}), torch.device("cpu"), [(32, 48)])
    assert backend.precision.name == "fp32"


def test_onnxruntime_refuses_half_precision_with_the_way_out():
    backbone = load_backbone("vgg16-random", TAPS)
    with pytest.raises(BackendUnavailableError, match="--precision bf16: the onnxruntime backend runs the fp32"):
        backend_for(RenderConfig(backend="onnxruntime", model="vgg16-random", precision="bf16"), torch.device("cpu"),
                    backbone=backbone)


@pytest.mark.parametrize(("bf16_pays", "on_cpu"), [(False, "fp32"), (True, "bf16")])
def test_precision_defaults_per_device(monkeypatch, bf16_pays, on_cpu):
    """auto: tf32 on CUDA; on a CPU bf16 where it is native and measured faster (test_cpu)."""
    monkeypatch.setattr(_device, "bf16_pays", lambda: bf16_pays)
    assert Precision.resolve(RenderConfig().runtime.precision, torch.device("cpu")).name == on_cpu
    assert Precision.resolve(RenderConfig().runtime.precision, torch.device("cuda")).name == "tf32"
    assert Precision.resolve(RenderConfig(precision="bf16").runtime.precision, torch.device("cpu")).name == "bf16"


def test_a_bf16_render_stays_close_to_the_fp32_one():
    generator = torch.Generator().manual_seed(2)
    content, style = torch.rand(3, 96, 128, generator=generator), torch.rand(3, 96, 96, generator=generator)
    config = RenderConfig(size=128, levels=1, iterations=5, model="vgg16-random", device="cpu", backend="torch",
                          precision="fp32")
    fp32 = render(config, content, [style]).image
    bf16 = render(config.replace({"precision": "bf16"}), content, [style]).image
    mse = (fp32 - bf16).pow(2).mean().item()
    assert 0 < mse and 10 * torch.log10(torch.tensor(1 / mse)).item() > 30  # PSNR in dB


def test_a_frame_size_crops_the_centre_and_renders_exactly_that_size():
    image = torch.arange(2 * 4 * 8, dtype=torch.float32).reshape(2, 4, 8)
    cropped = crop_to_frame(image, RenderConfig(size="40x40"))
    assert cropped.shape == (2, 4, 4) and torch.equal(cropped, image[:, :, 2:6])
    assert crop_to_frame(image, RenderConfig(size="80x10")).shape == (2, 1, 8)
    assert crop_to_frame(image, RenderConfig(size=64)) is image
    generator = torch.Generator().manual_seed(3)
    content, style = torch.rand(3, 90, 160, generator=generator), torch.rand(3, 64, 64, generator=generator)
    config = RenderConfig(size="96x80", levels=2, iterations=(2, 1), model="vgg16-random", device="cpu")
    result = render(config, content, [style])
    assert result.image.shape == (3, 80, 96) and result.iterations == 3


def test_adam_state_is_resampled_and_rescaled_across_levels():
    state = {"step": torch.tensor(7.0), "exp_avg": torch.full((1, 3, 8, 8), 2.0),
             "exp_avg_sq": torch.full((1, 3, 8, 8), 4.0)}
    carried = _carry_adam_state(state, (16, 16))
    # Four times the pixels: gradients a quarter as large, second moments a sixteenth.
    assert carried["step"].item() == 7.0
    assert torch.allclose(carried["exp_avg"], torch.full((1, 3, 16, 16), 0.5))
    assert torch.allclose(carried["exp_avg_sq"], torch.full((1, 3, 16, 16), 0.25))


def test_an_adam_pyramid_carries_its_state_to_the_next_level():
    generator = torch.Generator().manual_seed(4)
    content, style = torch.rand(3, 96, 128, generator=generator), torch.rand(3, 64, 64, generator=generator)
    config = RenderConfig(size=128, levels=2, iterations=(3, 2), optimizer="adam", model="vgg16-random",
                          device="cpu")
    seen = []
    torch_adam_step = torch.optim.Adam.step

    def spy(self, closure=None):
        step = next(iter(self.state.values()), {}).get("step")
        seen.append(None if step is None else float(step))
        return torch_adam_step(self, closure)

    torch.optim.Adam.step = spy
    try:
        render(config, content, [style])
    finally:
        torch.optim.Adam.step = torch_adam_step
    # The second level's first step starts from the first level's 3 steps, not from scratch.
    assert seen[0] is None and seen[3] == 3.0


def test_cuda_graphs_without_cuda_is_a_clear_error():
    backbone = load_backbone("vgg16-random", TAPS)
    with pytest.raises(BackendUnavailableError, match="--cuda-graphs needs a CUDA device, not cpu"):
        TorchBackend(backbone, torch.device("cpu"), cuda_graphs=True)


def needs_cuda(test):
    """A GPU test: marked ``gpu`` (the GPU proof runs ``pytest -m gpu``), skipped with a reason here."""
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")(test))


@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_graph_replays_give_the_eager_gradients(precision):
    backbone = load_backbone("vgg16-random", TAPS)
    cuda = torch.device("cuda")
    eager = TorchBackend(backbone, cuda, precision)
    graphed = TorchBackend(backbone, cuda, precision, cuda_graphs=True)
    generator = torch.Generator().manual_seed(8)
    for _ in range(3):  # replays with new inputs, not the captured sample
        image = torch.rand(1, 3, 64, 96, generator=generator).to(cuda)
        expected = eager.forward(image)
        features = graphed.forward(image)
        grads = {k: torch.randn(v.shape, generator=generator).to(cuda) for k, v in expected.items()}
        for name in TAPS:
            assert torch.allclose(features[name], expected[name], rtol=1e-3, atol=1e-4)
        expected_grad = eager.backward(grads)
        assert _relative(graphed.backward(grads), expected_grad) < 1e-3


@needs_cuda
def test_a_bf16_render_on_cuda_stays_close_to_fp32():
    generator = torch.Generator().manual_seed(9)
    content, style = torch.rand(3, 192, 256, generator=generator), torch.rand(3, 128, 128, generator=generator)
    config = RenderConfig(size=256, levels=1, iterations=20, model="vgg16-random", device="cuda", backend="torch")
    fp32 = render(config.replace({"precision": "fp32"}), content, [style]).image
    bf16 = render(config.replace({"precision": "bf16", "cuda_graphs": True}), content, [style]).image
    mse = (fp32 - bf16).pow(2).mean().item()
    assert 10 * torch.log10(torch.tensor(1 / max(mse, 1e-12))).item() > 25
