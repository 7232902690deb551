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
