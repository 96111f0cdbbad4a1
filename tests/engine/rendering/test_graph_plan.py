"""CUDA graphs in the memory plan: a level replays graphs only when every capture's pool fits
beside its state, else it runs eagerly and --dry-run says so; captures are freed without gc.
On the CPU, with the level shapes of the README's 4K and 8K plans."""

from __future__ import annotations

import gc
import weakref

import torch

from styleforge.engine import RenderConfig, load_backbone
from styleforge.engine.backends import TorchBackend
from styleforge.engine.backends._torch import release_graphed
from styleforge.engine.rendering import plan_render

GIB = 1024**3
UHD_4K = [(1527, 2715), (2160, 3840)]  # the last two levels of the 4K UHD pyramid
UHD_8K = [(2160, 3840), (3055, 5431), (4320, 7680)]  # the last three of 8K UHD


def _plan(size, shapes, budget, graphs=True):
    return plan_render(RenderConfig(size=size, cuda_graphs=graphs), shapes, torch.device("cpu"), budget)


def test_a_tiled_level_has_one_capture_per_distinct_crop_and_they_must_all_fit():
    plan = _plan("7680x4320", UHD_8K, int(70 * GIB))  # an H100's 90%
    last = plan.levels[-1]
    assert last.tiles > 1 and len(last.crop_shapes) == 9  # corner, edge and interior crops differ
    assert last.graph_shapes == () and last.graph_bytes + last.state_bytes > 70 * GIB
    assert last.total_bytes == last.activation_bytes + last.state_bytes <= 70 * GIB  # the eager plan
    assert "eager, not CUDA graphs: 9 captures would need about" in plan.describe()
    untiled = plan.levels[0]
    assert untiled.tiles == 1 and untiled.graph_shapes == ((2160, 3840),)
    assert untiled.total_bytes == untiled.graph_bytes + untiled.state_bytes <= 70 * GIB


def test_4k_at_16_gib_replays_the_untiled_level_and_runs_the_tiled_one_eagerly():
    plan = _plan("3840x2160", UHD_4K, 16 * GIB)
    first, last = plan.levels
    assert first.tile_size == 0 and first.graph_shapes == ((1527, 2715),)
    assert last.tile_size > 0 and last.graph_shapes == ()
    text = plan.describe()
    assert "CUDA graph pools" in text and text.count("eager, not CUDA graphs") == 1


def test_graphs_that_fit_are_kept_with_every_pool_counted():
    plan = _plan("3840x2160", UHD_4K, 200 * GIB, graphs=True)
    forced = plan_render(RenderConfig(size="3840x2160", cuda_graphs=True, tile_size=1024), UHD_4K,
                         torch.device("cpu"), 200 * GIB)
    for level in forced.levels:
        assert len(level.graph_shapes) == len(level.crop_shapes) > 1
        assert level.total_bytes == level.graph_bytes + level.state_bytes > level.activation_bytes + level.state_bytes
    assert all(level.graph_shapes for level in plan.levels)


def test_without_cuda_graphs_the_plan_is_unchanged():
    plan = _plan("7680x4320", UHD_8K, 16 * GIB, graphs=False)
    assert all(level.graph_shapes == () and not level.graphs_asked for level in plan.levels)
    assert "CUDA graph" not in plan.describe()


class _Pool:
    """Stands in for a capture's static tensors."""


def _capture_like_torch(module: torch.nn.Module):
    """The reference structure torch.cuda.make_graphed_callables leaves behind: a per-capture
    class whose static methods close over the graph's buffers, and module.forward replaced by a
    closure over the module itself."""
    pool = _Pool()

    def make_function(static_outputs):
        class Graphed(torch.autograd.Function):
            @staticmethod
            def forward(ctx, *inputs):
                return static_outputs

        def functionalized(*args):
            return Graphed.apply(*args)

        return functionalized

    graphed = make_function(pool)

    def make_forward(func, graphed, original):
        def new_forward(*args):
            return graphed(*args) if func.training else original(*args)

        return new_forward

    module.forward = make_forward(module, graphed, module.forward)
    return module, weakref.ref(pool)


def test_released_captures_are_freed_without_gc():
    gc.disable()
    try:
        module, pool = _capture_like_torch(torch.nn.Identity())
        del module
        assert pool() is not None  # the cycles keep it: what `del backend` used to leave behind
        module, pool = _capture_like_torch(torch.nn.Identity())
        release_graphed(module)
        del module
        assert pool() is None
    finally:
        gc.enable()
        gc.collect()


def test_the_backend_frees_the_captures_the_next_level_does_not_use(monkeypatch):
    backend = TorchBackend(load_backbone("vgg16-random", ("relu1_1",)), torch.device("cpu"))
    released = []
    monkeypatch.setattr("styleforge.engine.backends._torch.release_graphed", released.append)
    backend._graphs = {(1, 3, 64, 64): "a", (1, 3, 48, 64): "b"}
    backend.use_graphs([(64, 64)])
    assert released == ["b"] and list(backend._graphs) == [(1, 3, 64, 64)]
    assert backend._graphed(torch.zeros(1, 3, 32, 32)) is None  # not a planned shape: eager
    backend.use_graphs(())
    assert released == ["b", "a"] and backend._graphs == {}
