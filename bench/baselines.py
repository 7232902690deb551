"""The methods edit-search is measured against, each returning one uint8 edit per image.

Every method gets the same image, model and pixel budget and returns its edit (or None); the
benchmark scores all of them the same way, after a PNG round trip.
"""

from __future__ import annotations

import io
import time
import warnings
from dataclasses import dataclass

import numpy as np
import optuna
import torch
from PIL import Image

from edit_search.attribution import attribute
from edit_search.data.model import Classifier
from edit_search.objectives import margin
from edit_search.search_spaces import Recipe, apply_recipe

NUM_PIXELS = 28 * 28


class CountingModel(Classifier):
    """The classifier, counting every image that goes through its forward pass."""

    def __init__(self, inner: Classifier) -> None:
        super().__init__(inner.net, inner.transform)
        self.images = 0
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.images += int(images.shape[0])
        return super().forward(images)


@dataclass
class Edit:
    """What a method produced for one image and one required margin."""

    pixels: torch.Tensor | None  # uint8 (28, 28), or None when the method gave up
    images_scored: int
    seconds: float


def png_round_trip(pixels: torch.Tensor) -> torch.Tensor:
    """The uint8 pixels (28, 28) after writing them as a PNG and reading them back."""
    buffer = io.BytesIO()
    Image.fromarray(pixels.cpu().numpy().astype(np.uint8), mode="L").save(buffer, "PNG")
    buffer.seek(0)
    return torch.from_numpy(np.array(Image.open(buffer).convert("L"))).to(torch.uint8)


def budget(min_preserve: float) -> int:
    """The most pixels an edit may change and still keep ``min_preserve`` of them."""
    return NUM_PIXELS - int(np.ceil(min_preserve * NUM_PIXELS - 1e-9))


@torch.inference_mode()
def _margins(model: torch.nn.Module, edits: torch.Tensor, label: int) -> torch.Tensor:
    logits = model(edits.reshape(-1, 1, 28, 28).to(torch.float32) / 255.0)  # (B, C)
    return margin(logits.to(torch.float64), label)


def hand_recipe(model: CountingModel, pixels: torch.Tensor, label: int) -> Edit:
    """Integrated gradients on the true class, top 30 %, darken 0.9 or lighten 0.5: the better."""
    start, before = time.perf_counter(), model.images
    image = pixels.to(torch.float32)[None, None] / 255.0  # (1, 1, 28, 28)
    predicted = int(model(image).argmax())
    attribution = attribute(
        model, image, "integrated_gradients", "true", label=label, predicted=predicted
    )
    edits = torch.stack(
        [
            apply_recipe(
                pixels,
                attribution,
                Recipe("integrated_gradients", "true", "positive", 235, op, strength),
            )
            for op, strength in (("darken", 0.9), ("lighten", 0.5))
        ]
    )
    best = int(torch.argmax(_margins(model, edits, label)))
    return Edit(edits[best], model.images - before, time.perf_counter() - start)


def greedy_l0(
    model: CountingModel, pixels: torch.Tensor, label: int, required: tuple[float, ...], limit: int
) -> dict[float, Edit]:
    """The greedy L0 reference: every one-pixel change (to 0 and to 255) in one pass per step.

    Returns one edit per required margin: the first step whose margin reaches it (> 0 for 0).
    """
    start, before = time.perf_counter(), model.images
    current = pixels.reshape(-1).clone()  # (784,)
    candidate_pixel = torch.arange(2 * NUM_PIXELS) // 2  # (1568,)
    candidate_value = (torch.arange(2 * NUM_PIXELS) % 2).to(torch.uint8) * 255
    found: dict[float, Edit] = {}
    now = float(_margins(model, current, label)[0])
    for _ in range(limit + 1):
        for need in required:
            if need not in found and (now > need if need == 0 else now >= need):
                found[need] = Edit(
                    current.reshape(28, 28).clone(),
                    model.images - before,
                    time.perf_counter() - start,
                )
        if len(found) == len(required):
            break
        open_ = current[candidate_pixel] != candidate_value  # (1568,)
        batch = current.repeat(int(open_.sum()), 1)  # (n, 784)
        rows = torch.arange(batch.shape[0])
        batch[rows, candidate_pixel[open_]] = candidate_value[open_]
        margins = _margins(model, batch, label)
        best = int(torch.argmax(margins))
        current = batch[best]
        now = float(margins[best])
    for need in required:
        found.setdefault(need, Edit(None, model.images - before, time.perf_counter() - start))
    return found


