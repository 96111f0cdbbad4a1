"""The render's time-left estimate (RenderEvent.remaining), on a fake clock: none before it means
something, then within 2x of the truth although the first evaluations pay the set-up."""

from __future__ import annotations

import pytest
import torch

from styleforge.engine.rendering import _loop


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("setup_seconds", [0.5, 12.0])
def test_the_first_estimate_shown_is_within_2x_of_the_time_left(setup_seconds):
    """The issue's render: a pyramid of 256, 362 and 512 px, 100 iterations each, a first
    evaluation that pays the style targets and the weights' first use (12 s), each level's set-up
    a second, and evaluations that cost their pixels (with +-20% noise)."""
    iterations, pixels = [100, 100, 100], [256 * 192, 362 * 272, 512 * 384]
    clock = FakeClock()
    timer = _loop.RenderClock(iterations, pixels, torch.device("cpu"), now=clock)
    noise = torch.Generator().manual_seed(0)
    shown: list[tuple[float, float | None]] = []
    for level, (count, size) in enumerate(zip(iterations, pixels)):
        clock.now += setup_seconds if level == 0 else 1.0
        for _ in range(count):
            clock.now += size * 1.5e-5 * (0.8 + 0.4 * float(torch.rand((), generator=noise)))
            timer.record(torch.tensor(1.0), level)
            shown.append((clock.now, timer.remaining))
    end = clock.now
    first = next(index for index, (_, remaining) in enumerate(shown) if remaining is not None)
    assert first >= 3  # nothing shown from the set-up-laden first evaluations
    at, remaining = shown[first]
    assert remaining is not None and 0.5 <= remaining / (end - at) <= 2.0
    # and every estimate after it stays within 2x of what was left (the last few seconds aside)
    for at, remaining in shown[first:-30]:
        assert remaining is not None and 0.5 <= remaining / (end - at) <= 2.0
