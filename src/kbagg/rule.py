"""Running kbagg code as a Snakemake `script:` rule.

Rules hand their inputs, outputs and params to Python as objects (the `snakemake` object of
the `script:` directive), so no value from the sample sheet or config ever passes through a
shell. `run_rule` gives every rule script the same behaviour:

- everything the job prints, and what its subprocesses (kb, kallisto, bustools) print,
  goes to the rule's log file;
- an expected failure (`KbaggError`) ends the job with one `error: ...` line, in the log
  and on the terminal, and exit status 1;
- a signal (SIGTERM, SIGINT, SIGHUP) deletes the job's outputs and temp files and ends it
  with status 128 + signal;
- any other exception is a bug: its traceback goes to the log and to the terminal;
- `to_terminal(line)` shows a line (a QC warning) on the terminal as well as in the log;
  `warning_line` gives every warning the same form, `WARNING: sample 'S': ...`;
  `warnings_to_terminal(category)` shows the Python warnings of that category so.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from kbagg.atomic import remove_outputs_on_signal
from kbagg.cli import exit_now, one_line
from kbagg.errors import KbaggError

_terminal: TextIO | None = None


WARNING_PREFIX = "WARNING: "


def warning_line(message: str, sample: str | None = None) -> str:
    """A warning as one log and terminal line: ``WARNING: sample 'S': message`` (users and
    tests grep ``^WARNING``).

    Parameters
    ----------
    message
        The warning; newlines become spaces.
    sample
        The sample it is about, unless `message` already starts with ``sample '...'``.
    """
    message = " ".join(str(message).splitlines())
    if sample is not None:
        message = f"sample '{sample}': {message}"
    return WARNING_PREFIX + message


def to_terminal(line: str) -> None:
    """Print `line` to the log and, while a rule runs, to Snakemake's terminal too."""
    print(line, flush=True)
    if _terminal is not None:
        print(line, file=_terminal, flush=True)


@contextlib.contextmanager
def warnings_to_terminal(category: type[Warning]) -> Iterator[None]:
    """Show every warning of `category` raised inside as a `warning_line`, in the log and on
    the terminal (`to_terminal`), once each, when the block ends.

    Parameters
    ----------
    category
        The warning class to show (e.g. ``DroppedLayersWarning``); others pass through.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", category)
        yield
    shown = set()
    for warning in caught:
        if issubclass(warning.category, category):
            line = warning_line(warning.message)
            if line not in shown:
                shown.add(line)
                to_terminal(line)
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )


def run_rule(smk: Any, main: Callable[[Any], object]) -> None:
    """Run `main(snakemake)` with its output in the rule's log (`log[0]`, if any)."""
    global _terminal
    remove_outputs_on_signal()
    sys.stdout.flush()
    sys.stderr.flush()
    _terminal = os.fdopen(os.dup(2), "w", buffering=1)
    if len(smk.log):
        log_fd = os.open(smk.log[0], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        sys.stdout.reconfigure(line_buffering=True)
        sys.stderr.reconfigure(line_buffering=True)
    try:
        main(smk)
    except KbaggError as error:
        to_terminal(one_line(error))
        exit_now(1)
    except Exception:
        traceback.print_exc()
        if _terminal is not None:
            traceback.print_exc(file=_terminal)
        exit_now(1)
    exit_now(0)
