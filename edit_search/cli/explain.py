"""``edit-search explain``: one picture of every attribution map of a digit."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from edit_search.cli._common import (
    check_out_file,
    err,
    handle_errors,
    methods_option,
    model_options,
)
from edit_search.data.checkpoint import load_model
from edit_search.data.images import load_image
from edit_search.data.model import Transform
from edit_search.explain import explain as explain_image
from edit_search.explain import explanation_figure, is_empty, save_figure

DEFAULT_DIR = Path("runs") / "explain"


@click.command()
@click.argument("image_path", metavar="IMAGE", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--out",
    "out_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to write the picture (PNG) [default: runs/explain/NAME.png].",
)
@click.option("--label", type=int, default=None, help="The true class, when the name has none.")
@model_options
@methods_option("draw")
@click.option("--invert", is_flag=True, help="The image is a dark digit on a light background.")
@handle_errors
def explain(
    image_path: Path,
    out_path: Path | None,
    label: int | None,
    model_path: Path | None,
    arch: str | None,
    transform: Transform | None,
    trust_checkpoint: bool,
    methods: tuple[str, ...],
    invert: bool,
) -> None:
    """Draw every attribution map of IMAGE for its true and its predicted class.

    One row per class, one column per method, a colour scale shared by the row, and the
    predicted probabilities. Prints the picture's path.
    """
    chosen = methods
    check_out_file(out_path, "--out")

    model = load_model(
        model_path, arch=arch, transform=transform, trust_checkpoint=trust_checkpoint
    )
    image = load_image(image_path, label=label, num_classes=model.num_classes, invert=invert)
    for note in image.notes:
        err.print(f"[yellow]Note:[/] {escape(image_path.name)}: {escape(note)}")
    with err.status(f"computing {2 * len(chosen)} attribution maps"):
        explanation = explain_image(model, image, chosen)
        fig, _ = explanation_figure(explanation)
        path = save_figure(fig, out_path or DEFAULT_DIR / f"{image_path.stem}.png")

    for (row, method), attribution in explanation.maps.items():
        if is_empty(attribution):
            err.print(f"[yellow]Note:[/] the {method} map for the {row} class is all zero.")
    click.echo(str(path))
