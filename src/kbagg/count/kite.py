"""How kb counts a feature-barcode library: `-x`, `--workflow` and the on-list to pass.

Light on purpose (the workflow reads it at parse time to know which on-list a library needs).
"""

from __future__ import annotations

from dataclasses import dataclass

from kbagg.errors import KbaggError

TRANSLATED_TECHNOLOGIES = ("10XV3", "10XFB")  # run as -x 10xv3 --workflow kite:10xFB


class FeatureCountError(KbaggError):
    """A feature library cannot be counted; the message names the sample."""


@dataclass(frozen=True)
class KiteMode:
    """How kb counts a feature library: its ``-x``, ``--workflow`` and on-list technology."""

    technology: str  # kb's -x
    workflow: str  # "kite:10xFB" or "kite"
    onlist_technology: str  # whose bundled on-list `-w` takes (write_onlist(name, ...))


def kite_mode(technology: str, translate: bool | None = None) -> KiteMode:
    """The kb arguments for a feature library of `technology`.

    Parameters
    ----------
    technology
        The library's technology as the sample sheet names it (any case).
    translate
        Map feature barcodes to the gene-expression space with ``kite:10xFB``. None: yes
        for ``10xv3``/``10xFB`` (capture-sequence libraries), no otherwise. False for 10x v3
        libraries captured by poly(dT) (TotalSeq-A). True is an error for other
        technologies: kb has no translation for them.
    """
    upper = technology.upper()
    translatable = upper in TRANSLATED_TECHNOLOGIES
    if translate is None:
        translate = translatable
    if translate and not translatable:
        raise FeatureCountError(
            f"technology '{technology}': kb 0.30.2 translates feature barcodes "
            "(--workflow kite:10xFB) for 10x 3' v3 only (technology 10xv3)"
        )
    if translate:
        return KiteMode("10xv3", "kite:10xFB", "10xFB")
    if upper == "10XFB":
        raise FeatureCountError(
            "technology '10xFB' is 10x v3 feature barcoding, which needs translate=True"
        )
    return KiteMode(technology, "kite", technology)
