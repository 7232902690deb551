"""The ``edit-search`` command line: parse, call the library, print with rich.

``main`` is the click group (for ``CliRunner`` and embedding); ``entry`` is the console script.
Both import the commands, and with them torch, optuna and captum, only when first used, so a
Ctrl-C while those load is caught like one during a run.
"""

from __future__ import annotations

import sys
from typing import Any

#: Exit code on Ctrl-C; the same as ``edit_search.errors.EXIT_INTERRUPTED``, kept here so the
#: entry point imports nothing before its handler is in place.
_EXIT_INTERRUPTED = 130


def entry() -> None:
    """Run the command line: ``Interrupted.`` and exit 130 on Ctrl-C at any point, start-up
    included, with no traceback."""
    try:
        from edit_search.cli._main import main

        main()
    except KeyboardInterrupt:
        try:
            sys.stderr.write("Interrupted.\n")
            sys.stderr.flush()
        except OSError:
            pass
        sys.exit(_EXIT_INTERRUPTED)
    except BrokenPipeError:
        from edit_search.cli._common import exit_on_broken_pipe

        exit_on_broken_pipe()


def __getattr__(name: str) -> Any:
    if name == "main":
        from edit_search.cli._main import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
