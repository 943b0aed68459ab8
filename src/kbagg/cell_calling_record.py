"""The cell-calling record of one sample (`CellCallingRecord`): how its cells were called.

Rule `cells` writes it as JSON text to `uns['kbagg_cells']` of the sample's filtered.h5ad;
rule `aggregate` reads it back into the provenance record (`uns['kbagg']['inputs'][sample]
['cells']`). A module of its own at the bottom of the layers, so that the writer
(`kbagg.cells`) and the reader (`kbagg.aggregate.provenance`) share the type without
importing each other.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from kbagg.errors import parse_json_record

UNS_KEY = "kbagg_cells"


@dataclass
class CellCallingRecord:
    """How the cells of one sample were called and flagged."""

    method: str  # config filter.method: "bustools" or "emptydrops"
    n_barcodes: int  # barcodes in the raw matrix
    params: dict = field(
        default_factory=dict
    )  # the caller's parameters (EmptyDrops: lower, fdr, ...)
    n_cells: int = 0  # barcodes called cells
    doublets: dict | None = None  # Scrublet's settings and outcome; None before the QC step
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        """JSON text (h5ad cannot store None); infinite numbers become "inf"/"-inf", so the
        text is standard JSON. Keys in a fixed order; `doublets` only once it is set."""
        data = {
            "method": self.method,
            "n_barcodes": self.n_barcodes,
            "params": self.params,
            "n_cells": self.n_cells,
        }
        if self.doublets is not None:
            data["doublets"] = self.doublets
        data["warnings"] = self.warnings
        return json.dumps(_finite(data), default=str)

    @classmethod
    def from_json(cls, text: str, *, source: str = "cell-calling record") -> CellCallingRecord:
        """Parse `to_json()` output; KbaggError naming `source` and the key when malformed.

        Parameters
        ----------
        text
            The JSON text (`uns['kbagg_cells']`).
        source
            What the text came from (a file name), for the error message.
        """
        return parse_json_record(
            text,
            lambda data: cls(
                method=data["method"],
                n_barcodes=data["n_barcodes"],
                params=data["params"],
                n_cells=data["n_cells"],
                doublets=data.get("doublets"),
                warnings=list(data["warnings"]),
            ),
            source=source,
            what="cell-calling record",
            hint="rerun rule cells",
        )


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
