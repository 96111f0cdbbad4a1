"""Backbones: tap shapes against their metadata, truncation, pooling, preprocessing."""

from __future__ import annotations

import pytest
import torch

from styleforge.engine import ConfigError, VGGFeatures, layer_infos
from styleforge.engine._backbone import CAFFE_PREPROCESSING


@pytest.mark.parametrize("arch", ["vgg16", "vgg19"])
def test_every_tap_matches_its_metadata(arch):
    names = [info.name for info in layer_infos(arch)]
    backbone = VGGFeatures(arch, names)
    backbone.reset_parameters(torch.Generator().manual_seed(0))
    features = backbone(torch.rand(1, 3, 64, 96))
    assert list(features) == names
    for name, info in backbone.feature_info.items():
        assert features[name].shape == (1, info.channels, 64 // info.stride, 96 // info.stride), name
        assert torch.isfinite(features[name]).all()
        if info.kind in ("relu", "pool"):
            assert (features[name] >= 0).all()


def test_layer_names_follow_the_paper():
    vgg19 = [info.name for info in layer_infos("vgg19")]
    assert vgg19[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert "relu5_4" in vgg19 and "relu5_4" not in [info.name for info in layer_infos("vgg16")]
    assert len([n for n in vgg19 if n.startswith("conv")]) == 16


def test_network_is_truncated_after_the_deepest_tap():
    backbone = VGGFeatures("vgg19", ["relu3_1", "relu1_1"])
    assert list(backbone.convs) == ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1"]
    assert backbone.layers[-1].name == "relu3_1"
    assert backbone.min_size == 4


def test_unknown_tap_is_refused_with_a_hint():
    with pytest.raises(ConfigError, match="did you mean 'relu4_2'"):
        VGGFeatures("vgg19", ["relu4_20"])


def test_average_pooling_differs_from_max_pooling():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 32, 32)
    outputs = {}
    for pooling in ("max", "avg"):
        backbone = VGGFeatures("vgg16", ["pool1"], pooling=pooling)
        backbone.reset_parameters(torch.Generator().manual_seed(0))
        outputs[pooling] = backbone(image)["pool1"]
    assert (outputs["max"] >= outputs["avg"] - 1e-6).all()
    assert not torch.allclose(outputs["max"], outputs["avg"])


def test_caffe_preprocessing_is_bgr_0_255_minus_mean():
    backbone = VGGFeatures("vgg16", ["conv1_1"], preprocessing=CAFFE_PREPROCESSING)
    image = torch.zeros(1, 3, 2, 2)
    image[:, 0] = 1.0  # pure red
    out = backbone.preprocess(image)
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([-104.00699, -116.66877, 255 - 122.67892]))


def test_torchvision_preprocessing_normalises_per_channel():
    backbone = VGGFeatures("vgg19", ["conv1_1"])
    out = backbone.preprocess(torch.full((1, 3, 1, 1), 0.485))
    assert abs(out[0, 0, 0, 0].item()) < 1e-6
