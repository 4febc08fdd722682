"""Errors that mean "bad input": the CLI turns them into one line and exit code 2; and the one line that says a
stage failed while training (exit code 1)."""

import sys
import traceback


class InputError(Exception):
    """Bad user input (recipe, argument or data); the message names the key or file, the value and the fix."""


class RecipeError(InputError):
    """A recipe key has a wrong name, type or value."""


class DataError(InputError):
    """A data set cannot be found or read."""


DEBUG_HINT = "rerun with --debug for the traceback"


def failure_line(what: str, exc: BaseException, note: str = "") -> str:
    """The one line that says `what` failed: the exception's type and the first line of its message.

    Args:
        what: what failed, e.g. "training", "lr-find", "search".
        exc: the exception.
        note: appended inside the parentheses after the --debug hint, e.g. "; partial results in DIR".

    Returns:
        `kpretrain: <what> failed: <Type>: <first line> (rerun with --debug for the traceback<note>)`.

    Example:

    >>> failure_line("training", ValueError("loss is nan\\nat step 3"))
    'kpretrain: training failed: ValueError: loss is nan (rerun with --debug for the traceback)'
    """
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"kpretrain: {what} failed: {type(exc).__name__}: {first} ({DEBUG_HINT}{note})"


def print_failure(what: str, exc: BaseException, debug: bool = False, note: str = "") -> None:
    """Print the traceback being handled when `debug`, then `failure_line(what, exc, note)`, on stderr: what the
    command line prints for a failure while training (exit code 1), `kpretrain tune`'s search and final run
    included."""
    if debug:
        traceback.print_exc()
    print(failure_line(what, exc, note), file=sys.stderr)
