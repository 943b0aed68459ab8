"""The one exception type for expected failures.

Bad input, a bad config or sample sheet, a kb run that failed, an h5ad the concat cannot
read: each raises a `KbaggError` whose message is one line naming the sample, file or key.
The command-line entry points and the workflow's rule scripts print it as one `error:` line
and exit 1. Any other exception is a bug and keeps its traceback. `parse_json_record` gives
the typed JSON records (lane record, cell-calling record, SOMA journal) the same messages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class KbaggError(Exception):
    """An expected failure; the message names the sample, file or key and what to change."""


def parse_json_record[T](
    text: str,
    build: Callable[[Any], T],
    *,
    source: str,
    what: str,
    error: type[KbaggError] = KbaggError,
    hint: str = "",
) -> T:
    """`build(json.loads(text))`, for the typed records' `from_json`: malformed text is one
    `error` line naming `source` (not JSON, the missing key, or not the record at all).

    Parameters
    ----------
    text
        The JSON text.
    build
        Makes the record from the parsed JSON; a missing key (KeyError) or a value of the
        wrong kind (TypeError, AttributeError, ValueError) means a malformed record.
    source
        What the text came from (a file name), for the message.
    what
        The record's name ("lane record"), for the message.
    error
        The KbaggError subclass to raise.
    hint
        What to do about it ("rerun rule cells"), appended to the message.
    """
    import json

    then = f"; {hint}" if hint else ""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{source}: not valid JSON ({e}){then}") from None
    try:
        return build(data)
    except KeyError as e:
        raise error(f"{source}: key {e} is missing{then}") from None
    except (TypeError, AttributeError, ValueError) as e:
        raise error(f"{source}: not a {what} ({e}){then}") from None
