"""Entry point shared by kbagg's command-line tools: an expected failure (`KbaggError`)
prints one `error: ...` line and exits 1; anything else is a bug and keeps its traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

from kbagg.errors import KbaggError


def run_cli(main: Callable[[], int | None]) -> None:
    try:
        status = main()
    except KbaggError as error:
        print("error: " + " ".join(str(error).split("\n")), file=sys.stderr, flush=True)
        sys.exit(1)
    sys.exit(status or 0)
