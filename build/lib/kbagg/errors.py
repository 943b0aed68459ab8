"""The one exception type for expected failures.

Bad input, a bad config or sample sheet, a kb run that failed, an h5ad the concat cannot
read: each raises a `KbaggError` whose message is one line naming the sample, file or key.
The command-line entry points and the workflow's rule scripts print it as one `error:` line
and exit 1. Any other exception is a bug and keeps its traceback.
"""


class KbaggError(Exception):
    """An expected failure; the message names the sample, file or key and what to change."""
