"""Entry point shared by kbagg's command-line tools: an expected failure (`KbaggError`)
prints one `error: ...` line and exits 1; anything else is a bug and keeps its traceback.

A signal (SIGTERM, SIGINT, SIGHUP) at any moment deletes the tool's outputs and temp files
and exits 128 + signal (`kbagg.atomic.remove_outputs_on_signal`).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

from kbagg.atomic import remove_outputs_on_signal
from kbagg.errors import KbaggError


def one_line(error: BaseException) -> str:
    return "error: " + " ".join(str(error).split())


def exit_now(status: int) -> None:
    """Flush and leave at once, without the interpreter's shutdown.

    - After a failed HDF5 write (disk full) the HDF5 library crashes when it tries to close
      the file again at interpreter exit.
    - During shutdown Python puts back the default signal handlers, so a SIGINT there would
      kill the process after its outputs are complete. Signals are blocked from here on: the
      exit status and the outputs always agree.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def run_cli(main: Callable[[], int | None]) -> None:
    remove_outputs_on_signal()
    try:
        status = main()
    except KbaggError as error:
        print(one_line(error), file=sys.stderr)
        exit_now(1)
    exit_now(status or 0)
