"""Creating and resuming studies: one study per image and setting, named from both."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import optuna
from optuna.storages import BaseStorage

from edit_search.data.model import Transform
from edit_search.errors import StudyError
from edit_search.search_spaces import NUM_PIXELS, SearchSpace

SETTINGS_KEY = "edit_search.settings"
OBJECTIVE_NAMES = ["margin", "preserved"]
SAMPLERS = ("tpe", "nsga2", "random")

# The hand-made recipes a person starts with: integrated gradients on the true class, top 30 %
# darkened by 0.9, top 30 % lightened by 0.5, top 20 % darkened by 0.9. They are scored as they
# are, without the sweep, so the table shows what the hand recipe alone achieves.
HAND_RECIPES = (
    ("darken", 0.30, 0.9),
    ("lighten", 0.30, 0.5),
    ("darken", 0.20, 0.9),
)
# Recipe families that rank pixels by exactly what changing one of them does to the margin (the
# greedy sequence of one-pixel changes first); swept like any sampled trial, they give every
# study a strong first front.
WARM_FAMILIES = (
    ("greedy", "margin", "positive", "push"),
    ("occlusion_white", "margin", "positive", "lighten"),
    ("occlusion", "margin", "positive", "darken"),
    ("integrated_gradients_white", "margin", "positive", "lighten"),
    ("saliency", "margin", "positive", "lighten"),
)


@dataclass(frozen=True)
class StudySettings:
    """Everything that defines a study; a study name is derived from it.

    Attributes:
        image: the image's file name.
        image_path: where the image was read from, for resuming.
        image_sha256: hash of the image's uint8 pixels.
        label: the true class.
        model_path: the checkpoint, for resuming; None for the shipped model.
        model_sha256: hash of the checkpoint file.
        arch: the network class, ``package.module:ClassName`` or ``SmallCNN``.
        min_preserve: the least share of pixels an edit must keep.
        min_margin: the margin an edit should reach to count as safely fixed.
        sampler: ``tpe``, ``nsga2`` or ``random``.
        space: the search space.
        transform: the input transform the model is scored with, as ``{"mean": ..., "std":
            ...}``, whichever its source; None only in studies recorded before it was kept.
        transform_source: where the transform came from: ``option`` (``--transform``),
            ``file`` (``STEM.json`` beside the checkpoint) or ``default``; not part of the
            identity, it tells ``resume`` whether to read the file again.
    """

    image: str
    image_path: str
    image_sha256: str
    label: int
    model_path: str | None
    model_sha256: str
    arch: str
    min_preserve: float
    min_margin: float
    sampler: str
    space: SearchSpace
    transform: dict[str, float] | None = None
    transform_source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["space"] = self.space.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudySettings:
        return cls(**{**data, "space": SearchSpace.from_dict(data["space"])})

    def identity(self) -> dict[str, Any]:
        """The settings that make two studies the same study (paths may differ)."""
        data = self.to_dict()
        del data["image_path"], data["model_path"], data["transform_source"]
        # MNIST's transform is left out, so studies recorded before the transform was kept
        # (which used it unless a file or option said otherwise) keep their names.
        if data["transform"] is None or data["transform"] == Transform().to_dict():
            del data["transform"]
        return data

    def study_name(self) -> str:
        """``STEM-HASH``: the same image, model and settings always give the same name."""
        blob = json.dumps(self.identity(), sort_keys=True).encode()
        stem = self.image.rsplit(".", 1)[0]
        return f"{stem}-{hashlib.sha256(blob).hexdigest()[:10]}"


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler for a study; constraints reach it through ``trial.set_constraint``."""
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=8, multivariate=True, group=True, constant_liar=True
        )
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=16)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise StudyError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}.")


def _differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))


