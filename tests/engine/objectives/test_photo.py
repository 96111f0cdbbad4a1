"""Luan et al.'s photorealism term against Levin et al.'s matting Laplacian built as an explicit
matrix, straight from the paper's formula, in float64 on a tiny image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from styleforge.engine import RenderConfig, load_image, resize_to
from styleforge.engine.objectives import (
    MATTING_EPSILON,
    Objective,
    PhotorealismTerm,
    _photo,
    matting_bytes,
    matting_energy,
    matting_energy_in_bands,
    matting_offsets,
)
from styleforge.engine.rendering import plan_render

HEIGHT, WIDTH = 7, 9


def dense_matting_laplacian(content: np.ndarray, epsilon: float) -> np.ndarray:
    """Levin, Lischinski and Weiss (CVPR 2006), eq. 12, as their getLaplacian builds it: for every
    3x3 window wholly inside the (3, H, W) image, L_ij += delta_ij - (1 + (I_i - mu)^T
    (Sigma + eps / 9 Id)^-1 (I_j - mu)) / 9. Returns the (H W, H W) matrix."""
    _, height, width = content.shape
    laplacian = np.zeros((height * width, height * width))
    for y in range(1, height - 1):
        for x in range(1, width - 1):
            index = [(y + dy) * width + (x + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
            colours = content[:, y - 1:y + 2, x - 1:x + 2].reshape(3, 9).T  # (9, 3)
            mean = colours.mean(axis=0)
            covariance = (colours - mean).T @ (colours - mean) / 9
            inverse = np.linalg.inv(covariance + epsilon / 9 * np.eye(3))
            block = np.eye(9) - (1 + (colours - mean) @ inverse @ (colours - mean).T) / 9
            laplacian[np.ix_(index, index)] += block
    return laplacian


@pytest.fixture
def content(test_images) -> torch.Tensor:
    """A 7x9 corner of a real photo (float64), with a perfectly flat patch where the
    regularised covariance is eps alone (A = 9e7: the case that breaks naive float32 forms)."""
    photo = load_image(test_images / "tubingen.jpg")
    small = resize_to(photo[None].double(), 28, 36)[..., 10:10 + HEIGHT, 14:14 + WIDTH].clone()
    small[..., :3, :4] = torch.tensor([0.3, 0.5, 0.7], dtype=torch.float64)[:, None, None]
    return small


def _random_image(seed: int) -> torch.Tensor:
    return torch.rand(1, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_energy_and_gradient_equal_the_dense_matting_laplacian(content):
    laplacian = dense_matting_laplacian(content[0].numpy(), MATTING_EPSILON)
    image = _random_image(0).requires_grad_(True)
    energy = matting_energy(image, matting_offsets(content))
    (gradient,) = torch.autograd.grad(energy, image)

    channels = image.detach()[0].reshape(3, -1).numpy()  # (3, H W)
    expected = sum(v @ laplacian @ v for v in channels)
    expected_gradient = 2 * channels @ laplacian  # L is symmetric: d(v^T L v)/dv = 2 L v
    assert energy.item() == pytest.approx(expected, rel=1e-8)
    got = gradient[0].reshape(3, -1).numpy()
    assert np.abs(got - expected_gradient).max() <= 1e-8 * np.abs(expected_gradient).max()


def test_the_dense_laplacian_is_symmetric_psd_and_constant_images_cost_nothing(content):
    laplacian = dense_matting_laplacian(content[0].numpy(), MATTING_EPSILON)
    assert np.allclose(laplacian, laplacian.T, atol=1e-12)
    assert np.abs(laplacian @ np.ones(HEIGHT * WIDTH)).max() < 1e-7 * np.abs(laplacian).max()
    vectors = np.random.default_rng(0).standard_normal((50, HEIGHT * WIDTH))
    assert (np.einsum("ki,ij,kj->k", vectors, laplacian, vectors) >= -1e-9).all()


def test_constant_images_and_the_content_itself_cost_nothing_matrix_free(content):
    offsets = matting_offsets(content)
    grey = torch.full((1, 3, HEIGHT, WIDTH), 0.4, dtype=torch.float64)
    assert matting_energy(grey, offsets).abs().item() < 1e-12
    # Any per-channel affine recolouring of the content is what L allows for free (up to eps).
    recoloured = 0.5 * content.flip(1) + 0.2
    assert matting_energy(recoloured, offsets).item() < 1e-5 * matting_energy(_random_image(1), offsets).item()


def test_the_energy_is_nonnegative_on_random_images(content):
    offsets = matting_offsets(content)
    for seed in range(20):
        assert matting_energy(_random_image(seed) - 0.5, offsets).item() >= -1e-10


def test_float32_offsets_keep_the_energy_and_gradient_of_float64(content):
    # The whitened form avoids the cancellation a box-sum form suffers with eps = 1e-7.
    image = _random_image(2)
    exact = matting_energy(image.requires_grad_(True), matting_offsets(content))
    (exact_gradient,) = torch.autograd.grad(exact, image)
    single = image.detach().float().requires_grad_(True)
    approx = matting_energy(single, matting_offsets(content.float()))
    (approx_gradient,) = torch.autograd.grad(approx, single)
    assert approx.item() == pytest.approx(exact.item(), rel=1e-4)
    assert (approx_gradient.double() - exact_gradient).abs().max() <= 1e-4 * exact_gradient.abs().max()


def test_the_term_is_the_energy_per_pixel_and_weighs_in_the_objective(content):
    term = PhotorealismTerm(content)
    image = _random_image(3)
    expected = matting_energy(image, matting_offsets(content)).item() / (HEIGHT * WIDTH)
    assert term.pixel_value(image).item() == pytest.approx(expected, rel=1e-12)
    objective = Objective([term], {"photo": 5.0})
    assert objective.pixel_terms(image)["photo"].item() == pytest.approx(expected, rel=1e-12)
    assert objective.total(objective.pixel_terms(image)).item() == pytest.approx(5 * expected, rel=1e-12)


def test_mismatched_sizes_are_refused(content):
    with pytest.raises(ValueError, match="do not fit"):
        matting_energy(torch.zeros(1, 3, HEIGHT + 1, WIDTH), matting_offsets(content))
    with pytest.raises(ValueError, match="content must be"):
        matting_offsets(torch.zeros(1, 3, 2, 9))


def test_offsets_built_in_bands_equal_the_whole_build(content, monkeypatch):
    whole = matting_offsets(content)
    monkeypatch.setattr(_photo, "_BAND_WINDOWS", 10)  # 7 columns of windows: bands of one row
    assert torch.allclose(matting_offsets(content), whole, rtol=0, atol=1e-12)


def test_the_planner_counts_the_term_with_the_optimiser_state():
    shapes, cpu = [(300, 400)], torch.device("cpu")
    plain = plan_render(RenderConfig(), shapes, cpu, budget=1 << 40).levels[0]
    photo = plan_render(RenderConfig(photo_weight=1.0), shapes, cpu, budget=1 << 40).levels[0]
    assert photo.state_bytes - plain.state_bytes == matting_bytes(300, 400) > 30 * 300 * 400 * 4


@pytest.mark.parametrize("band_windows", [7, 15, 1 << 18])  # one window row per band, two, all
def test_the_banded_fast_path_equals_the_reference_in_value_and_gradient(content, monkeypatch, band_windows):
    offsets = matting_offsets(content)
    monkeypatch.setattr(_photo, "_BAND_WINDOWS", band_windows)
    image = _random_image(4).requires_grad_(True)
    expected = matting_energy(image, offsets)
    (expected_gradient,) = torch.autograd.grad(expected, image)
    value = matting_energy_in_bands(image, offsets)
    (gradient,) = torch.autograd.grad(3.0 * value, image)  # the upstream gradient scales it
    assert value.item() == pytest.approx(expected.item(), rel=1e-12)
    assert torch.allclose(gradient, 3.0 * expected_gradient, rtol=0, atol=1e-12 * expected_gradient.abs().max())
