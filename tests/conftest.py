"""Shared fixtures: tiny inputs, random backbones, an isolated cache, and the test images."""

from __future__ import annotations

import functools
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

#: Small copies of shared images (see data/SOURCES.md): the tests need nothing beside the clone.
TEST_IMAGES = Path(__file__).resolve().parent / "data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Unit tests never touch the user's cache; integration tests opt back in explicitly."""
    monkeypatch.setenv("STYLEFORGE_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch-home")))


@pytest.fixture
def test_images() -> Path:
    return TEST_IMAGES


def _stripes(height: int, width: int, *colors: tuple[float, float, float]) -> torch.Tensor:
    """A (3, H, W) semantic map of vertical stripes of equal width, one per colour."""
    semantic = torch.zeros(3, height, width)
    edges = [round(width * i / len(colors)) for i in range(len(colors) + 1)]
    for color, start, stop in zip(colors, edges, edges[1:]):
        semantic[:, :, start:stop] = torch.tensor(color)[:, None, None]
    return semantic


@pytest.fixture
def stripes():
    """stripes(height, width, *colours): a map of vertical stripes, one per colour."""
    return _stripes


@functools.cache
def package_index_reachable() -> str | None:
    """None when pip can reach its index, else the reason it cannot."""
    try:
        host = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
            capture_output=True, text=True, timeout=30,
        ).stdout.strip() or "https://pypi.org/simple"
        name = host.split("//", 1)[-1].split("/", 1)[0].split("@")[-1].split(":")[0]
        socket.create_connection((name, 443), timeout=5).close()
    except (OSError, subprocess.SubprocessError) as error:
        return f"the Python package index cannot be reached ({error})"
    return None


@pytest.fixture
def needs_index():
    reason = package_index_reachable()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def random_vgg19():
    from styleforge.engine import load_backbone

    return load_backbone(
        "vgg19-random",
        ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1"),
        seed=0,
    )


@pytest.fixture
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