def load_settings(storage: BaseStorage, study_name: str) -> StudySettings:
    """The settings recorded with an existing study.

    Raises:
        StudyError: no such study, or it was not made by edit-search.
    """
    study = load_study(storage, study_name)
    return StudySettings.from_dict(study.user_attrs[SETTINGS_KEY])


def load_study(storage: BaseStorage, study_name: str, seed: int = 0) -> optuna.Study:
    """Load an edit-search study with its own sampler.

    Raises:
        StudyError: no such study, or it was not made by edit-search.
    """
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise StudyError(
            f"no study named {study_name!r} in this storage; 'edit-search studies' lists them."
        ) from None
    if SETTINGS_KEY not in study.user_attrs:
        raise StudyError(
            f"study {study_name!r} was not made by edit-search (it has no recorded settings)."
        )
    settings = study.user_attrs[SETTINGS_KEY]
    sampler = make_sampler(settings["sampler"], seed)
    return optuna.load_study(study_name=study_name, storage=storage, sampler=sampler)


def create_or_resume(
    storage: BaseStorage, settings: StudySettings, study_name: str | None = None
) -> optuna.Study:
    """The study for ``settings``: created with its warm start, or resumed if it exists.

    Args:
        storage: where studies live.
        settings: what the study searches.
        study_name: a name to use instead of the derived one.

    Raises:
        StudyError: a study of that name exists with other settings.
    """
    name = study_name or settings.study_name()
    seed = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
    names = {s.study_name for s in optuna.get_all_study_summaries(storage, False)}
    if name not in names:
        try:
            study = optuna.create_study(
                study_name=name,
                storage=storage,
                directions=["maximize", "maximize"],
                sampler=make_sampler(settings.sampler, seed),
            )
        except optuna.exceptions.DuplicatedStudyError:
            pass  # Another process created it a moment ago: resume theirs below.
        else:
            study.set_metric_names(OBJECTIVE_NAMES)
            study.set_user_attr(SETTINGS_KEY, settings.to_dict())
            _enqueue_warm_start(study, settings)
            return study

    _wait_for_settings(storage, name)
    study = load_study(storage, name, seed)
    stored = StudySettings.from_dict(study.user_attrs[SETTINGS_KEY]).identity()
    differ = _differences(stored, settings.identity())
    if differ:
        raise StudyError(
            f"study {name!r} exists with other settings ({', '.join(differ)} differ); "
            "drop --study to start a new study named after the new settings, "
            "or pass a new --study name."
        )
    # A different seed per session keeps a resumed study from repeating its proposals.
    study.sampler = make_sampler(settings.sampler, seed + len(study.trials))
    return study


def _wait_for_settings(storage: BaseStorage, name: str, seconds: float = 10.0) -> None:
    """Give a study another process has just created the moment it needs to record settings.

    A study with trials but no settings was made by something else: no wait for it.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        study = optuna.load_study(study_name=name, storage=storage)
        if SETTINGS_KEY in study.user_attrs or study.get_trials(deepcopy=False):
            return
        time.sleep(0.05)


def _enqueue_warm_start(study: optuna.Study, settings: StudySettings) -> None:
    space = settings.space
    base = {"target": "true", "polarity": "positive", "regions": 0}
    if "integrated_gradients" in space.methods:
        for operation, fraction, strength in HAND_RECIPES:
            if operation not in space.operations:
                continue
            study.enqueue_trial(
                {**base, "method": "integrated_gradients", "operation": operation},
                user_attrs={
                    "fixed_pixels": round(fraction * NUM_PIXELS),
                    "fixed_strength": strength,
                },
            )
    for method, target, polarity, operation in WARM_FAMILIES:
        wanted = (method, target, polarity, operation)
        allowed = (space.methods, space.targets, space.polarities, space.operations)
        if all(v in a for v, a in zip(wanted, allowed, strict=True)):
            study.enqueue_trial(
                {
                    "method": method,
                    "target": target,
                    "polarity": polarity,
                    "operation": operation,
                    "regions": 0,
                }
            )