def min_param_perturbation(
    model: CountingModel, pixels: torch.Tensor, label: int, need: float, limit: int
) -> Edit:
    """captum's MinParamPerturbation over the count of attribution-ranked pixels.

    Pixels are ranked by their exact one-pixel margin gain (occlusion with a one-pixel window
    against black and against white) and set to the better of black or white; the binary
    search looks for the fewest top pixels after which the correct-class check passes.
    """
    from captum.robust import MinParamPerturbation

    start, before = time.perf_counter(), model.images
    image = pixels.to(torch.float32)[None, None] / 255.0  # (1, 1, 28, 28)
    predicted = int(model(image).argmax())
    to_white = attribute(
        model, image, "occlusion_white", "margin", label=label, predicted=predicted
    )
    to_black = attribute(model, image, "occlusion", "margin", label=label, predicted=predicted)
    gain = torch.maximum(to_white, to_black).reshape(-1)  # (784,)
    value = (to_white >= to_black).reshape(-1).to(torch.float32)  # 1 white, 0 black
    order = torch.argsort(gain, descending=True, stable=True)

    def perturb(inputs: torch.Tensor, count: int) -> torch.Tensor:
        flat = inputs.reshape(inputs.shape[0], -1).clone()  # (B, 784)
        top = order[:count]
        flat[:, top] = value[top]
        return flat.reshape(inputs.shape)

    def still_wrong(outputs: torch.Tensor, target: torch.Tensor) -> bool:
        # captum searches for the smallest parameter that makes this False.
        found = margin(outputs.to(torch.float64), label)
        return bool(((found <= need) if need == 0 else (found < need)).all())

    search = MinParamPerturbation(
        forward_func=model,
        attack=perturb,
        arg_name="count",
        arg_min=1,
        arg_max=limit + 1,
        arg_step=1,
        mode="binary",
        correct_fn=still_wrong,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        edited, count = search.evaluate(image, target=label)
    result = None if count is None else (edited.reshape(28, 28) * 255).round().to(torch.uint8)
    return Edit(result, model.images - before, time.perf_counter() - start)


def foolbox_l0fmn(model: CountingModel, pixels: torch.Tensor, label: int, limit: int) -> Edit:
    """foolbox's L0FMNAttack (fast minimum-norm, L0), targeted at the true label."""
    import foolbox

    start, before = time.perf_counter(), model.images
    image = pixels.to(torch.float32)[None, None] / 255.0  # (1, 1, 28, 28)
    wrapped = foolbox.PyTorchModel(model, bounds=(0, 1))
    criterion = foolbox.criteria.TargetedMisclassification(torch.tensor([label]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, adversarial, success = foolbox.attacks.L0FMNAttack(steps=100)(
            wrapped, image, criterion, epsilons=None
        )
    edit = (adversarial.reshape(28, 28) * 255).round().to(torch.uint8)
    changed = int((edit != pixels).sum())
    ok = bool(success[0]) and changed <= limit
    return Edit(edit if ok else None, model.images - before, time.perf_counter() - start)


def sqlite_trial_cost(folder: str, trials: int = 40) -> float:
    """Seconds of Optuna bookkeeping per trial in SQLite when every edit is its own trial."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=f"sqlite:///{folder}/per_edit.db",
        directions=["maximize", "maximize"],
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    start = time.perf_counter()
    for _ in range(trials):
        trial = study.ask()
        for name in ("method", "target", "polarity", "operation"):
            trial.suggest_categorical(name, ["a", "b", "c"])
        trial.suggest_int("pixels", 1, 313)
        trial.suggest_float("strength", 0.0, 1.0)
        trial.set_user_attr("recipe", {"pixels": 1})
        study.tell(trial, [0.0, 1.0])
    return (time.perf_counter() - start) / trials
