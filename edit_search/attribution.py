"""Attribution maps from captum, behind one function, cached per (method, target).

Every map is a (28, 28) float tensor: large positive values mark pixels that push the chosen
output up. Targets are ``true`` (the true-class logit), ``predicted`` (the logit of the class
the model predicts for the unedited image) and ``margin`` (true logit minus the best other
logit, the quantity the search maximizes).

Integrated gradients against a black baseline gives every black pixel exactly zero, so it can
only tell where to remove ink; ``integrated_gradients_white`` and ``occlusion_white`` measure
against a white baseline and rank the background pixels where ink could be added.

``greedy`` is not a captum method: it builds a short sequence of one-pixel changes, each the
best single change (to black or to white) of the image edited so far, scored in one batched
pass. Its map holds that order and direction: the first pixel has the largest magnitude, a
positive value means "set to white" and a negative one "set to black", unchosen pixels are 0.
With the ``push`` operation and strength 1 its top-k recipe is exactly the first k changes.
It always raises the margin, whatever the target, so the cache computes it once per image.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import torch
from captum.attr import (  # type: ignore[import-untyped]
    DeepLift,
    GradientShap,
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    Occlusion,
    Saliency,
)
from torch import nn

from edit_search.errors import InputError

METHODS = (
    "integrated_gradients",
    "integrated_gradients_white",
    "saliency",
    "occlusion",
    "occlusion_white",
    "grad_cam",
    "gradient_shap",
    "deeplift",
    "input_x_gradient",
    "greedy",
)
TARGETS = ("true", "predicted", "margin")


class _MarginOutput(nn.Module):
    """Wraps a classifier so its only output is the margin of one class, shape (B, 1)."""

    def __init__(self, model: nn.Module, label: int) -> None:
        super().__init__()
        self.model = model
        self.label = label

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model(images)  # (B, C)
        others = logits.clone()
        others[:, self.label] = float("-inf")
        return (logits[:, self.label] - others.max(dim=1).values)[:, None]  # (B, 1)


def last_conv(model: nn.Module) -> nn.Module:
    """The last 2-D convolution of a model, the layer Grad-CAM looks at."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise InputError("Grad-CAM needs a model with a Conv2d layer; choose another method.")
    return convs[-1]


def attribute(
    model: nn.Module,
    image: torch.Tensor,
    method: str,
    target: str,
    *,
    label: int,
    predicted: int,
) -> torch.Tensor:
    """One attribution map.

    Args:
        model: a classifier taking images in [0, 1], shape (B, 1, 28, 28), in eval mode.
        image: the image, shape (1, 1, 28, 28), values in [0, 1].
        method: one of ``METHODS``.
        target: one of ``TARGETS``.
        label: the true class.
        predicted: the class the model predicts for ``image``.

    Returns:
        The map, shape (28, 28), float32, on the image's device.
    """
    if method not in METHODS:
        raise InputError(
            f"unknown attribution method {method!r}; choose from {', '.join(METHODS)}."
        )
    if target not in TARGETS:
        raise InputError(
            f"unknown attribution target {target!r}; choose from {', '.join(TARGETS)}."
        )

    forward: nn.Module = model
    class_index: int | None = {"true": label, "predicted": predicted}.get(target)
    if target == "margin":
        forward, class_index = _MarginOutput(model, label), 0
    black = torch.zeros_like(image)
    white = torch.ones_like(image)
    inputs = image.detach().clone().requires_grad_(True)

    compute: dict[str, Callable[[], torch.Tensor]] = {
        "integrated_gradients": lambda: IntegratedGradients(forward).attribute(
            inputs, baselines=black, target=class_index, n_steps=32
        ),
        "integrated_gradients_white": lambda: IntegratedGradients(forward).attribute(
            inputs, baselines=white, target=class_index, n_steps=32
        ),
        "saliency": lambda: Saliency(forward).attribute(inputs, target=class_index, abs=False),
        # A one-pixel window scores exactly what changing that one pixel does; captum reports
        # f(x) - f(x with the pixel set to the baseline), so the sign is flipped to read as gain.
        "occlusion": lambda: (
            -Occlusion(forward).attribute(
                inputs,
                sliding_window_shapes=(1, 1, 1),
                baselines=0.0,
                target=class_index,
                perturbations_per_eval=784,
            )
        ),
        "occlusion_white": lambda: (
            -Occlusion(forward).attribute(
                inputs,
                sliding_window_shapes=(1, 1, 1),
                baselines=1.0,
                target=class_index,
                perturbations_per_eval=784,
            )
        ),
        "grad_cam": lambda: LayerAttribution.interpolate(
            LayerGradCam(forward, last_conv(model)).attribute(inputs, target=class_index),
            (28, 28),
            interpolate_mode="bilinear",
        ),
        "gradient_shap": lambda: _seeded(
            lambda: GradientShap(forward).attribute(
                inputs,
                baselines=torch.cat([black, white]),
                target=class_index,
                n_samples=32,
                stdevs=0.05,
            )
        ),
        "deeplift": lambda: _quiet(
            lambda: DeepLift(forward).attribute(inputs, baselines=black, target=class_index)
        ),
        "input_x_gradient": lambda: InputXGradient(forward).attribute(inputs, target=class_index),
        "greedy": lambda: greedy_changes(_MarginOutput(model, label), image, 0),
    }
    with torch.enable_grad():
        attributions = compute[method]()
    return attributions.detach().reshape(28, 28).to(torch.float32)


