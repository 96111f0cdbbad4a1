"""Objectives: loss terms on a backbone's features, on one contract (see ``_base``).

Functional references (``content_loss``, ``style_loss``, ``total_variation``) are stateless;
terms hold their targets, computed once per style and level by the render's target builder.
"""

from ._base import Objective, Region, Statistic, Term, combine_statistics
from ._content import ContentTerm, TotalVariationTerm
from ._functional import content_loss, style_loss, total_variation
from ._gram import GramStyleTerm, blend_statistics, gatys_objective, gram_statistics
from ._mrf import MRFTerm, PatchBank, build_patch_bank, mrf_objective, style_variants
from ._semantic import semantic_labels, semantic_palette, shared_palette

__all__ = [
    # the contract
    "Objective", "Term", "Region", "Statistic", "combine_statistics",
    # terms, and Gatys et al.'s objective made of them
    "gatys_objective", "mrf_objective", "ContentTerm", "GramStyleTerm", "MRFTerm", "TotalVariationTerm",
    # targets
    "PatchBank", "blend_statistics", "build_patch_bank", "gram_statistics", "style_variants",
    # semantic maps
    "semantic_labels", "semantic_palette", "shared_palette",
    # functional references
    "content_loss", "style_loss", "total_variation",
]
