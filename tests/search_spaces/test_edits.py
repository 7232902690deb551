import torch

from edit_search.search_spaces import (
    Recipe,
    Region,
    apply_recipe,
    edit_sweep,
    pixel_operation,
    quantize,
    ranking,
    sweep_counts,
)


def _small_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Three inked pixels and a map that ranks them, plus two background pixels."""
    pixels = torch.zeros(28, 28, dtype=torch.uint8)
    pixels[10, 10], pixels[10, 11], pixels[10, 12] = 200, 100, 255
    attribution = torch.zeros(28, 28)
    attribution[10, 10], attribution[10, 11], attribution[10, 12] = 0.5, 0.9, 0.1
    attribution[0, 0], attribution[27, 27] = 0.7, -0.8
    return pixels, attribution


def test_apply_recipe_darken_top2_changes_exactly_the_two_best_inked_pixels() -> None:
    pixels, attribution = _small_case()
    recipe = Recipe("saliency", "true", "positive", 2, "darken", 0.5)
    edit = apply_recipe(pixels, attribution, recipe)
    expected = pixels.clone()
    # Darken x(1 - s) on the grid: 100 -> 50, 200 -> 100; the black (0, 0) is not eligible.
    expected[10, 11], expected[10, 10] = 50, 100
    assert torch.equal(edit, expected)


def test_apply_recipe_lighten_negative_polarity_ranks_most_negative_first() -> None:
    pixels, attribution = _small_case()
    recipe = Recipe("saliency", "true", "negative", 1, "lighten", 0.5)
    edit = apply_recipe(pixels, attribution, recipe)
    expected = pixels.clone()
    expected[27, 27] = 128  # 0 + 0.5 * (255 - 0) = 127.5, rounded on the grid to 128
    assert torch.equal(edit, expected)


def test_apply_recipe_region_applies_after_topk_and_is_clipped_at_edge() -> None:
    pixels, attribution = _small_case()
    region = Region(26, 26, 2, 2, "lighten", 1.0)
    recipe = Recipe("saliency", "true", "positive", 1, "darken", 1.0, (region,))
    edit = apply_recipe(pixels, attribution, recipe)
    expected = pixels.clone()
    expected[10, 11] = 0
    expected[26:28, 26:28] = 255
    assert torch.equal(edit, expected)


def test_ranking_ineligible_pixels_rank_last() -> None:
    pixels, attribution = _small_case()
    rank = ranking(attribution, "positive", pixels, "darken").reshape(28, 28)
    assert rank[10, 11] == 0 and rank[10, 10] == 1 and rank[10, 12] == 2
    assert int((rank == 784).sum()) == 784 - 3


def test_edit_sweep_rows_equal_apply_recipe_for_every_count_and_strength() -> None:
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randint(0, 256, (28, 28), dtype=torch.uint8, generator=generator)
    attribution = torch.randn(28, 28, generator=generator)
    counts = torch.tensor([1, 5, 40])
    strengths = torch.tensor([0.3, 1.0])
    rank = ranking(attribution, "absolute", pixels, "lighten")
    sweep = edit_sweep(pixels, rank, counts, strengths, "lighten")
    for i, count in enumerate(counts.tolist()):
        for j, strength in enumerate(strengths.tolist()):
            recipe = Recipe("saliency", "true", "absolute", count, "lighten", strength)
            assert torch.equal(sweep[i * 2 + j], apply_recipe(pixels, attribution, recipe))


def test_quantize_rounds_to_nearest_grid_value_and_clamps() -> None:
    values = torch.tensor([-0.1, 0.0, 127.4 / 255, 127.6 / 255, 1.0, 1.2])
    assert quantize(values).tolist() == [0, 0, 127, 128, 255, 255]


def test_sweep_counts_dense_at_small_counts_and_ends_at_budget() -> None:
    counts = sweep_counts(313)
    assert counts[:32] == list(range(1, 33))
    assert counts[-1] == 313 and counts == sorted(set(counts))
    assert sweep_counts(3) == [1, 2, 3]


def test_recipe_dict_round_trip() -> None:
    recipe = Recipe(
        "grad_cam", "margin", "absolute", 7, "lighten", 0.25, (Region(1, 2, 3, 4, "darken", 0.5),)
    )
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    assert recipe.top_k == 7 / 784


def test_apply_recipe_push_lightens_positive_and_darkens_negative_by_magnitude() -> None:
    pixels, attribution = _small_case()
    recipe = Recipe("greedy", "margin", "positive", 3, "push", 1.0)
    edit = apply_recipe(pixels, attribution, recipe)
    expected = pixels.clone()
    # |map| order: 0.9 (10, 11), -0.8 (27, 27) is black already, 0.7 (0, 0), 0.5 (10, 10).
    expected[10, 11], expected[0, 0], expected[10, 10] = 255, 255, 255
    assert torch.equal(edit, expected)
    attribution[10, 11] = -0.95
    edit = apply_recipe(pixels, attribution, recipe)
    expected[10, 11] = 0
    assert torch.equal(edit, expected)


def test_apply_recipe_keep_restores_listed_pixels_after_regions() -> None:
    pixels, attribution = _small_case()
    region = Region(0, 0, 2, 2, "lighten", 1.0)
    keep = (0, 10 * 28 + 11)
    recipe = Recipe("saliency", "true", "positive", 2, "darken", 1.0, (region,), keep)
    edit = apply_recipe(pixels, attribution, recipe)
    expected = pixels.clone()
    expected[10, 10] = 0
    expected[0, 1], expected[1, 0], expected[1, 1] = 255, 255, 255
    assert torch.equal(edit, expected)


def test_edit_sweep_push_rows_equal_apply_recipe_with_keep() -> None:
    generator = torch.Generator().manual_seed(2)
    pixels = torch.randint(0, 256, (28, 28), dtype=torch.uint8, generator=generator)
    attribution = torch.randn(28, 28, generator=generator)
    counts, strengths, keep = torch.tensor([3, 50]), torch.tensor([0.5, 1.0]), (5, 700)
    rank = ranking(attribution, "negative", pixels, "push")
    operation = pixel_operation(attribution, "negative", "push")
    sweep = edit_sweep(pixels, rank, counts, strengths, operation, (), keep)
    for i, count in enumerate(counts.tolist()):
        for j, strength in enumerate(strengths.tolist()):
            recipe = Recipe("greedy", "margin", "negative", count, "push", strength, (), keep)
            assert torch.equal(sweep[i * 2 + j], apply_recipe(pixels, attribution, recipe))


def test_recipe_from_dict_without_keep_reads_an_older_recipe() -> None:
    old = {
        "method": "saliency",
        "target": "true",
        "polarity": "positive",
        "pixels": 4,
        "operation": "darken",
        "strength": 0.5,
        "regions": [],
    }
    recipe = Recipe.from_dict(old)
    assert recipe.keep == ()
    assert Recipe.from_dict(recipe.to_dict()) == recipe


def test_edit_sweep_without_regions_equals_the_float_path_with_a_no_op_region() -> None:
    generator = torch.Generator().manual_seed(3)
    pixels = torch.randint(0, 256, (28, 28), dtype=torch.uint8, generator=generator)
    attribution = torch.randn(28, 28, generator=generator)
    counts, strengths = torch.tensor([1, 7, 200, 784]), torch.tensor([0.05, 0.37, 0.5, 1.0])
    # A region of strength 0 changes nothing but sends the sweep down the float path.
    no_op = (Region(0, 0, 1, 1, "lighten", 0.0),)
    for operation in ("lighten", "darken", "push"):
        rank = ranking(attribution, "positive", pixels, operation)
        per_pixel = pixel_operation(attribution, "positive", operation)
        fast = edit_sweep(pixels, rank, counts, strengths, per_pixel)
        slow = edit_sweep(pixels, rank, counts, strengths, per_pixel, no_op)
        assert torch.equal(fast, slow)