# The greedy sequence stops at this many changes or once the target output reaches the cap:
# enough for margins well past any usual --min-margin, at a bounded cost per image.
GREEDY_STEPS = 64
GREEDY_CAP = 4.0
# Between full passes over every candidate, only the best candidates of the last full pass
# are scored again: one pixel's change moves the others' gains only a little. Measured on the
# first 25 shipped misclassified digits: a full pass every 2nd step with 64 re-scored needs
# the same pixel count as the exact greedy search for margin >= 1 on all 25 (one fewer on
# one) at 40 % of its forward passes; every 8th step with 48 lost a pixel on five of them.
GREEDY_REFRESH = 2
GREEDY_SHORTLIST = 64


@torch.inference_mode()
def greedy_changes(
    forward: nn.Module,
    image: torch.Tensor,
    class_index: int,
    *,
    steps: int | None = None,
    cap: float | None = None,
) -> torch.Tensor:
    """The greedy one-pixel change sequence that raises ``forward(x)[:, class_index]``.

    Args:
        forward: a module taking (B, 1, 28, 28) images in [0, 1].
        image: the image, shape (1, 1, 28, 28), on the uint8 grid.
        class_index: the output to raise.
        steps: the most changes [default: ``GREEDY_STEPS``].
        cap: stop once the output reaches this value [default: ``GREEDY_CAP``].

    Returns:
        shape (1, 1, 28, 28): ``+(steps - i)`` for the i-th change when it sets a pixel to
        white, ``-(steps - i)`` when it sets it to black, 0 for unchanged pixels.
    """
    steps = GREEDY_STEPS if steps is None else steps
    cap = GREEDY_CAP if cap is None else cap
    current = image.reshape(-1).clone()  # (784,)
    size = current.numel()
    order = torch.zeros_like(current)
    # Candidate c changes pixel c // 2 to the value c % 2 (0 black, 1 white).
    pixel = torch.arange(2 * size, device=current.device) // 2  # (1568,)
    value = (torch.arange(2 * size, device=current.device) % 2).to(current.dtype)
    known = torch.zeros(2 * size, dtype=torch.float64, device=current.device)
    for step in range(steps):
        open_ = (order[pixel] == 0) & (current[pixel] != value)  # (1568,)
        if not open_.any():
            break
        if step % GREEDY_REFRESH == 0:
            chosen = open_.nonzero().reshape(-1)
        else:
            masked = torch.where(open_, known, torch.full_like(known, -math.inf))
            chosen = torch.topk(masked, min(GREEDY_SHORTLIST, int(open_.sum()))).indices
        batch = current.repeat(len(chosen), 1)  # (n, 784)
        batch[torch.arange(len(chosen)), pixel[chosen]] = value[chosen]
        outputs = forward(batch.reshape(-1, 1, 28, 28))[:, class_index].to(torch.float64)
        known[chosen] = outputs
        best = int(chosen[torch.argmax(outputs)])
        current[pixel[best]] = value[best]
        order[pixel[best]] = (steps - step) * (1.0 if value[best] == 1 else -1.0)
        if float(outputs.max()) >= cap:
            break
    return order.reshape(image.shape)


def _quiet(fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Run a method without captum's notice that it hooks activations for the call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting forward, backward hooks")
        return fn()


def _seeded(fn: Callable[[], torch.Tensor], seed: int = 0) -> torch.Tensor:
    """Run a sampling method with a fixed seed, leaving the global generators as they were."""
    # captum draws baselines with numpy and noise with torch: fix both.
    state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            np.random.seed(seed)
            torch.manual_seed(seed)
            return fn()
    finally:
        np.random.set_state(state)


class AttributionCache:
    """Computes each (method, target) map of one image once and hands it to every trial."""

    def __init__(self, model: nn.Module, image: torch.Tensor, label: int, predicted: int) -> None:
        self.model = model
        self.image = image
        self.label = label
        self.predicted = predicted
        self._maps: dict[tuple[str, str], torch.Tensor] = {}

    def get(self, method: str, target: str) -> torch.Tensor:
        """The (28, 28) map of ``method`` for ``target``."""
        key = (method, "margin" if method == "greedy" else target)
        if key not in self._maps:
            self._maps[key] = attribute(
                self.model, self.image, method, target, label=self.label, predicted=self.predicted
            )
        return self._maps[key]
