"""Study identity: the effective input transform is part of a study's settings and name."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import optuna
import pytest

from edit_search.data.checkpoint import DEFAULT_CHECKPOINT
from edit_search.data.images import load_image
from edit_search.data.model import Transform
from edit_search.errors import StudyError
from edit_search.optimizer import StudySettings, create_or_resume, open_storage
from edit_search.runs import resume_study, settings_for
from edit_search.search_spaces import SearchSpace

SPACE = SearchSpace(methods=("saliency",))


def _checkpoint(name: str, transform: dict[str, float] | None) -> Path:
    """A copy of the shipped checkpoint's bytes, with ``STEM.json`` beside it when given."""
    path = Path(name)
    shutil.copyfile(DEFAULT_CHECKPOINT, path)
    if transform is not None:
        path.with_suffix(".json").write_text(json.dumps({"transform": transform}))
    return path


def _settings(image_path: Path, model_path: Path | None, **kwargs) -> StudySettings:
    return settings_for(
        load_image(image_path),
        model_path=model_path,
        arch=None,
        min_preserve=0.6,
        min_margin=1.0,
        sampler="random",
        space=SPACE,
        **kwargs,
    )


def test_study_settings_same_bytes_other_transform_file_other_study(image_path: Path) -> None:
    first = _settings(image_path, _checkpoint("a.pt", {"mean": 0.1307, "std": 0.3081}))
    second = _settings(image_path, _checkpoint("b.pt", {"mean": 0.5, "std": 0.25}))
    assert first.model_sha256 == second.model_sha256
    assert second.transform == {"mean": 0.5, "std": 0.25} and second.transform_source == "file"
    assert first.study_name() != second.study_name()


@pytest.mark.parametrize("source", ["default", "file", "option", "shipped"])
def test_study_settings_default_transform_any_source_keeps_the_old_name(
    image_path: Path, source: str
) -> None:
    model_path = {
        "default": _checkpoint("m.pt", None),
        "file": _checkpoint("m.pt", {"mean": 0.1307, "std": 0.3081}),
        "option": _checkpoint("m.pt", None),
        "shipped": None,
    }[source]
    given = Transform() if source == "option" else None
    settings = _settings(image_path, model_path, transform=given)
    assert settings.transform == Transform().to_dict()
    # A study recorded before the transform was kept has neither field.
    older = replace(settings, transform=None, transform_source=None)
    assert settings.study_name() == older.study_name()


def test_study_settings_from_dict_reads_studies_without_the_fields(image_path: Path) -> None:
    data = _settings(image_path, None).to_dict()
    del data["transform"], data["transform_source"]
    settings = StudySettings.from_dict(data)
    assert settings.transform is None and settings.transform_source is None


def test_create_or_resume_other_transform_under_same_name_refused(image_path: Path) -> None:
    storage = open_storage()
    model_path = _checkpoint("m.pt", {"mean": 0.2, "std": 0.4})
    create_or_resume(storage, _settings(image_path, model_path), study_name="mine")
    model_path.with_suffix(".json").write_text(
        json.dumps({"transform": {"mean": 0.3, "std": 0.4}})
    )
    with pytest.raises(StudyError, match=r"exists with other settings \(transform differ\)"):
        create_or_resume(storage, _settings(image_path, model_path), study_name="mine")


def test_resume_study_changed_transform_file_refused_before_any_trial(image_path: Path) -> None:
    storage = open_storage()
    model_path = _checkpoint("m.pt", None)
    study = create_or_resume(storage, _settings(image_path, model_path))
    before = len(study.trials)
    model_path.with_suffix(".json").write_text(
        json.dumps({"transform": {"mean": 0.5, "std": 0.25}})
    )
    with pytest.raises(StudyError, match=r"transform differ"):
        resume_study(storage, study.study_name, n_trials=2)
    again = optuna.load_study(study_name=study.study_name, storage=storage)
    assert len(again.trials) == before


def test_resume_study_transform_option_is_reused(image_path: Path) -> None:
    storage = open_storage()
    settings = _settings(image_path, None, transform=Transform(0.2, 0.5))
    study = create_or_resume(storage, settings)
    result = resume_study(storage, study.study_name, n_trials=2)
    assert result.study == study.study_name
