"""neural-style's weights (content 5, style 100, TV 1e-3) carried over to styleforge's relative terms.

neural-style (jcjohnson, Torch) sums raw squared errors on Caffe-scaled features (BGR, 0-255 minus
the mean pixel); styleforge divides each term by its own target's magnitude (engine/objectives/
_functional.py). Term by term, on the same features:

    content   5 * mean((F - P)^2)                         = 5 mean(P^2) * content_rel
    style_l   100 * mean((G'_l - A'_l)^2),  G' = F F^T / (C H W)
                                                          = 100 |S_l|^2 / C_l^4 * style_rel_l
              (S = F F^T / (H W) is styleforge's Gram, so G' = S / C and the mean is over C^2)
    tv        1e-3 * 1/2 sum(dx^2 + dy^2) on 0-255 pixels ~ 1e-3 / 2 * 255^2 * 3 H W * tv_rel
              (its TVLoss writes the gradient of that sum; tv_rel = mean(dx^2) + mean(dy^2) on [0, 1])

Dividing all three by the content's coefficient gives styleforge weights with the same balance:
content 1, per-layer style weights 100 |S_l|^2 / C_l^4 / (5 mean(P^2)) (their sum is the style
weight; styleforge normalises layer weights to 1 inside the term), TV likewise. The balance
depends on the pair (a style with strong activations weighs more), as it does in neural-style.
L-BFGS's steps do not depend on the objective's overall scale, only its tolerances do.
"""

from __future__ import annotations

import torch

from styleforge import engine
from styleforge.kernels import gram

#: neural-style's defaults (content_weight, style_weight, tv_weight, content and style layers).
CONTENT_WEIGHT, STYLE_WEIGHT, TV_WEIGHT = 5.0, 100.0, 1e-3
CONTENT_LAYERS = ("relu4_2",)
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


def mapped_weights(model: str, content: torch.Tensor, style: torch.Tensor, size: int) -> dict:
    """styleforge options with neural-style's balance for this pair at ``size`` (long side; the
    style scaled to the same long side, as neural-style's style_scale 1 does)."""
    content = engine.resize_long_side(content, size)
    style = engine.resize_long_side(style, size)
    backbone = engine.load_backbone(model, [*CONTENT_LAYERS, *STYLE_LAYERS])
    with torch.no_grad():
        target = backbone(content[None])[CONTENT_LAYERS[0]]
        features = backbone(style[None])
    content_coefficient = CONTENT_WEIGHT * target.double().pow(2).mean().item()
    layer_weights = []
    for layer in STYLE_LAYERS:
        style_gram = gram(features[layer].double())  # styleforge's own S = F F^T / (H W), as the term sees it
        channels = style_gram.shape[-1]
        layer_weights.append(STYLE_WEIGHT * style_gram.pow(2).sum().item() / channels**4 / content_coefficient)
    height, width = content.shape[-2:]
    tv = TV_WEIGHT / 2 * 255.0**2 * 3 * height * width / content_coefficient
    return {"init": "gray", "levels": 1, "iterations": 1000, "content_layers": list(CONTENT_LAYERS),
            "style_layers": list(STYLE_LAYERS), "content_weight": 1.0, "style_weight": sum(layer_weights),
            "style_layer_weights": [w / sum(layer_weights) for w in layer_weights], "tv_weight": tv}
