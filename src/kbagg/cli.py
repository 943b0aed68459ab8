"""Shared entry point for the scripts: expected errors become one clear line and exit 1."""

from __future__ import annotations

import sys
from collections.abc import Callable

from kbagg.kb import KbError
from kbagg.samples import SampleSheetError

EXPECTED_ERRORS = (KbError, SampleSheetError, FileNotFoundError, ValueError)


def run_cli(main: Callable[[], None]) -> None:
    try:
        main()
    except EXPECTED_ERRORS as error:
        print(f"ERROR: {error}", file=sys.stderr, flush=True)
        sys.exit(1)
