"""Errors of demultiplexing."""

from kbagg.errors import KbaggError


class DemuxError(KbaggError):
    """Hashtag counts that cannot be demultiplexed, or a mapping that misses a hashtag."""
