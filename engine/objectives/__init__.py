"""Objectives: loss terms on a backbone's features, on one contract (see ``_base``).

Functional references (``content_loss``, ``style_loss``, ``total_variation``,
``wasserstein2_gaussian``, ``sliced_wasserstein``, ``matting_energy``) are stateless;
terms hold their targets, computed once per style and level by the render's target builder.
"""

from ._base import Objective, Window, Statistic, Term, blend_statistics, combine_statistics
from ._content import ContentTerm, TotalVariationTerm
from ._functional import content_loss, style_loss, total_variation
from ._registry import OverWindows, StyleLoss, StyleTargets, guided_moment_term, register_style_loss, style_loss_for
from ._gram import GramStyleTerm, content_style_objective, gatys_objective, gram_statistics
# Each loss registers itself on import: this order (gram, w2, sliced, nnst) is the order errors and
# help list them in.
from ._w2 import W2StyleTerm, gaussian_fit, gaussian_statistics, sqrtm_psd, wasserstein2_gaussian
# isort: split
from ._mrf import MRFTerm, PatchBank, build_patch_bank, mrf_objective, style_variants
from ._photo import (
    MATTING_EPSILON,
    PhotorealismTerm,
    matting_bytes,
    matting_energy,
    matting_energy_in_bands,
    matting_offsets,
)
from ._regions import GuidedStyleTerm, RegionGuide, guided_moments, normalized_region
from ._semantic import REGION_SHARE, semantic_labels, semantic_palette, shared_palette, snapping
from ._sliced import (
    GuidedSlicedTerm,
    SlicedStyleTerm,
    SlicedTarget,
    build_sliced_target,
    guided_projection_statistics,
    projection_histograms,
    random_directions,
    sliced_wasserstein,
)
from ._temporal import TemporalTerm, temporal_loss
from ._nnst import NNST_LAYERS, NNSTTarget, NNSTTerm, hypercolumns, nearest_hypercolumns

__all__ = [
    # the contract, and the registry every style loss declares itself in
    "Objective", "Term", "Window", "Statistic", "combine_statistics", "blend_statistics",
    "StyleLoss", "StyleTargets", "OverWindows", "register_style_loss", "style_loss_for", "guided_moment_term",
    # Neural Neighbor Style Transfer (Kolkin et al. 2022)
    "NNSTTerm", "NNSTTarget", "NNST_LAYERS", "hypercolumns", "nearest_hypercolumns",
    # terms, and Gatys et al.'s objective made of them
    "gatys_objective", "content_style_objective", "mrf_objective", "ContentTerm", "GramStyleTerm", "W2StyleTerm",
    "SlicedStyleTerm", "MRFTerm", "TotalVariationTerm", "TemporalTerm",
    # photorealism (Luan et al.): the matting Laplacian of the content, matrix-free
    "PhotorealismTerm", "MATTING_EPSILON", "matting_bytes", "matting_energy", "matting_energy_in_bands",
    "matting_offsets",
    # targets
    "PatchBank", "SlicedTarget", "build_patch_bank", "build_sliced_target", "gaussian_statistics",
    "gram_statistics", "projection_histograms", "random_directions", "style_variants",
    # semantic maps, and regions for the global style terms
    "REGION_SHARE", "semantic_labels", "semantic_palette", "shared_palette", "snapping", "GuidedStyleTerm",
    "GuidedSlicedTerm",
    "RegionGuide", "guided_moments", "guided_projection_statistics", "normalized_region",
    # functional references
    "content_loss", "style_loss", "total_variation", "wasserstein2_gaussian", "gaussian_fit", "sqrtm_psd",
    "sliced_wasserstein", "temporal_loss",
]
