"""What every command shares: consoles, error handling, common options."""

from __future__ import annotations

import errno
import functools
import json
import logging
import math
import os
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import optuna
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edit_search.attribution import METHODS
from edit_search.data.model import Transform
from edit_search.errors import EXIT_INTERRUPTED, EditSearchError
from edit_search.runs import is_safe_study_name

#: Exit code when whoever reads stdout has gone (``| head``), as a shell reports SIGPIPE.
EXIT_BROKEN_PIPE = 141

F = TypeVar("F", bound=Callable[..., Any])


class _Console(Console):
    """A rich console that stops like every other write when the reader of stdout has gone
    (rich's own handling exits 1)."""

    def on_broken_pipe(self) -> None:
        exit_on_broken_pipe()


# Results go to stdout; progress, warnings and errors to stderr.
out = _Console(soft_wrap=True)
err = _Console(stderr=True, soft_wrap=True)


def fail(message: str, exit_code: int) -> NoReturn:
    """Print one ``Error: ...`` line on stderr and exit with ``exit_code``."""
    err.print(f"[bold red]Error:[/] {escape(message)}", highlight=False)
    sys.exit(exit_code)


def exit_on_broken_pipe() -> NoReturn:
    """Stop quietly when the reader of stdout has gone, as ``edit-search ... | head`` does."""
    try:
        # Later writes (and the flush at exit) go nowhere instead of raising again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass  # stdout is not a real file (a test runner's buffer): nothing to redirect.
    sys.exit(EXIT_BROKEN_PIPE)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def json_line(record: Any) -> str:
    """Strict JSON on one line: NaN and infinities become null, which every parser accepts."""
    return json.dumps(_finite(record), allow_nan=False)


def echo_json(record: Any) -> None:
    """One strict JSON line on stdout."""
    click.echo(json_line(record))


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
    """Turn library errors into one line and their exit code; with --debug the traceback is
    printed first and the exit code stays the same."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(click.get_current_context().find_root().params.get("debug"))

        def failed(message: str, exit_code: int) -> NoReturn:
            if debug:
                traceback.print_exc(file=sys.stderr)
            fail(message, exit_code)

        try:
            return fn(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # click prints usage errors itself and exits 2.
        except BrokenPipeError:
            exit_on_broken_pipe()
        except EditSearchError as exc:
            failed(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            err.print("Interrupted.")
            sys.exit(EXIT_INTERRUPTED)
        except OSError as exc:
            failed(describe_os_error(exc), 1)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            failed(
                f"unexpected {type(exc).__name__}: {first or 'no message'}; "
                "rerun with --debug for the full traceback and report it.",
                1,
            )

    return wrapper  # type: ignore[return-value]


def margin_value(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """A ``--min-margin``: a finite number of logits, at least 0 (an edit the model still gets
    wrong is never picked, so a negative margin would ask for nothing)."""
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise click.BadParameter(
            f"must be a finite number of logits >= 0; received {value}. Use 0 to accept any "
            "edit the model gets right."
        )
    return value


def study_name_value(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A ``--study`` name: it becomes a folder under runs/, so it must be one plain name."""
    if value is not None and not is_safe_study_name(value):
        raise click.BadParameter(
            f"received {value!r}; a study name becomes a folder name, so it must be 1-200 "
            "characters without '/', '\\', control characters or a leading '.'."
        )
    return value


def _file_on_the_way(path: Path) -> Path | None:
    """The first existing part of ``path``'s folders that is not a folder, if any."""
    for part in reversed(path.parents):
        if part.exists() and not part.is_dir():
            return part
    return None


def check_out_dir(path: Path | None, option: str) -> None:
    """Refuse, before any work, an output folder that is a file or goes through one."""
    if path is None:
        return
    blocker = path if path.exists() and not path.is_dir() else _file_on_the_way(path)
    if blocker is not None:
        raise click.BadParameter(
            f"{str(blocker)!r} is a file, so {str(path)!r} cannot be a folder; pass a folder "
            "path.",
            param_hint=option,
        )


def check_out_file(
    path: Path | None, option: str, suffixes: tuple[str, ...] = (".png",), kind: str = "PNG"
) -> None:
    """Refuse, before any work, an output file with another suffix than its format's, that is
    a folder, or whose folder is a file."""
    if path is None:
        return
    if path.suffix.lower() not in suffixes:
        use = (
            f"use a {suffixes[0]} name"
            if len(suffixes) == 1
            else f"expected one of {', '.join(suffixes)}"
        )
        raise click.BadParameter(
            f"the file is written as {kind}; received {path.name!r}, {use}.", param_hint=option
        )
    if path.is_dir():
        raise click.BadParameter(
            f"{str(path)!r} is a folder; pass a file name.", param_hint=option
        )
    blocker = _file_on_the_way(path)
    if blocker is not None:
        raise click.BadParameter(
            f"{str(blocker)!r} is a file, so it cannot hold {str(path)!r}; pass a path in a "
            "folder.",
            param_hint=option,
        )


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


def _unit_interval(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise click.BadParameter(f"must be between 0 and 1; received {value}.")
    return value


def min_preserve_option(fn: F) -> F:
    """``--min-preserve``: the least share of pixels an edit must keep, in [0, 1]."""
    return click.option(
        "--min-preserve",
        type=float,
        default=0.6,
        show_default=True,
        callback=_unit_interval,
        help="Least share of pixels an edit must keep unchanged.",
    )(fn)


def _methods(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    # Order kept, repeats dropped: the same methods are the same search space and study.
    chosen = tuple(dict.fromkeys(m.strip() for m in value.split(",") if m.strip()))
    unknown = [m for m in chosen if m not in METHODS]
    if unknown or not chosen:
        raise click.BadParameter(
            f"unknown method(s) {', '.join(unknown) or '(none)'}; "
            f"choose from {', '.join(METHODS)}."
        )
    return chosen


def methods_option(purpose: str) -> Callable[[F], F]:
    """``--methods a,b,c``: attribution methods, checked and split into a tuple."""
    return click.option(
        "--methods",
        default=",".join(METHODS),
        callback=_methods,
        help=f"Comma-separated attribution methods to {purpose} [default: all].",
    )


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
    console = _Console(file=sys.stdout, width=None if sys.stdout.isatty() else 200)
    console.print(table)
