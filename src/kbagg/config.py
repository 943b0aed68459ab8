"""Config checks that the JSON schema would word obscurely.

The schema (`workflow/schemas/config.schema.yaml`) holds every key, type and default, and
`snakemake.utils.validate` checks it. Its `oneOf` for the reference sources, though, reports
a failed match as a dump of every alternative. `check_config` runs first and names the key
that is missing or in conflict.
"""

from __future__ import annotations

from collections.abc import Mapping

from kbagg.errors import KbaggError

# Each way to give the reference, with the keys it needs together.
REFERENCE_SOURCES = {
    "fasta": ("fasta", "gtf"),
    "index": ("index", "t2g"),
    "download": ("download",),
}
PARTNER = {"fasta": "gtf", "gtf": "fasta", "index": "t2g", "t2g": "index"}


def check_config(config: Mapping) -> None:
    reference = config.get("reference")
    if not isinstance(reference, Mapping):
        return  # the schema reports a missing or malformed section
    given = [k for k in ("fasta", "gtf", "index", "t2g", "download") if k in reference]
    for key in given:
        partner = PARTNER.get(key)
        if partner and partner not in reference:
            raise KbaggError(
                f"config reference.{key} is set but reference.{partner} is missing; "
                f"give both (reference.{min(key, partner, key=_order)} and "
                f"reference.{max(key, partner, key=_order)})"
            )
    sources = [s for s, keys in REFERENCE_SOURCES.items() if all(k in reference for k in keys)]
    if len(sources) > 1:
        keys = ", ".join(f"reference.{k}" for s in sources for k in REFERENCE_SOURCES[s])
        raise KbaggError(
            f"config sets more than one reference source ({keys}); keep one of "
            "{fasta, gtf}, {index, t2g} or {download}"
        )
    if not sources:
        raise KbaggError(
            "config reference: give reference.fasta + reference.gtf, "
            "reference.index + reference.t2g, or reference.download"
        )
    workflow = config.get("workflow", "standard")
    if workflow != "standard" and sources == ["index"]:
        for key in ("c1", "c2"):
            if key not in reference:
                raise KbaggError(
                    f"config reference.{key}: required with workflow '{workflow}' and a "
                    "prebuilt reference.index"
                )


def _order(key: str) -> int:
    return ("fasta", "gtf", "index", "t2g").index(key)


# kb count options that kbagg sets itself from the sheet, the config and the rule.
MANAGED_COUNT_OPTIONS = {
    "-i": "reference.index",
    "-g": "reference.t2g",
    "-x": "the sheet's technology column (or config technology)",
    "-o": "the workflow's output folders",
    "--tmp": "the workflow's output folders",
    "-t": "resources.kb_count.threads",
    "-m": "resources.kb_count.mem_mb",
    "-w": "the technology's on-list",
    "--filter": "filter.enabled",
    "--filter-threshold": "filter.threshold",
    "--workflow": "config workflow",
    "-c1": "reference.c1",
    "-c2": "reference.c2",
    "--h5ad": "the workflow (always on)",
}


def count_extra_args(text: str) -> list[str]:
    """`count.extra` split like a shell would split it (quotes group words), never run by
    one; options that kbagg sets itself are refused with the key to use instead."""
    import shlex

    try:
        args = shlex.split(text)
    except ValueError as error:
        raise KbaggError(f"config count.extra {text!r}: {error}") from error
    for arg in args:
        option = arg.split("=", 1)[0]
        if option in MANAGED_COUNT_OPTIONS:
            raise KbaggError(
                f"config count.extra: {option} is set by kbagg from "
                f"{MANAGED_COUNT_OPTIONS[option]}; remove it from count.extra"
            )
    return args


def check_feature_config(config: Mapping, sheet, will_exist=()) -> None:
    """Feature-barcode libraries need `feature_reference`; `hashtags` names libraries with
    a Multiplexing Capture library only. A reference that exists already is read, so its
    errors (with line numbers) come before any job."""
    from pathlib import Path

    from kbagg.feature_types import MULTIPLEXING_CAPTURE

    types = {t for s in sheet.names for t in sheet.feature_libraries(s)}
    reference = config.get("feature_reference")
    if types and not reference:
        raise KbaggError(
            f"the sample sheet has {', '.join(sorted(types))} libraries: set "
            "config feature_reference to their feature reference (10x CSV or kb TSV)"
        )
    if reference and Path(reference).is_file():
        from kbagg.reference.features import features_of_type, read_feature_reference

        # A file without a feature_type column (kb's TSV) holds the sheet's one feature type.
        default = next(iter(types)) if len(types) == 1 else None
        table = read_feature_reference(reference, default_feature_type=default)
        for feature_type in sorted(types):
            features_of_type(table, feature_type, f"feature reference {reference}")
    elif reference and Path(reference).resolve() not in {Path(p).resolve() for p in will_exist}:
        raise KbaggError(f"config feature_reference: file not found: {reference}")
    pooled = {s for s in sheet.names if MULTIPLEXING_CAPTURE in sheet.feature_libraries(s)}
    for sample in config.get("hashtags") or {}:
        if sample not in pooled:
            raise KbaggError(
                f"config hashtags.{sample}: the sample sheet has no sample '{sample}' with a "
                "'Multiplexing Capture' library"
                + (f" (samples with one: {', '.join(sorted(pooled))})" if pooled else "")
            )


def hashtag_samples(config: Mapping) -> dict[str, dict[str, str]]:
    """Per library, hashtag id -> the name of the sample it marks (config `hashtags`, whose
    entries are a name or a mapping with `sample` and metadata columns)."""
    return {
        library: {h: e if isinstance(e, str) else e["sample"] for h, e in entries.items()}
        for library, entries in (config.get("hashtags") or {}).items()
    }


def demultiplexed_metadata(config: Mapping, metadata_columns: list[str]) -> dict[str, dict]:
    """Demultiplexed sample -> its own metadata values (config `hashtags` entries given as
    mappings), which replace the library's sheet values for its cells. The columns must be
    the sheet's metadata columns, and a sample named in two places must agree."""
    found: dict[str, dict] = {}
    for library, entries in (config.get("hashtags") or {}).items():
        for hashtag, entry in entries.items():
            if isinstance(entry, str):
                continue
            where = f"config hashtags.{library}.{hashtag}"
            unknown = [k for k in entry if k != "sample" and k not in metadata_columns]
            if unknown:
                raise KbaggError(
                    f"{where}: {', '.join(unknown)} is not a metadata column of the sample "
                    f"sheet (its metadata columns: {', '.join(metadata_columns) or 'none'})"
                )
            values = {k: str(v) for k, v in entry.items() if k != "sample"}
            name = entry["sample"]
            if name in found and found[name] != values:
                raise KbaggError(
                    f"{where}: sample '{name}' has other metadata elsewhere in config "
                    f"hashtags ({found[name]} vs {values}); give one sample one set of values"
                )
            found[name] = values
    return found
