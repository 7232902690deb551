import pytest
import torch

from edit_search.attribution import METHODS, TARGETS, AttributionCache, attribute
from edit_search.data.images import load_image
from edit_search.objectives import margin


@pytest.fixture(scope="module")
def sample(model):
    from tests.conftest import CHALLENGE

    image = load_image(CHALLENGE / "2_label3.png")
    predicted = int(model(image.image).argmax())
    return image, predicted


@pytest.mark.parametrize("method", METHODS)
def test_attribute_every_method_gives_finite_nonzero_28x28_map(model, sample, method) -> None:
    image, predicted = sample
    for target in TARGETS:
        attributions = attribute(model, image.image, method, target, label=3, predicted=predicted)
        assert attributions.shape == (28, 28)
        assert torch.isfinite(attributions).all()
        assert attributions.abs().sum() > 0


def test_attribute_occlusion_white_margin_equals_direct_one_pixel_change(model, sample) -> None:
    image, predicted = sample
    scores = attribute(
        model, image.image, "occlusion_white", "margin", label=3, predicted=predicted
    )
    base = margin(model(image.image), 3)[0]
    for row, col in [(0, 0), (14, 14), (20, 5)]:
        changed = image.image.clone()
        changed[0, 0, row, col] = 1.0
        gain = margin(model(changed), 3)[0] - base
        assert float(scores[row, col]) == pytest.approx(float(gain), abs=1e-4)


def test_attribute_integrated_gradients_black_gives_black_pixels_zero(model, sample) -> None:
    image, predicted = sample
    maps = attribute(
        model, image.image, "integrated_gradients", "true", label=3, predicted=predicted
    )
    black = image.pixels == 0
    assert torch.all(maps[black] == 0)
    white = attribute(
        model, image.image, "integrated_gradients_white", "true", label=3, predicted=predicted
    )
    assert white[black].abs().sum() > 0


def test_attribution_cache_computes_each_map_once(model, sample) -> None:
    image, predicted = sample
    cache = AttributionCache(model, image.image, 3, predicted)
    first = cache.get("gradient_shap", "true")
    assert cache.get("gradient_shap", "true") is first
    again = AttributionCache(model, image.image, 3, predicted).get("gradient_shap", "true")
    assert torch.equal(first, again)


def test_attribute_greedy_first_change_is_the_best_single_pixel_change(model, sample) -> None:
    image, predicted = sample
    order = attribute(model, image.image, "greedy", "margin", label=3, predicted=predicted)
    to_white = attribute(
        model, image.image, "occlusion_white", "margin", label=3, predicted=predicted
    )
    to_black = attribute(model, image.image, "occlusion", "margin", label=3, predicted=predicted)
    first = int(order.abs().argmax())
    gains = torch.stack([to_white.reshape(-1), to_black.reshape(-1)])  # (2, 784)
    # Setting a pixel to its own value changes nothing, so only real changes compete.
    pixels = image.pixels.reshape(-1)
    gains[0, pixels == 255] = -torch.inf
    gains[1, pixels == 0] = -torch.inf
    values, indices = gains.max(dim=1)  # (2,), (2,): best to white, best to black
    wants_white = bool(order.reshape(-1)[first] > 0)
    assert first == int(indices[0 if wants_white else 1])
    assert wants_white == bool(values[0] >= values[1])


def test_attribute_greedy_prefix_reaches_margin_and_ignores_target(model, sample) -> None:
    image, predicted = sample
    order = attribute(model, image.image, "greedy", "margin", label=3, predicted=predicted)
    same = attribute(model, image.image, "greedy", "true", label=3, predicted=predicted)
    assert torch.equal(order, same)
    changed = image.image.clone().reshape(-1)
    for pixel in torch.argsort(order.reshape(-1).abs(), descending=True)[:20]:
        value = float(order.reshape(-1)[pixel])
        if value != 0:
            changed[pixel] = 1.0 if value > 0 else 0.0
    assert float(margin(model(changed.reshape(1, 1, 28, 28)), 3)[0]) > 0


def test_attribution_cache_shares_one_greedy_map_across_targets(model, sample) -> None:
    image, predicted = sample
    cache = AttributionCache(model, image.image, 3, predicted)
    assert cache.get("greedy", "predicted") is cache.get("greedy", "margin")
