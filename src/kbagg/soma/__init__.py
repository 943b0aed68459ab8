"""The TileDB-SOMA store: samples appended to one store (`store`), the per-sample inputs
and their metadata (`samples`), embeddings added later (`obsm`), the lock that serializes
updates (`lock`) and its command (`kbagg-soma-obsm`, `cli`); the TileDB settings every read
uses (`read_context`, for your own queries too)."""

from kbagg.soma.context import read_context

__all__ = ["read_context"]
