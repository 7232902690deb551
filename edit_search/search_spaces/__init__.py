"""The search space: recipes, their Optuna distributions, and applying them as edits."""

from edit_search.search_spaces._edits import (
    apply_recipe,
    apply_regions,
    edit_sweep,
    operate,
    pixel_operation,
    push_lighten,
    quantize,
    ranking,
    region_mask,
)
from edit_search.search_spaces._recipe import (
    NUM_PIXELS,
    OPERATIONS,
    POLARITIES,
    TOPK_OPERATIONS,
    Recipe,
    Region,
)
from edit_search.search_spaces._space import (
    DEFAULT_STRENGTHS,
    Family,
    SearchSpace,
    suggest_family,
    sweep_counts,
)

__all__ = [
    "DEFAULT_STRENGTHS",
    "NUM_PIXELS",
    "OPERATIONS",
    "POLARITIES",
    "TOPK_OPERATIONS",
    "Family",
    "Recipe",
    "Region",
    "SearchSpace",
    "apply_recipe",
    "apply_regions",
    "edit_sweep",
    "operate",
    "pixel_operation",
    "push_lighten",
    "quantize",
    "ranking",
    "region_mask",
    "suggest_family",
    "sweep_counts",
]
