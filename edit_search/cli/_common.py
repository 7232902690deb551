"""What every command shares: consoles, error handling, common options."""

from __future__ import annotations

import functools
import logging
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import click
import optuna
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edit_search.errors import EXIT_INTERRUPTED, EditSearchError

F = TypeVar("F", bound=Callable[..., Any])

# Results go to stdout; progress, warnings and errors to stderr.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def fail(message: str, exit_code: int) -> None:
    """Print one ``Error: ...`` line on stderr and exit with ``exit_code``."""
    err.print(f"[bold red]Error:[/] {escape(message)}", highlight=False)
    sys.exit(exit_code)


def handle_errors(fn: F) -> F:
    """Turn library errors into one line and their exit code; tracebacks only with --debug."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(click.get_current_context().find_root().params.get("debug"))
        try:
            return fn(*args, **kwargs)
        except EditSearchError as exc:
            if debug:
                raise
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            err.print("Interrupted.")
            sys.exit(EXIT_INTERRUPTED)

    return wrapper  # type: ignore[return-value]


def storage_option(fn: F) -> F:
    """The ``--storage URL`` option."""
    return click.option(
        "--storage",
        metavar="URL",
        default=None,
        help="Study storage: a journal file path, sqlite:///FILE or postgresql://... "
        "[default: runs/studies.journal]",
    )(fn)


def configure_logging(debug: bool) -> None:
    """Library logs on stderr: warnings by default, everything with --debug."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    optuna.logging.set_verbosity(optuna.logging.DEBUG if debug else optuna.logging.WARNING)
    if not debug:
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def print_table(table: Table) -> None:
    """A results table on stdout; piped output gets room for full file names instead of '…'."""
    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 200)
    console.print(table)
