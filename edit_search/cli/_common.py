"""What every command shares: consoles, error handling, common options."""

from __future__ import annotations

import errno
import functools
import logging
import math
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import optuna
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edit_search.data.model import Transform
from edit_search.errors import EXIT_INTERRUPTED, EditSearchError

F = TypeVar("F", bound=Callable[..., Any])

# Results go to stdout; progress, warnings and errors to stderr.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def fail(message: str, exit_code: int) -> None:
    """Print one ``Error: ...`` line on stderr and exit with ``exit_code``."""
    err.print(f"[bold red]Error:[/] {escape(message)}", highlight=False)
    sys.exit(exit_code)


def describe_os_error(exc: OSError) -> str:
    """One line for a failed read or write: which file, what the system said, the fix."""
    where = f" {str(exc.filename)!r}" if exc.filename else ""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno == errno.ENOSPC:
        fix = (
            "free some space or pass --out / --storage on another disk; earlier exports are intact"
        )
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "pass --out / --storage with a writable path"
    else:
        fix = "check the path; rerun with --debug for the full traceback"
    return f"cannot access{where}: {reason}; {fix}."


def handle_errors(fn: F) -> F:
    """Turn library errors into one line and their exit code; tracebacks only with --debug."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(click.get_current_context().find_root().params.get("debug"))
        try:
            return fn(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # click prints usage errors itself and exits 2.
        except EditSearchError as exc:
            if debug:
                raise
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            err.print("Interrupted.")
            sys.exit(EXIT_INTERRUPTED)
        except OSError as exc:
            if debug:
                raise
            fail(describe_os_error(exc), 1)
        except Exception as exc:
            if debug:
                raise
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            fail(
                f"unexpected {type(exc).__name__}: {first or 'no message'}; "
                "rerun with --debug for the full traceback and report it.",
                1,
            )

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


def _transform(ctx: click.Context, param: click.Parameter, value: str | None) -> Transform | None:
    if value is None:
        return None
    try:
        mean, std = (float(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(
            f"expected MEAN,STD such as 0.1307,0.3081; received {value!r}."
        ) from None
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise click.BadParameter(
            f"MEAN and STD must be finite numbers with STD > 0; received {value!r}."
        )
    return Transform(mean=mean, std=std)


def model_options(fn: F) -> F:
    """``--model``, ``--arch``, ``--transform`` and ``--trust-checkpoint``, for commands that
    load a model (shown in that order)."""
    fn = click.option(
        "--trust-checkpoint",
        is_flag=True,
        help="Fully unpickle a --model file that is more than a state_dict. This runs code "
        "from the file: only for files from an author you trust.",
    )(fn)
    fn = click.option(
        "--transform",
        metavar="MEAN,STD",
        default=None,
        callback=_transform,
        help="Input transform of --model, (image - MEAN) / STD on images in [0, 1] "
        "[default: MODEL.json beside the checkpoint, else MNIST's 0.1307,0.3081].",
    )(fn)
    fn = click.option(
        "--arch",
        default=None,
        metavar="MODULE:CLASS",
        help="The network class of --model [default: SmallCNN].",
    )(fn)
    return click.option(
        "--model",
        "model_path",
        type=click.Path(path_type=Path),
        default=None,
        help="A state_dict checkpoint [default: the shipped SmallCNN].",
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
        # The loop asks and tells trials itself and keeps their heartbeat; nothing to act on.
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")


def print_table(table: Table) -> None:
    """A results table on stdout; piped output gets room for full file names instead of '…'."""
    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 200)
    console.print(table)
