"""Flow, warping and masks against motions whose flow is known exactly."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

from styleforge.engine import load_image, resize_long_side
from styleforge.engine.video import (
    MissingExtraError,
    consistency_mask,
    motion_boundaries,
    occlusions,
    optical_flow,
    require,
    warp,
)

pytest.importorskip("cv2", reason="optical flow needs OpenCV (the video extra)")


def _shifted(image: torch.Tensor, dx: float, dy: float, height: int, width: int) -> torch.Tensor:
    """The (height, width) window at (16, 16) of ``image`` moved by (dx, dy): out(x) = image(x + 16 + d), bicubic."""
    ys, xs = torch.meshgrid(torch.arange(height) + 16.0 + dy, torch.arange(width) + 16.0 + dx, indexing="ij")
    grid = torch.stack([2 * xs / (image.shape[2] - 1) - 1, 2 * ys / (image.shape[1] - 1) - 1], dim=-1)[None]
    return F.grid_sample(image[None], grid, mode="bicubic", align_corners=True)[0].clamp(0, 1)


@pytest.fixture
def photo(test_images):
    return resize_long_side(load_image(test_images / "tubingen.jpg"), 176)


@pytest.mark.parametrize("shift", [(2.5, -1.25), (-0.4, 0.7)])
def test_flow_of_a_subpixel_translation_is_accurate_to_a_fraction_of_a_pixel(photo, shift):
    source = _shifted(photo, 0.0, 0.0, 96, 128)
    target = _shifted(photo, *shift, 96, 128)  # target(x) = source(x + shift): source's x is at x - shift
    flow = optical_flow(source, target, preset="medium")
    assert flow.shape == (2, 96, 128) and flow.dtype == torch.float32
    expected = -torch.tensor(shift).view(2, 1, 1)
    error = (flow - expected).norm(dim=0)[8:-8, 8:-8]  # away from the borders, where content leaves
    assert error.mean() < 0.15, error.mean()
    assert error.median() < 0.1, error.median()


def test_warping_with_the_estimated_flow_brings_the_frame_back(photo):
    source, target = _shifted(photo, 0.0, 0.0, 96, 128), _shifted(photo, 3.5, 1.5, 96, 128)
    back = warp(target, optical_flow(source, target, preset="medium"))
    inner = (slice(None), slice(8, -8), slice(8, -8))
    assert (back - source)[inner].abs().mean() < 0.2 * (target - source)[inner].abs().mean()


def test_warp_is_exact_for_whole_pixels_and_bilinear_between_them():
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, 6, 9, generator=generator, dtype=torch.float64)
    flow = torch.zeros(2, 6, 9)
    flow[0], flow[1] = 2.0, -1.0
    warped = warp(image, flow)  # out(y, x) = image(y - 1, x + 2)
    assert torch.allclose(warped[:, 1:, :-2], image[:, :-1, 2:], rtol=0, atol=1e-12)
    assert torch.allclose(warped[:, 0, :-2], image[:, 0, 2:], rtol=0, atol=1e-12)  # above the top: the border row
    flow[0], flow[1] = 0.5, 0.0
    half = warp(image[None], flow)[0]  # batched input too
    assert torch.allclose(half[:, :, :-1], (image[:, :, :-1] + image[:, :, 1:]) / 2, rtol=0, atol=1e-12)


def _moving_square(height=40, width=48, top=10, left=12, side=14, step=6):
    """True flows of a square moving ``step`` px right over a still background."""
    forward = torch.zeros(2, height, width)  # previous -> current
    forward[0, top:top + side, left:left + side] = step
    backward = torch.zeros(2, height, width)  # current -> previous
    backward[0, top:top + side, left + step:left + step + side] = -step
    revealed = torch.zeros(height, width, dtype=torch.bool)  # under the square before, not now
    revealed[top:top + side, left:left + step] = True
    return forward, backward, revealed


def test_forward_backward_check_finds_exactly_the_revealed_background():
    forward, backward, revealed = _moving_square()
    assert torch.equal(occlusions(forward, backward), revealed)


def test_motion_boundaries_lie_on_the_square_s_edges_and_the_mask_drops_both():
    forward, backward, revealed = _moving_square()
    edges = motion_boundaries(backward)
    moving = backward[0] != 0
    near = F.max_pool2d(moving.float()[None, None], 3, stride=1, padding=1)[0, 0].bool() & \
        ~(-F.max_pool2d(-moving.float()[None, None], 3, stride=1, padding=1)[0, 0]).bool()
    assert edges.any() and not (edges & ~near).any()  # only within a pixel of the edge
    mask = consistency_mask(forward, backward)
    assert mask.shape == (1, 1, 40, 48)
    assert torch.equal(mask[0, 0] == 0, revealed | edges)
    assert mask[0, 0, :5].eq(1).all()  # still background far away is trusted


def test_masks_from_estimated_flow_drop_most_of_a_revealed_region(photo, test_images):
    style = resize_long_side(load_image(test_images / "starry_night.jpg"), 64)
    background = _shifted(photo, 0.0, 0.0, 96, 128)
    previous, current = background.clone(), background.clone()
    previous[:, 30:62, 40:72] = style[:, :32, :32]
    current[:, 30:62, 52:84] = style[:, :32, :32]  # 12 px right: columns 40..51 are revealed
    forward = optical_flow(previous, current, preset="medium")
    backward = optical_flow(current, previous, preset="medium")
    mask = consistency_mask(forward, backward)[0, 0]
    assert mask[30:62, 40:52].mean() < 0.5
    assert mask[:20].mean() > 0.9 and mask[75:].mean() > 0.9


def test_a_missing_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 now raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'styleforge\[video\]'"):
        require("cv2")
    with pytest.raises(MissingExtraError, match="opencv-python-headless"):
        optical_flow(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))
