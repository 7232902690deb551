import json
from pathlib import Path

import optuna
import pytest
import torch

from edit_search.data.images import load_image, save_png
from edit_search.errors import InputError
from edit_search.runs import run_study, settings_for
from edit_search.search_spaces import SearchSpace
from edit_search.verify import check_edit, match_originals, verify_folder


@pytest.fixture(scope="module")
def fixed_edit(model, tmp_path_factory) -> Path:
    """An edit of 2_label3.png made by a short real study, in a folder of its own."""
    from tests.conftest import CHALLENGE

    image = load_image(CHALLENGE / "2_label3.png")
    settings = settings_for(
        image,
        model_path=None,
        arch=None,
        min_preserve=0.6,
        min_margin=1.0,
        sampler="tpe",
        space=SearchSpace(),
    )
    out = tmp_path_factory.mktemp("edits")
    result = run_study(
        optuna.storages.InMemoryStorage(), settings, model, image, n_trials=8, out_dir=out
    )
    assert result.edited_prediction == 3
    return Path(result.export)


def _write(pixels: torch.Tensor, folder: Path, name: str) -> Path:
    path = folder / name
    save_png(pixels, path)
    return path


def test_check_edit_exported_edit_passes(model, fixed_edit, image_path) -> None:
    verdict = check_edit(model, fixed_edit, image_path, 0.6)
    record = json.loads(fixed_edit.with_suffix(".json").read_text())
    assert verdict.passed and verdict.reason == ""
    assert verdict.label == 3 and verdict.predicted == 3
    assert verdict.preserved == record["preserved"]
    assert verdict.margin == pytest.approx(record["margin"], abs=1e-5)


def test_check_edit_unchanged_original_fails_on_prediction(model, image_path, tmp_path) -> None:
    copy = _write(load_image(image_path).pixels, tmp_path, image_path.name)
    verdict = check_edit(model, copy, image_path, 0.6)
    assert not verdict.passed
    assert verdict.preserved == 1.0
    assert verdict.reason == "predicted 8, not the label 3"


def test_check_edit_too_few_preserved_fails_on_preserved_only(
    model, fixed_edit, image_path, tmp_path
) -> None:
    # Lift every second black pixel of the right edit from 0 to 1: invisible, still right,
    # but far fewer than 60 % of the pixels are left as they were.
    pixels = load_image(fixed_edit, label=3).pixels.clone()
    black = (pixels == 0).flatten().nonzero().flatten()[::2]
    pixels.view(-1)[black] = 1
    edit = _write(pixels, tmp_path, image_path.name)
    verdict = check_edit(model, edit, image_path, 0.6)
    assert not verdict.passed
    assert verdict.predicted == 3
    assert verdict.preserved < 0.6
    assert verdict.reason.startswith("preserved ")
    assert verdict.reason.endswith("is below the required 60.00%")
    assert "predicted" not in verdict.reason


def test_check_edit_unreadable_edit_fails_with_reason(model, image_path, tmp_path) -> None:
    broken = tmp_path / image_path.name
    broken.write_bytes(b"not a png")
    verdict = check_edit(model, broken, image_path, 0.6)
    assert not verdict.passed and verdict.predicted is None
    assert verdict.reason.startswith("cannot read:")


def test_check_edit_wrong_size_edit_fails_with_reason(model, image_path, tmp_path) -> None:
    big = _write(torch.zeros(32, 32, dtype=torch.uint8), tmp_path, image_path.name)
    verdict = check_edit(model, big, image_path, 0.6)
    assert not verdict.passed and "32x32" in verdict.reason


def test_match_originals_by_name_then_stem() -> None:
    originals = [Path("o/2_label3.png"), Path("o/4_label2.png")]
    edited = [Path("e/2_label3.png"), Path("e/4_label2.bmp"), Path("e/other.png")]
    assert match_originals(edited, originals) == {
        edited[0]: originals[0],
        edited[1]: originals[1],
        edited[2]: None,
    }


def test_verify_folder_counts_and_lists_unmatched(
    model, fixed_edit, challenge_dir, tmp_path
) -> None:
    folder = tmp_path / "edits"
    _write(load_image(fixed_edit, label=3).pixels, folder, "2_label3.png")
    _write(load_image(challenge_dir / "3_label7.png").pixels, folder, "3_label7.png")
    _write(load_image(challenge_dir / "3_label7.png").pixels, folder, "stray.png")
    report = verify_folder(model, folder, challenge_dir, 0.6)
    assert [v.image for v in report.verdicts] == ["2_label3.png", "3_label7.png"]
    assert report.summary() == "1 passed, 1 failed"
    assert report.unmatched == ("stray.png",)


def test_verify_folder_no_matching_names_raises(model, challenge_dir, tmp_path) -> None:
    _write(load_image(challenge_dir / "3_label7.png").pixels, tmp_path / "e", "a.png")
    with pytest.raises(InputError, match="none of the 1 images .* has an original"):
        verify_folder(model, tmp_path / "e", challenge_dir)
