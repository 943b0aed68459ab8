"""The TileDB-SOMA store: samples appended to one store (`store`) or by parallel writers
(`parallel`), the per-sample inputs and their metadata (`samples`), the store's journal
(`journal`), its fragments and their consolidation (`fragments`, with `libtiledb` for the
metadata), embeddings added later (`obsm`), the lock that serializes updates (`lock`) and
its command (`kbagg-soma-obsm`, `cli`); the TileDB settings every read uses (`read_context`,
for your own queries too); the X arrays' layouts (`layouts`) and the X array to query for
genes or cells (`query_layer`)."""

from kbagg.soma.context import read_context
from kbagg.soma.layouts import query_layer

__all__ = ["query_layer", "read_context"]
