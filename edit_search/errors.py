"""The errors of edit-search, each with the exit code the command line uses for it."""

from __future__ import annotations


class EditSearchError(Exception):
    """Base error: something went wrong at run time (exit code 1)."""

    exit_code = 1


class InputError(EditSearchError):
    """An image, label, checkpoint or option the user gave cannot be used (exit code 2)."""

    exit_code = 2


class StudyError(EditSearchError):
    """A study is missing, or exists with other settings than the ones asked for (exit code 2)."""

    exit_code = 2


class NoFeasibleEditError(EditSearchError):
    """The search found no edit that keeps the required share of pixels (exit code 3)."""

    exit_code = 3


EXIT_INTERRUPTED = 130
