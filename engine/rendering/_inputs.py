"""The render's inputs, checked once and resized per level: content, styles, semantic maps, and
the image the first level starts from."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .._backbone import VGGFeatures
from .._config import INITS, RenderConfig
from .._errors import ConfigError, StyleforgeWarning
from .._image import load_image, resize_long_side, resize_to
from .._maps import flat_map, parse_color
from .._models import MODELS
from .._values import frame_crop
from ..objectives import semantic_labels, shared_palette, snapping, style_loss_for
from ._color import palette_content, transfer_style_colors

__all__ = ["LevelInputs", "RenderInputs", "crop_to_frame", "initial_image", "level_inputs", "prepare_inputs"]


def crop_to_frame(image: torch.Tensor, config: RenderConfig) -> torch.Tensor:
    """The centre of ``image`` (..., H, W) with the aspect of a ``size = WxH`` frame (unchanged
    for a long-side size): the frame is covered, never stretched."""
    size = config.pyramid.size
    if not isinstance(size, tuple):
        return image
    rows, columns = frame_crop(image.shape[-2], image.shape[-1], size)
    return image[..., rows, columns]


@dataclass
class RenderInputs:
    """Full-resolution inputs, checked and cropped to the frame: (3, H, W) images."""

    content: torch.Tensor | None
    styles: list[torch.Tensor]
    init_image: torch.Tensor | None = None
    palette: torch.Tensor | None = None  # semantic maps' shared colours (K, 3)
    content_map: torch.Tensor | None = None
    style_maps: list[torch.Tensor] | None = None
    unstyled: int | None = None  # the palette index of ``unstyled_color``

    @property
    def reference(self) -> torch.Tensor | None:
        """The image whose aspect the output takes."""
        return self.content if self.content is not None else self.content_map


@dataclass
class LevelInputs:
    """One level's inputs, batched on the device: (1, 3, h, w)."""

    content: torch.Tensor | None
    styles: list[torch.Tensor]
    shape: tuple[int, int]
    content_labels: torch.Tensor | None = None  # (1, K, h, w) one-hot
    style_labels: list[torch.Tensor] | None = None
    unstyled: int | None = None  # the label channel of ``unstyled_color``
    palette_content: torch.Tensor | None = None  # init "palette": the content in the styles' palette

    @property
    def start_content(self) -> torch.Tensor | None:
        """The content as the render starts from it and adds its detail back (``level_start =
        detail``): in the styles' palette with ``init = palette``, else as it is."""
        return self.palette_content if self.palette_content is not None else self.content


def prepare_inputs(config: RenderConfig, content: torch.Tensor | None, styles: Sequence[torch.Tensor], *,
                   init_image: torch.Tensor | None = None, content_map: torch.Tensor | None = None,
                   style_maps: Sequence[torch.Tensor | str] | None = None) -> RenderInputs:
    """Check what the render was given against the config and crop it to the output's frame."""
    objective = config.objective
    if not styles:
        raise ConfigError("at least one style image is needed", field="style")
    if objective.style_blend is not None and len(objective.style_blend) != len(styles):
        raise ConfigError(f"{len(objective.style_blend)} weights for {len(styles)} style images", field="style_blend")
    if content is None and objective.photo_weight > 0:
        raise ConfigError("the photorealism term is built from the content photo: give one", field="photo_weight")
    cropped = crop_to_frame(content, config) if content is not None else None
    inputs = RenderInputs(cropped, transfer_style_colors(config, cropped, styles))
    if content_map is None and style_maps is None:
        if content is None and objective.method == "mrf":
            raise ConfigError("method mrf needs a content image or a content_map", field="method")
        if objective.unstyled_color is not None:
            raise ConfigError("names a colour of the content map: give --content-map and --style-map",
                              field="unstyled_color")
    else:
        if content_map is None or style_maps is None:
            raise ConfigError("semantic maps come in pairs: give both a content map and style maps",
                              field="content_map")
        if len(style_maps) != len(styles):
            raise ConfigError(f"{len(style_maps)} maps for {len(styles)} style images", field="style_map")
        # A string is a flat "#rrggbb" for a one-region style; flat_map refuses any other with a ConfigError.
        maps = [flat_map(m, style) if isinstance(m, str) else m for m, style in zip(style_maps, styles, strict=True)]
        _check_map_sizes(content, styles, content_map, maps)
        if style_loss_for(config).guided is None:
            raise ConfigError(f"style loss {style_loss_for(config).name!r} has no guided variant: semantic maps "
                              "cannot be used with it", field="style_loss")
        unstyled = objective.unstyled_color
        exempt = None if unstyled is None else torch.tensor(parse_color(unstyled, field="unstyled_color"))
        inputs.palette = shared_palette(content_map, torch.cat([m.reshape(3, 1, -1) for m in maps], dim=2), exempt)
        inputs.unstyled = None if unstyled is None else inputs.palette.shape[0] - 1
        _report_snapping([("content map", content_map)] + [(f"style map {i}", m) for i, m in
                                                           enumerate(maps, start=1)], inputs.palette)
        inputs.content_map = crop_to_frame(content_map, config)
        inputs.style_maps = maps
    init = config.optimization.init
    if init_image is None and init not in INITS:
        init_image = load_image(init)
    if init_image is not None:
        inputs.init_image = crop_to_frame(init_image, config)
    return inputs


