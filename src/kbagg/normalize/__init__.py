"""Depth normalization like ``cellranger aggr --normalize=mapped``: every sample's reads are
thinned binomially, record by record in kb's BUS file, to the lowest sample's mapped reads per
called cell, and recounted with kb's own ``bustools count`` arguments (docs/normalization.md).

`bus` reads and writes BUS files; `thin` computes the rates, thins and recounts.
"""
