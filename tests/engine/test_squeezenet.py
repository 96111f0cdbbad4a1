"""SqueezeNet 1.1: taps against their metadata, torchvision's weight layout, exact tiling, ONNX
export of its forward, its default layers (random weights; the offline error is in test_weights)."""

from __future__ import annotations

import pytest
import torch

from styleforge.engine import BackendUnavailableError, RenderConfig, layer_infos, load_backbone, render
from styleforge.engine._squeezenet import squeezenet_torchvision_to_named
from styleforge.engine.backends import TorchBackend, backend_for, conv_flops, export_onnx
from styleforge.engine.objectives import gatys_objective
from styleforge.engine.rendering import evaluate, plan_tiles, receptive_radius

from .rendering.test_tiling import style_grams

NAMES = [info.name for info in layer_infos("squeezenet1_1")]
STYLE = ("relu1", "fire3", "fire4", "fire5")


def test_every_tap_matches_its_metadata():
    assert NAMES == ["conv1", "relu1", "pool1", "fire2", "fire3", "pool3", "fire4", "fire5", "pool5", "fire6",
                     "fire7", "fire8", "fire9"]
    backbone = load_backbone("squeezenet1_1-random", NAMES)
    features = backbone(torch.rand(1, 3, 64, 96))
    expected = {"conv1": (64, 2), "relu1": (64, 2), "pool1": (64, 4), "fire2": (128, 4), "fire3": (128, 4),
                "pool3": (128, 8), "fire4": (256, 8), "fire5": (256, 8), "pool5": (256, 16), "fire6": (384, 16),
                "fire7": (384, 16), "fire8": (512, 16), "fire9": (512, 16)}
    for name, info in backbone.feature_info.items():
        assert (info.channels, info.stride) == expected[name]
        assert features[name].shape == (1, info.channels, 64 // info.stride, 96 // info.stride), name
        assert torch.isfinite(features[name]).all() and features[name].std() > 0


def test_the_network_stops_at_the_deepest_tap_and_is_light():
    backbone = load_backbone("squeezenet1_1-random", ("fire2", *STYLE))
    assert backbone.layers[-1].name == "fire5" and "fire6_squeeze" not in backbone.convs
    vgg = load_backbone("vgg16-random", ("relu4_2", "relu5_1"))
    assert conv_flops(backbone, 384, 512) * 20 < conv_flops(vgg, 384, 512)


def test_torchvision_checkpoints_load_by_their_keys(tmp_path, rng):
    """A state dict laid out as torchvision's squeezenet1_1 (features.N.squeeze/expand...,
    classifier) loads with --weights, tensor for tensor."""
    reference = load_backbone("squeezenet1_1-random", ["fire9"], seed=3)
    index = {"conv1": 0, "fire2": 3, "fire3": 4, "fire4": 6, "fire5": 7, "fire6": 9, "fire7": 10, "fire8": 11,
             "fire9": 12}
    state = {"classifier.1.weight": torch.zeros(1000, 512, 1, 1), "classifier.1.bias": torch.zeros(1000)}
    for name, value in reference.state_dict().items():
        module, field = name.removeprefix("convs.").split(".")
        layer, _, branch = module.partition("_")
        key = f"features.{index[layer]}." + (f"{branch}." if branch else "") + field
        state[key] = value.clone()
    expected = {name.removeprefix("convs.") for name in reference.state_dict()}
    assert set(squeezenet_torchvision_to_named(state)) == expected
    path = tmp_path / "squeezenet1_1-b8a52dc0.pth"
    torch.save(state, path)
    loaded = load_backbone("squeezenet1_1", ["fire9"], weights_path=path)
    image = torch.rand(1, 3, 48, 48, generator=rng)
    assert torch.equal(loaded(image)["fire9"], reference(image)["fire9"])


def test_config_takes_squeezenet_layers_where_the_vgg_defaults_stand():
    config = RenderConfig(model="squeezenet1_1-random")
    assert config.objective.content_layers == ("fire2",) and config.objective.style_layers == STYLE
    assert RenderConfig.from_options({"model": "squeezenet1_1-random", "method": "mrf"}).mrf.mrf_layers == (
        "fire3", "fire5", "fire7")
    assert RenderConfig(model="squeezenet1_1-random", style_layers=("fire9",)).objective.style_layers == ("fire9",)


def test_tiled_gradient_equals_untiled_in_float64():
    generator = torch.Generator().manual_seed(0)
    backbone = load_backbone("squeezenet1_1-random", ("fire2", *STYLE)).double()
    backend = TorchBackend(backbone, torch.device("cpu"))
    content, image = (torch.rand(1, 3, 96, 128, generator=generator, dtype=torch.float64) for _ in range(2))
    style = torch.rand(1, 3, 80, 80, generator=generator, dtype=torch.float64)
    objective = gatys_objective(
        content_targets={"fire2": backend.features(content)["fire2"]},
        style_targets=style_grams(backend, [style], [1.0], STYLE), content_weight=1.0, style_weight=100.0,
        tv_weight=2.0, style_layer_weights=dict.fromkeys(STYLE, 1.0), strides=backend.strides)
    radius = receptive_radius(backbone.layers)
    assert radius > 0
    tiles = plan_tiles(96, 128, 32, radius)
    assert len(tiles) >= 9
    expected_losses, expected = evaluate(backend, objective, image)
    losses, gradient = evaluate(backend, objective, image, tiles)
    assert losses["total"].item() == pytest.approx(expected_losses["total"].item(), rel=1e-12)
    assert ((gradient - expected).abs().max() / expected.abs().max()).item() < 1e-12


def test_a_tiled_squeezenet_render_matches_the_untiled_one():
    generator = torch.Generator().manual_seed(2)
    content, style = torch.rand(3, 120, 160, generator=generator), torch.rand(3, 96, 96, generator=generator)
    config = RenderConfig(size=160, iterations=3, model="squeezenet1_1-random", device="cpu", precision="fp32")
    untiled = render(config, content, [style]).image
    tiled = render(config.replace({"tile_size": 48}), content, [style]).image
    assert (tiled - untiled).abs().max().item() < 1e-4


def test_the_forward_exports_to_onnx_and_runs_there(tmp_path):
    onnx = pytest.importorskip("onnxruntime", reason="the ONNX check needs onnxruntime")
    backbone = load_backbone("squeezenet1_1-random", ("fire2", *STYLE))
    image = torch.rand(1, 3, 64, 80)
    path = tmp_path / "squeezenet.onnx"
    expected = backbone(image)  # the forward's dict, in the network's order: the graph's named outputs
    torch.onnx.export(backbone, (image,), str(path), input_names=["image"], output_names=list(expected),
                      dynamo=False)
    session = onnx.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = dict(zip(expected, session.run(None, {"image": image.numpy()})))
    for name, value in expected.items():
        assert torch.allclose(torch.from_numpy(outputs[name]), value, rtol=1e-4, atol=1e-4), name


def test_backends_of_exported_vgg_graphs_refuse_it_and_auto_runs_torch():
    backbone = load_backbone("squeezenet1_1-random", ("fire2",))
    with pytest.raises(BackendUnavailableError, match="torch backend only"):
        backend_for(RenderConfig(model="squeezenet1_1-random", backend="onnxruntime"), torch.device("cpu"))
    with pytest.raises(BackendUnavailableError, match="VGG's"):
        export_onnx(backbone, model="squeezenet1_1-random")
    assert backend_for(RenderConfig(model="squeezenet1_1-random"), torch.device("cpu")).name == "torch"
