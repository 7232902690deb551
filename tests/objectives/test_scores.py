import pytest
import torch

from edit_search.objectives import constraint, margin, predictions, preserved


def test_margin_random_logits_matches_loop_reference() -> None:
    logits = torch.randn(50, 10, generator=torch.Generator().manual_seed(0))
    for label in range(10):
        expected = torch.tensor(
            [
                float(row[label]) - max(float(v) for j, v in enumerate(row) if j != label)
                for row in logits
            ]
        )
        assert torch.allclose(margin(logits, label), expected)


def test_margin_right_prediction_is_positive_and_wrong_is_negative() -> None:
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 1.0, 0.5]])
    assert margin(logits, 1).tolist() == [1.0, -2.0]


def test_preserved_counts_unchanged_uint8_pixels() -> None:
    original = torch.zeros(28, 28, dtype=torch.uint8)
    edits = original.repeat(3, 1, 1)
    edits[1, 0, 0] = 1
    edits[2, :2, :] = 255
    shares = preserved(edits, original)
    assert shares.tolist() == pytest.approx([1.0, 783 / 784, (784 - 56) / 784])


def test_constraint_feasible_exactly_at_min_preserve() -> None:
    values = constraint(torch.tensor([0.6, 0.59, 0.9]), 0.6)
    assert [bool(v <= 0) for v in values] == [True, False, True]


def test_predictions_argmax_and_probabilities_sum_to_one() -> None:
    logits = torch.tensor([[0.0, 5.0], [2.0, -1.0]])
    classes, probabilities = predictions(logits)
    assert classes.tolist() == [1, 0]
    assert torch.allclose(probabilities.sum(1), torch.ones(2, dtype=torch.float64))
