from pathlib import Path

from click.testing import CliRunner
from PIL import Image

from edit_search.cli import main


def _invoke(*args: str):
    return CliRunner().invoke(main, ["explain", *args], catch_exceptions=False)


def test_explain_writes_the_picture_and_prints_its_path(image_path: Path) -> None:
    result = _invoke(str(image_path), "-o", "pics/three.png", "--methods", "saliency,occlusion")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "pics/three.png"
    with Image.open("pics/three.png") as picture:
        # Three columns (the digit and two methods) plus the colour bars, two rows.
        assert picture.format == "PNG"
        assert picture.size == (630, 480)


def test_explain_default_path_is_under_runs(image_path: Path) -> None:
    result = _invoke(str(image_path), "--methods", "grad_cam")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "runs/explain/2_label3.png"
    assert Path("runs/explain/2_label3.png").is_file()


def test_explain_unknown_method_is_a_usage_error(image_path: Path) -> None:
    result = CliRunner().invoke(main, ["explain", str(image_path), "--methods", "magic"])
    assert result.exit_code == 2
    assert "unknown method(s) magic; choose from integrated_gradients" in result.stderr


def test_explain_non_png_output_is_a_usage_error(image_path: Path) -> None:
    result = CliRunner().invoke(main, ["explain", str(image_path), "-o", "x.jpg"])
    assert result.exit_code == 2
    assert "received 'x.jpg', use a .png name" in result.stderr


def test_explain_image_without_label_exits_2_with_one_line(
    image_path: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "digit.png"
    copy.write_bytes(image_path.read_bytes())
    result = CliRunner().invoke(main, ["explain", str(copy)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "no label for 'digit.png'" in result.stderr
