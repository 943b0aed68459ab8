"""The aggregate: a chunked on-disk concat of every sample's matrix, with provenance."""

from kbagg.aggregate.concat import concat_on_disk

__all__ = ["concat_on_disk"]
