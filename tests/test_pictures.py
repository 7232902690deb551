import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from edit_search.data.images import load_image
from edit_search.pictures import PlotPoint, Prediction, panel_png, pareto_png


def _decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as picture:
        assert picture.format == "PNG"
        return np.asarray(picture.convert("RGB"))


def test_prediction_caption_names_predicted_and_true_class() -> None:
    probabilities = [0.0] * 10
    probabilities[8], probabilities[3] = 0.62, 0.21
    assert Prediction(8, probabilities).caption(3) == "pred 8 (0.62)\np(3) = 0.21"


def test_panel_png_real_digit_draws_five_pictures_side_by_side(image_path: Path) -> None:
    pixels = load_image(image_path).pixels  # (28, 28) uint8
    edited = pixels.clone()
    edited[10:12, 10:12] = 255
    attribution = torch.linspace(-1.0, 1.0, 784).reshape(28, 28)
    probabilities = [0.1] * 10
    data = panel_png(
        pixels,
        attribution,
        edited,
        label=3,
        before=Prediction(8, probabilities),
        after=Prediction(3, probabilities),
        attribution_title="saliency [true]",
        title="test",
    )
    picture = _decode(data)
    height, width, _ = picture.shape
    assert width > 3 * height  # a strip of five pictures


def test_pareto_png_all_three_kinds_draws_distinct_colours() -> None:
    points = [
        PlotPoint(0, 1.5, 0.9, True, True),
        PlotPoint(1, 0.5, 0.8, True, False),
        PlotPoint(2, 3.0, 0.4, False, True),
        PlotPoint(3, 2.0, 0.95, True, True),
    ]
    picture = _decode(pareto_png(points, min_preserve=0.6, title="three kinds"))
    colours = {tuple(c) for c in picture.reshape(-1, 3)[::7]}
    # Red front, blue dominated, grey infeasible, on white.
    assert len(colours) > 10
    red = picture[..., 0].astype(int) - picture[..., 2].astype(int) > 80
    blue = picture[..., 2].astype(int) - picture[..., 0].astype(int) > 80
    assert red.any() and blue.any()


def test_pareto_png_no_points_still_draws_constraint_line() -> None:
    picture = _decode(pareto_png([], min_preserve=1.0))
    assert picture.shape[0] > 100
