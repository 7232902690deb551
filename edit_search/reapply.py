"""Re-applying an exported recipe: the attribution map recomputed, the same edit written.

On the image and model a recipe was exported from, the PNG written is byte for byte the
exported one: the map comes from the same captum call, the edit from the same tensor code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from edit_search.data.checkpoint import DEFAULT_CHECKPOINT, file_sha256, load_model
from edit_search.data.images import label_from_name, load_image, png_bytes, write_atomic
from edit_search.errors import InputError
from edit_search.optimizer import EditContext
from edit_search.runs import pixels_sha256
from edit_search.search_spaces import Recipe, apply_recipe


@dataclass(frozen=True)
class AppliedRecipe:
    """An exported recipe applied again.

    Attributes:
        path: where the edit was written.
        label: the true class used.
        original_prediction: the model on the image.
        edited_prediction: the model on the edit.
        margin: the edit's margin.
        preserved: the edit's preserved share.
        changed_pixels: how many pixels the edit changed.
        png_sha256: hash of the written PNG's bytes.
        identical: whether those bytes equal the exported edit's.
        mismatches: what differed from the recipe's image or model (applied with force).
    """

    path: str
    label: int
    original_prediction: int
    edited_prediction: int
    margin: float
    preserved: float
    changed_pixels: int
    png_sha256: str
    identical: bool
    mismatches: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_recipe_file(path: Path) -> dict[str, Any]:
    """An exported recipe JSON.

    Raises:
        InputError: missing, not JSON, or not written by ``export``.
    """
    try:
        record = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"recipe {str(path)!r} does not exist; check the path.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            f"cannot read recipe {str(path)!r} ({exc}); pass a JSON file written by export."
        ) from None
    missing = [k for k in ("recipe", "label", "image_sha256", "model_sha256") if k not in record]
    if not isinstance(record, dict) or missing:
        raise InputError(
            f"{str(path)!r} is not an edit-search recipe (missing {', '.join(missing)}); "
            "pass a JSON file written by 'edit-search export' or 'run'."
        )
    return record


def apply_recipe_file(
    record: dict[str, Any],
    image_path: Path,
    out_path: Path,
    *,
    model_path: Path | None = None,
    arch: str | None = None,
    label: int | None = None,
    force: bool = False,
    device: str | torch.device = "cpu",
) -> AppliedRecipe:
    """Recompute the attribution map, apply an exported recipe to an image, write the PNG.

    Args:
        record: from ``read_recipe_file``.
        image_path: the image to edit.
        out_path: where the edited PNG goes.
        model_path: the checkpoint [default: the shipped model].
        arch: the network class [default: the recipe's].
        label: the true class [default: the file name's, else the recipe's].
        force: apply even when the image or model differs from the recipe's.
        device: where the model runs.

    Raises:
        InputError: the image or model differs from the recipe's and ``force`` is off, or an
            input cannot be read.
    """
    recipe = Recipe.from_dict(record["recipe"])
    recorded_arch = record.get("arch", "SmallCNN")
    arch = arch or (None if recorded_arch == "SmallCNN" else recorded_arch)
    checkpoint = Path(model_path) if model_path is not None else DEFAULT_CHECKPOINT
    model = load_model(model_path, device=device, arch=arch)
    if label is None:
        label = label_from_name(Path(image_path))
    image = load_image(
        image_path,
        label=label if label is not None else int(record["label"]),
        num_classes=model.num_classes,
    )

    mismatches = []
    if pixels_sha256(image.pixels) != record["image_sha256"]:
        mismatches.append(f"image {image.path.name!r} is not the recipe's {record.get('image')!r}")
    if file_sha256(checkpoint) != record["model_sha256"]:
        mismatches.append(f"model {checkpoint.name!r} is not the recipe's checkpoint")
    if mismatches and not force:
        raise InputError(
            f"{'; '.join(mismatches)} (their hashes differ); pass --force to apply the recipe "
            "anyway."
        )

    ctx = EditContext(model, image.pixels, image.label)
    attribution = ctx.attributions.get(recipe.method, recipe.target)  # (28, 28)
    edit = apply_recipe(ctx.pixels, attribution, recipe)  # (28, 28) uint8
    scores = ctx.score(edit[None])
    data = png_bytes(edit.cpu())
    write_atomic(Path(out_path), data)
    digest = hashlib.sha256(data).hexdigest()
    return AppliedRecipe(
        path=str(out_path),
        label=image.label,
        original_prediction=ctx.predicted,
        edited_prediction=int(scores.predicted[0]),
        margin=float(scores.margin[0]),
        preserved=float(scores.preserved[0]),
        changed_pixels=int(torch.count_nonzero(edit != ctx.pixels)),
        png_sha256=digest,
        identical=digest == record.get("edited_png_sha256"),
        mismatches=tuple(mismatches),
    )
