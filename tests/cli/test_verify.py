from pathlib import Path

from click.testing import CliRunner

from edit_search.cli import main
from edit_search.data.images import load_image, save_png


def _invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False, terminal_width=200)


def test_verify_our_exported_edits_pass_and_bad_edits_fail_with_reason(
    challenge_dir: Path, tmp_path: Path
) -> None:
    originals = tmp_path / "originals"
    originals.mkdir()
    for name in ("2_label3.png", "3_label7.png"):
        (originals / name).write_bytes((challenge_dir / name).read_bytes())
    ran = _invoke("run", "--images", str(originals), "--trials", "8", "-o", "edits")
    assert ran.exit_code == 0, ran.output

    passed = _invoke("verify", "edits", "--originals", str(originals))
    assert passed.exit_code == 0, passed.output
    assert passed.stdout.splitlines()[-1] == "2 passed, 0 failed"
    # The exported picture panels beside the edits are neither graded nor noted.
    assert Path("edits/2_label3_panel.png").exists()
    assert "skipped" not in passed.stderr

    # One edit with too few preserved pixels, one the model still gets wrong.
    edit = load_image("edits/2_label3.png", label=3).pixels.clone()
    black = (edit == 0).flatten().nonzero().flatten()[::2]
    edit.view(-1)[black] = 1
    save_png(edit, "edits/2_label3.png")
    save_png(load_image(originals / "3_label7.png").pixels, "edits/3_label7.png")

    failed = _invoke("verify", "edits", "--originals", str(originals))
    assert failed.exit_code == 1
    lines = failed.stdout.splitlines()
    assert lines[-1] == "0 passed, 2 failed"
    row_2 = next(line for line in lines if "2_label3.png" in line)
    row_3 = next(line for line in lines if "3_label7.png" in line)
    assert "FAIL" in row_2 and "is below the required 60.00%" in row_2
    assert "FAIL" in row_3 and "predicted 1, not the label 7" in row_3


def test_verify_hand_made_edit_in_another_format_is_matched_by_stem(
    challenge_dir: Path, tmp_path: Path
) -> None:
    from PIL import Image

    folder = tmp_path / "by_hand"
    folder.mkdir()
    pixels = load_image(challenge_dir / "3_label7.png").pixels.numpy()
    Image.fromarray(pixels).convert("RGB").save(folder / "3_label7.bmp")
    result = _invoke("verify", str(folder), "--originals", str(challenge_dir))
    assert result.exit_code == 1
    assert "predicted 1, not the label 7" in result.stdout
    assert result.stdout.splitlines()[-1] == "0 passed, 1 failed"


def test_verify_unmatched_file_is_noted_on_stderr(challenge_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "e"
    folder.mkdir()
    (folder / "0_label5.png").write_bytes((challenge_dir / "0_label5.png").read_bytes())
    (folder / "mine.png").write_bytes((challenge_dir / "0_label5.png").read_bytes())
    result = _invoke("verify", str(folder), "--originals", str(challenge_dir))
    assert "skipped 1 file with no original of the same name in" in result.stderr
    assert result.stderr.strip().endswith(": mine.png.")
    assert result.stdout.splitlines()[-1] == "0 passed, 1 failed"


def test_verify_missing_folder_exits_2_with_one_line(challenge_dir: Path) -> None:
    result = CliRunner().invoke(main, ["verify", "nowhere", "--originals", str(challenge_dir)])
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: 'nowhere' is not a directory; pass a folder of images."


def test_verify_min_preserve_out_of_range_is_a_usage_error(challenge_dir: Path) -> None:
    result = CliRunner().invoke(
        main, ["verify", ".", "--originals", str(challenge_dir), "--min-preserve", "60"]
    )
    assert result.exit_code == 2
    assert "must be between 0 and 1; received 60.0" in result.stderr


def test_verify_edits_of_names_with_spaces_and_accents_keep_their_names(
    challenge_dir: Path, tmp_path: Path
) -> None:
    originals = tmp_path / "odd names"
    originals.mkdir()
    for name in ("sp ace_label3.png", "ü_label3.png"):
        (originals / name).write_bytes((challenge_dir / "2_label3.png").read_bytes())
    ran = _invoke("run", "--images", str(originals), "--trials", "4", "-o", "edits")
    assert ran.exit_code == 0, ran.output
    assert sorted(p.name for p in Path("edits").glob("*_label3.png")) == [
        "sp ace_label3.png",
        "ü_label3.png",
    ]
    graded = _invoke("verify", "edits", "--originals", str(originals))
    assert graded.stdout.splitlines()[-1] == "2 passed, 0 failed"
