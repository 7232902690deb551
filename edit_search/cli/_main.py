"""The ``edit-search`` command group and its commands."""

from __future__ import annotations

import click

from edit_search import __version__
from edit_search.cli._common import configure_logging
from edit_search.cli.analyze import analyze
from edit_search.cli.explain import explain
from edit_search.cli.run import run
from edit_search.cli.studies import apply_command, export, pareto, resume, studies
from edit_search.cli.verify import verify
from edit_search.cli.worker import worker


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edit-search")
@click.option("--debug", is_flag=True, help="Show debug logs and full tracebacks.")
def main(debug: bool) -> None:
    """Find the smallest attribution-guided pixel edit that makes a classifier right."""
    configure_logging(debug)


main.add_command(run)
main.add_command(verify)
main.add_command(explain)
main.add_command(analyze)
main.add_command(worker)
main.add_command(studies)
main.add_command(pareto)
main.add_command(export)
main.add_command(resume)
main.add_command(apply_command)
