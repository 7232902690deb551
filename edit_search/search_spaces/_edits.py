"""Applying recipes to an image: batched tensor work on the uint8 grid."""

from __future__ import annotations

import torch

from edit_search.search_spaces._recipe import Recipe, Region


def _signed(attribution: torch.Tensor, polarity: str) -> torch.Tensor:
    score = attribution.reshape(-1).to(torch.float64)  # (784,)
    if polarity == "negative":
        return -score
    if polarity == "absolute":
        return score.abs()
    return score


def push_lighten(attribution: torch.Tensor, polarity: str) -> torch.Tensor:
    """Which pixels ``push`` lightens: those whose signed map value is >= 0, bool (784,).

    A positive value says more ink helps, a negative one says less ink helps; ``negative``
    polarity flips that, ``absolute`` lightens every pixel.
    """
    return _signed(attribution, polarity) >= 0


def pixel_operation(
    attribution: torch.Tensor, polarity: str, operation: str
) -> str | torch.Tensor:
    """The operation per pixel: the name itself, or for ``push`` the bool (784,) lighten mask."""
    if operation == "push":
        return push_lighten(attribution, polarity)
    return operation


def ranking(
    attribution: torch.Tensor, polarity: str, pixels: torch.Tensor, operation: str
) -> torch.Tensor:
    """Rank of every pixel for a top-k edit; pixels the operation cannot change rank last.

    Args:
        attribution: the map, shape (28, 28).
        polarity: ``positive``, ``negative`` or ``absolute``.
        pixels: the image's uint8 values, shape (28, 28).
        operation: ``lighten``, ``darken`` or ``push`` (each pixel moved the way its signed
            map value says helps, ranked by the value's magnitude).

    Returns:
        rank (784,) int64, 0 for the first pixel to change; ineligible pixels get 784.
    """
    score = _signed(attribution, polarity)
    flat = pixels.reshape(-1)
    if operation == "push":
        lighten = score >= 0
        eligible = torch.where(lighten, flat < 255, flat > 0)
        score = score.abs()
    else:
        eligible = flat < 255 if operation == "lighten" else flat > 0
    score = torch.where(eligible, score, torch.full_like(score, float("-inf")))
    order = torch.sort(score, descending=True, stable=True).indices  # (784,)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    return torch.where(eligible, rank, torch.full_like(rank, flat.numel()))


def operate(images: torch.Tensor, lighten: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
    """Lighten ``x + s(1 - x)`` or darken ``x(1 - s)``, per row.

    Args:
        images: float values in [0, 1], shape (B, N).
        lighten: bool, shape (B, 1) or broadcastable.
        strength: s in [0, 1], shape (B, 1) or broadcastable.
    """
    return torch.where(lighten, images + strength * (1.0 - images), images * (1.0 - strength))


def region_mask(region: Region, device: torch.device | None = None) -> torch.Tensor:
    """The pixels a region covers, bool (784,)."""
    mask = torch.zeros(28, 28, dtype=torch.bool, device=device)
    mask[region.y : region.y + region.height, region.x : region.x + region.width] = True
    return mask.reshape(-1)


def apply_regions(edited: torch.Tensor, regions: tuple[Region, ...]) -> torch.Tensor:
    """Apply region operations in order to a batch of float edits (B, 784)."""
    for region in regions:
        mask = region_mask(region, edited.device)  # (784,)
        lighten = torch.tensor(region.operation == "lighten", device=edited.device)
        changed = operate(edited, lighten, torch.tensor(region.strength, device=edited.device))
        edited = torch.where(mask, changed, edited)
    return edited


def edit_sweep(
    pixels: torch.Tensor,
    rank: torch.Tensor,
    counts: torch.Tensor,
    strengths: torch.Tensor,
    operation: str | torch.Tensor,
    regions: tuple[Region, ...] = (),
    keep: tuple[int, ...] = (),
) -> torch.Tensor:
    """Every (count, strength) combination of one ranked top-k edit, in one tensor op.

    Args:
        pixels: the image's uint8 values, shape (28, 28).
        rank: from ``ranking``, shape (784,).
        counts: top-k pixel counts, int64 (K,).
        strengths: strengths in (0, 1], float (S,).
        operation: ``lighten`` or ``darken``, or a bool (784,) mask of the pixels to lighten
            (the others are darkened), from ``pixel_operation``.
        regions: applied after the top-k edit.
        keep: flat pixel indices restored to their original value after everything else.

    Returns:
        uint8 edits, shape (K * S, 28, 28), count-major: row ``i * S + j`` is
        ``counts[i]`` with ``strengths[j]``.
    """
    image = pixels.reshape(1, -1).to(torch.float32) / 255.0  # (1, 784)
    selected = rank[None, :] < counts[:, None]  # (K, 784)
    if isinstance(operation, str):
        lighten = torch.tensor(operation == "lighten", device=image.device)
    else:
        lighten = operation.reshape(1, -1).to(image.device)  # (1, 784)
    changed = operate(image, lighten, strengths.to(torch.float32)[:, None])  # (S, 784)
    if regions:
        # Regions act on the unquantized top-k edit, so the whole sweep stays in floats.
        edited = torch.where(selected[:, None, :], changed[None], image[None])  # (K, S, 784)
        edits = quantize(apply_regions(edited.reshape(-1, image.shape[1]), regions))
    else:
        # Quantizing before the selection gives the same bytes (an unchanged pixel quantizes
        # back to itself) and leaves only a uint8 select at the sweep's full size.
        flat = pixels.reshape(1, 1, -1)  # (1, 1, 784)
        edits = torch.where(selected[:, None, :], quantize(changed)[None], flat)  # (K, S, 784)
        edits = edits.reshape(-1, image.shape[1])  # (K * S, 784)
    if keep:
        index = torch.tensor(keep, dtype=torch.int64, device=edits.device)
        edits[:, index] = pixels.reshape(-1)[index]
    return edits.reshape(-1, 28, 28)


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Float values in [0, 1] -> nearest uint8, same shape."""
    return (images.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


def apply_recipe(pixels: torch.Tensor, attribution: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    """One recipe on one image.

    Args:
        pixels: the image's uint8 values, shape (28, 28).
        attribution: the map of ``recipe.method`` for ``recipe.target``, shape (28, 28).
        recipe: what to change.

    Returns:
        The edit's uint8 values, shape (28, 28).
    """
    rank = ranking(attribution, recipe.polarity, pixels, recipe.operation)
    counts = torch.tensor([recipe.pixels], device=pixels.device)
    strengths = torch.tensor([recipe.strength], device=pixels.device)
    operation = pixel_operation(attribution, recipe.polarity, recipe.operation)
    return edit_sweep(pixels, rank, counts, strengths, operation, recipe.regions, recipe.keep)[0]
