"""The TileDB-SOMA store: samples appended to one store (`store`), the per-sample inputs
and their metadata (`samples`), embeddings added later (`obsm`), the lock that serializes
updates (`lock`) and its command (`kbagg-soma-obsm`, `cli`)."""
