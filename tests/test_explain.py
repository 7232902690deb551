import dataclasses
import io
from itertools import combinations

import numpy as np
import pytest
import torch
from PIL import Image

from edit_search.attribution import METHODS
from edit_search.data.images import load_image
from edit_search.errors import InputError
from edit_search.explain import (
    ORDER_METHODS,
    ROWS,
    explain,
    explanation_figure,
    figure_png,
    row_scale,
)


@pytest.fixture(scope="module")
def explanation(model):
    from tests.conftest import CHALLENGE

    return explain(model, load_image(CHALLENGE / "2_label3.png"))


def _cells_from_png(fig, cells):
    """Crop every cell's drawing area out of the saved PNG, as (row, method) -> pixels."""
    png = np.asarray(Image.open(io.BytesIO(figure_png(fig))).convert("RGB"))
    boxes = {key: ax.get_window_extent() for key, ax in cells.items()}
    # Every cell is cut to the same size, inside its frame, from its top-left corner.
    side = min(int(min(b.width, b.height)) for b in boxes.values()) - 4
    crops = {
        key: png[
            png.shape[0] - int(b.y1) + 2 : png.shape[0] - int(b.y1) + 2 + side,
            int(b.x0) + 2 : int(b.x0) + 2 + side,
        ]
        for key, b in boxes.items()
    }
    return png, crops


def test_explain_every_method_and_row_gives_a_28x28_map(explanation) -> None:
    assert explanation.predicted == 8 and explanation.image.label == 3
    assert float(explanation.probabilities.sum()) == pytest.approx(1.0)
    assert set(explanation.maps) == {(row, m) for row in ROWS for m in METHODS}
    assert all(m.shape == (28, 28) for m in explanation.maps.values())
    assert explanation.row_class("true") == 3 and explanation.row_class("predicted") == 8


def test_explain_unknown_method_raises_with_choices(model, image_path) -> None:
    with pytest.raises(InputError, match="unknown method\\(s\\) magic; choose from"):
        explain(model, load_image(image_path), ("magic",))


def test_explanation_figure_png_size_and_every_cell_differs(explanation) -> None:
    fig, cells = explanation_figure(explanation)
    png, crops = _cells_from_png(fig, cells)
    width, height = fig.get_size_inches() * fig.dpi
    assert png.shape[:2] == (round(height), round(width))
    assert png.shape[1] > 1500 and png.shape[0] > 400
    for row in ROWS:
        row_crops = [crops[row, m] for m in METHODS]
        assert row_crops[0].shape[0] > 100
        assert all(c.shape == row_crops[0].shape for c in row_crops)
        for a, b in combinations(range(len(METHODS)), 2):
            assert not np.array_equal(row_crops[a], row_crops[b]), (METHODS[a], METHODS[b])
    # The two rows explain different classes, so each method's two cells differ too.
    for method in METHODS:
        assert not np.array_equal(crops["true", method], crops["predicted", method])


def test_explanation_figure_shares_one_colour_scale_per_row(explanation) -> None:
    fig, cells = explanation_figure(explanation)
    for row in ROWS:
        scale = row_scale(explanation, row)
        for method in METHODS:
            if method in ORDER_METHODS:
                continue
            norm = cells[row, method].images[0].norm
            assert (norm.vmin, norm.vmax) == (-scale, scale)
        largest = max(
            float(explanation.maps[row, m].abs().max()) for m in METHODS if m not in ORDER_METHODS
        )
        assert scale == pytest.approx(largest)


def test_explanation_figure_all_zero_map_says_so_instead_of_drawing(explanation) -> None:
    maps = dict(explanation.maps)
    maps["true", "grad_cam"] = torch.zeros(28, 28)
    fig, cells = explanation_figure(dataclasses.replace(explanation, maps=maps))
    empty = cells["true", "grad_cam"]
    assert not empty.images
    assert any("all zero" in t.get_text() for t in empty.texts)
    # The other row still draws its Grad-CAM map.
    assert cells["predicted", "grad_cam"].images
    _, crops = _cells_from_png(fig, cells)
    assert not np.array_equal(crops["true", "grad_cam"], crops["predicted", "grad_cam"])