def _report_snapping(maps: Sequence[tuple[str, torch.Tensor]], palette: torch.Tensor) -> None:
    """A StyleforgeWarning per map whose pixels are not all a region colour (within 2/255): each
    was snapped to the nearest one (antialiased edges, JPEG drift and borders); the user is told."""
    for what, semantic_map in maps:
        snapped, far, largest = snapping(semantic_map, palette)
        if snapped:
            total = semantic_map.shape[-2] * semantic_map.shape[-1]
            borders = f", {far} of them blends between regions (borders)" if far else ""
            warnings.warn(StyleforgeWarning(
                f"{what}: {snapped} of {total} pixels ({snapped / total:.1%}) are not one of the regions' "
                f"colours {_hexes(palette)} and were read as the nearest (at most {round(largest * 255)}/255 away"
                f"{borders})"), stacklevel=2)


def _hexes(colours: torch.Tensor) -> str:
    return ", ".join("#" + "".join(f"{round(c * 255):02x}" for c in colour.tolist()) for colour in colours)


def _check_map_sizes(content: torch.Tensor | None, styles: Sequence[torch.Tensor], content_map: torch.Tensor,
                     style_maps: Sequence[torch.Tensor]) -> None:
    for index, (style, style_map) in enumerate(zip(styles, style_maps)):
        if style_map.shape[-2:] != style.shape[-2:]:
            raise ConfigError(f"map {index + 1} is {style_map.shape[-1]}x{style_map.shape[-2]}, its style image "
                              f"{style.shape[-1]}x{style.shape[-2]}: they must be the same size", field="style_map")
    if content is not None and content_map.shape[-2:] != content.shape[-2:]:
        raise ConfigError(f"{content_map.shape[-1]}x{content_map.shape[-2]}, the content image "
                          f"{content.shape[-1]}x{content.shape[-2]}: they must be the same size", field="content_map")


def check_size(what: str, shape: Sequence[int], backbone: VGGFeatures, config: RenderConfig) -> None:
    """Refuse a size too small for the deepest layer (or, for MRF, for one patch per layer)."""
    height, width = shape[-2:]
    deepest = max(backbone.feature_info.values(), key=lambda info: info.stride)
    need, reason = deepest.stride, f"the deepest layer {deepest.name}"
    if config.objective.method == "mrf":
        mrf = config.mrf
        stride = max(backbone.feature_info[layer].stride for layer in mrf.mrf_layers)
        if mrf.patch_size * stride > need:
            need, reason = mrf.patch_size * stride, f"a {mrf.patch_size}x{mrf.patch_size} MRF patch"
    if min(height, width) < need:
        raise ConfigError(f"{what} is {width}x{height} after resizing; {reason} needs at least {need}x{need} "
                          "(raise --size, --style-scale, or lower --levels)", field="size")


def level_inputs(config: RenderConfig, inputs: RenderInputs, shape: tuple[int, int], device: torch.device,
                 backbone: VGGFeatures, *, builds_start: bool = True) -> LevelInputs:
    """The inputs at one level's (height, width): content resized to it, styles to
    ``style_scale`` times its long side, label maps to match; with ``init = palette`` and
    ``builds_start`` (the level's start is made from the content), the content in the styles'
    palette."""
    check_size("the output" if inputs.content is None else "the content image", shape, backbone, config)
    content = resize_to(inputs.content.float(), *shape)[None].to(device) if inputs.content is not None else None
    style_side = max(1, math.ceil(config.objective.style_scale * max(shape)))
    styles = [resize_long_side(style.float(), style_side)[None].to(device) for style in inputs.styles]
    for index, style in enumerate(styles):
        check_size(f"style image {index + 1}", style.shape, backbone, config)
    level = LevelInputs(content, styles, shape, unstyled=inputs.unstyled)
    if inputs.palette is not None:
        assert inputs.content_map is not None and inputs.style_maps is not None
        level.content_labels = semantic_labels(resize_to(inputs.content_map, *shape), inputs.palette).to(device)
        level.style_labels = [semantic_labels(resize_to(m, *s.shape[-2:]), inputs.palette).to(device)
                              for m, s in zip(inputs.style_maps, styles)]
    # With the content's colours asked for (luminance or histogram transfer), its own colours are
    # the palette: the start is the content. An init image (a video's warped frame) replaces it.
    if (builds_start and config.optimization.init == "palette" and content is not None
            and config.objective.colors == "none" and inputs.init_image is None):
        level.palette_content = palette_content(content[0], [style[0] for style in styles],
                                                config.objective.style_blend, content_labels=level.content_labels,
                                                style_labels=level.style_labels, keep=level.unstyled)[None]
    return level


def initial_image(config: RenderConfig, inputs: RenderInputs, level: LevelInputs) -> torch.Tensor:
    """The first level's start (1, 3, h, w): an --init image, the content (in the styles'
    palette with ``palette``), the style, noise or the flat mean colour ``gray`` (noise also for content
    and palette without a content)."""
    height, width = level.shape
    init = config.optimization.init
    if inputs.init_image is not None:  # a copy: the optimiser updates its start in place
        return resize_to(inputs.init_image[None].float(), height, width).clone()
    if init in ("content", "palette") and level.start_content is not None:
        return level.start_content.clone()
    if init == "style":
        return resize_to(level.styles[0], height, width)
    generator = torch.Generator().manual_seed(config.optimization.seed)
    if init == "gray":  # neural-style's -init random: the network's mean pixel plus noise of 0.001 of a level
        noise = torch.randn((1, 3, height, width), generator=generator) * (0.001 / 255)
        return torch.tensor(MODELS[config.runtime.model].preprocessing.mean_pixel).view(1, 3, 1, 1) + noise
    return torch.rand((1, 3, height, width), generator=generator)
