"""Objectives and constraint: pure functions of tensors."""

from edit_search.objectives._scores import constraint, margin, predictions, preserved

__all__ = ["constraint", "margin", "predictions", "preserved"]
