"""Config checks that the JSON schema would word obscurely.

The schema (`workflow/schemas/config.schema.yaml`) holds every key, type and default, and
`snakemake.utils.validate` checks it. Its `oneOf` for the reference sources, though, reports
a failed match as a dump of every alternative. `check_config` runs first and names the key
that is missing or in conflict.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from kbagg.errors import KbaggError

if TYPE_CHECKING:
    import pandas as pd

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
    "-r": "the technology's replacement list (SPLIT-SEQ)",
    "--filter": "filter.enabled",
    "--filter-threshold": "filter.threshold",
    "--workflow": "config workflow",
    "-c1": "reference.c1",
    "-c2": "reference.c2",
    "--h5ad": "the workflow (always on)",
    "--parity": "the sample sheet (one or two FASTQs per plate cell)",
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


def check_feature_config(
    config: Mapping,
    sheet,
    will_exist: Iterable[str | Path] = (),
    planned_reference: Callable[[], pd.DataFrame] | None = None,
) -> None:
    """Feature-barcode libraries need `feature_reference`; `hashtags` names libraries with
    a Multiplexing Capture library only, and hashtags of the reference (`check_hashtags`).
    A reference that exists already is read, so its errors (with line numbers) come before
    any job; one a rule of the workflow will write (the demo's) is taken from
    `planned_reference`, which returns the table that rule writes."""
    from kbagg.feature_types import MULTIPLEXING_CAPTURE

    types = {t for s in sheet.names for t in sheet.feature_libraries(s)}
    reference = config.get("feature_reference")
    if types and not reference:
        raise KbaggError(
            f"the sample sheet has {', '.join(sorted(types))} libraries: set "
            "config feature_reference to their feature reference (10x CSV or kb TSV)"
        )
    table = None
    if reference and Path(reference).is_file():
        from kbagg.reference.features import features_of_type, read_feature_reference

        # A file without a feature_type column (kb's TSV) holds the sheet's one feature type.
        default = next(iter(types)) if len(types) == 1 else None
        table = read_feature_reference(reference, default_feature_type=default)
        for feature_type in sorted(types):
            features_of_type(table, feature_type, f"feature reference {reference}")
    elif reference and Path(reference).resolve() in {Path(p).resolve() for p in will_exist}:
        table = planned_reference() if planned_reference is not None else None
    elif reference:
        raise KbaggError(f"config feature_reference: file not found: {reference}")
    hashtag_ids = None
    if table is not None:
        hashtag_ids = list(table.loc[table["feature_type"] == MULTIPLEXING_CAPTURE, "id"])
    check_hashtags(config, sheet, hashtag_ids, reference)


def check_hashtags(
    config: Mapping, sheet, hashtag_ids: list[str] | None, reference: str | None = None
) -> None:
    """Every name in config `hashtags` must match what it names.

    - each key is a sample of the sheet with a Multiplexing Capture library (a pool);
    - each hashtag id is a Multiplexing Capture feature of the feature reference, and a
      map names every one of them (the demultiplexing scores them all);
    - each demultiplexed sample is a name of its own: not a sample of the sheet (its cells
      would join that sample in the .h5mu but keep their pool's name in the h5ad
      aggregate), and not a sample of another pool. Several hashtags of one pool may mark
      one sample. A pool without a map names its samples after the hashtag ids, which
      follow the same rules.

    Parameters
    ----------
    config
        The workflow's config (its `hashtags` section).
    sheet
        The sample sheet (`kbagg.sheet.SampleSheet`).
    hashtag_ids
        The feature reference's Multiplexing Capture feature ids; None when not known
        before the run (then the ids are not checked).
    reference
        The feature reference's path, for the messages.
    """
    from kbagg.feature_types import MULTIPLEXING_CAPTURE

    maps = config.get("hashtags") or {}
    pooled = [s for s in sheet.names if MULTIPLEXING_CAPTURE in sheet.feature_libraries(s)]
    for pool in maps:
        if pool not in pooled:
            raise KbaggError(
                f"config hashtags.{pool}: the sample sheet has no sample '{pool}' with a "
                "'Multiplexing Capture' library"
                + (f" (samples with one: {', '.join(pooled)})" if pooled else "")
            )
    if hashtag_ids is not None:
        known = ", ".join(hashtag_ids) or "none"
        where = f"feature reference {reference}"
        for pool, entries in maps.items():
            for hashtag in entries:
                if hashtag not in hashtag_ids:
                    raise KbaggError(
                        f"config hashtags.{pool}.{hashtag}: no hashtag '{hashtag}' in the "
                        f"{where}{_did_you_mean(hashtag, hashtag_ids)} (its Multiplexing "
                        f"Capture features: {known})"
                    )
            missing = [h for h in hashtag_ids if h not in entries]
            if entries and missing:
                raise KbaggError(
                    f"config hashtags.{pool}: no sample for hashtag(s) {', '.join(missing)} "
                    f"of the {where}; map every hashtag (its Multiplexing Capture "
                    f"features: {known})"
                )
    # Demultiplexed sample -> (pool, the config key that names it).
    owner: dict[str, tuple[str, str]] = {}
    unmapped = [p for p in pooled if not maps.get(p)]
    if len(unmapped) > 1:
        raise KbaggError(
            f"config hashtags: samples {', '.join(unmapped)} have Multiplexing Capture "
            "libraries but no hashtag map, so the cells of each would be named after the "
            "same hashtag ids; give each a map (config hashtags.<sample>.<hashtag>: <name>)"
        )
    for pool in pooled:
        entries = maps.get(pool) or {}
        # Without a map the hashtag ids are the samples' names.
        named = {h: _sample_name(e) for h, e in entries.items()} or {
            h: h for h in hashtag_ids or ()
        }
        for hashtag, name in named.items():
            key = f"config hashtags.{pool}.{hashtag}"
            if not entries:
                key = f"config hashtags (no map for '{pool}': hashtag {hashtag} names its cells)"
            if name == pool:
                raise KbaggError(
                    f"{key}: demultiplexed sample '{name}' is the pool's own name; in the "
                    f".h5mu '{name}' would be these cells only, in the h5ad aggregate the whole "
                    "pool; give the demultiplexed sample a name of its own"
                )
            if name in sheet.names:
                raise KbaggError(
                    f"{key}: demultiplexed sample '{name}' is a sample of the sample sheet; "
                    f"its cells would join sample '{name}' in the .h5mu but stay '{pool}' in "
                    "the h5ad aggregate; give the demultiplexed sample a name of its own "
                    f"(the sheet's samples: {', '.join(sheet.names)})"
                )
            if name in owner and owner[name][0] != pool:
                raise KbaggError(
                    f"{key}: demultiplexed sample '{name}' is also named by "
                    f"{owner[name][1]}; a demultiplexed sample comes from one pool, so name "
                    "the samples of each pool apart (e.g. add the pool's name)"
                )
            owner.setdefault(name, (pool, key))


def _did_you_mean(value: str, choices: list[str]) -> str:
    """A choice that differs from `value` only in case or in leading zeros (HTO01, hto1)."""
    key = _spelling(value)
    close = [c for c in choices if _spelling(c) == key]
    return f" (did you mean '{close[0]}'?)" if close else ""


def _spelling(name: str) -> str:
    return re.sub(r"(?<!\d)0+(?=\d)", "", name).casefold()


def hashtag_samples(config: Mapping) -> dict[str, dict[str, str]]:
    """Per library, hashtag id -> the name of the sample it marks (config `hashtags`, whose
    entries are a name or a mapping with `sample` and metadata columns)."""
    return {
        library: {h: _sample_name(e) for h, e in entries.items()}
        for library, entries in (config.get("hashtags") or {}).items()
    }


def _sample_name(entry: str | Mapping) -> str:
    """A `hashtags` entry is the sample's name or a mapping with `sample` and metadata."""
    return entry if isinstance(entry, str) else entry["sample"]


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


def check_technologies(config: Mapping, sheet) -> None:
    """config `technology` and every library's technology (feature libraries too) are kb
    technologies (`kb --list`) or kallisto technology strings kallisto accepts; the files of
    each lane suit them (checked when the sheet is read, `kbagg.sheet`)."""
    from kbagg.kb.technology import technology as kb_technology
    from kbagg.sheet import SampleSheetError

    try:
        kb_technology(config["technology"])
    except KbaggError as error:
        raise KbaggError(f"config technology: {error}") from None
    for (sample, feature_type), technology in sheet.libraries["technology"].items():
        try:
            kb_technology(technology)
        except KbaggError as error:
            raise SampleSheetError(
                f"sample sheet {sheet.path}, sample '{sample}' ({feature_type} library), "
                f"column technology: {error}"
            ) from None


def check_soma_store(uri: str, measurement: str, workdir: str | Path = ".") -> None:
    """config `aggregate.soma.uri` is a new path or a TileDB-SOMA Experiment that can take
    this run's cells in `aggregate.soma.measurement`, checked before any job (the rule
    `soma` checks again, under the store's lock, before it writes).

    A store whose cells are all this project's (its journal and the project marker in
    `workdir` say so) is rebuilt by the rule when the measurement changes; any other store
    with cells must already have the measurement.
    """
    where = f"config aggregate.soma.uri {uri}"
    if "://" in uri and not uri.startswith("file://"):
        raise KbaggError(f"{where}: only local stores are supported (the lock is a local file)")
    path = Path(uri.removeprefix("file://"))
    if not path.exists():
        return
    if not path.is_dir():
        raise KbaggError(
            f"{where}: a file, not a TileDB-SOMA store (a folder); give the folder of an "
            "experiment, or a new path for kbagg to create one"
        )
    if not (path / "__tiledb_group.tdb").exists():
        content = sorted(p.name for p in path.iterdir())[:5]
        raise KbaggError(
            f"{where}: not a TileDB-SOMA store (a folder without __tiledb_group.tdb, holding "
            f"{', '.join(content) if content else 'nothing'}); give the folder of an "
            "experiment, or a new path for kbagg to create one"
        )
    import tiledbsoma

    from kbagg.soma.context import read_context
    from kbagg.soma.journal import JOURNAL_KEY, Journal
    from kbagg.soma.store import PROJECT_MARKER

    try:
        experiment = tiledbsoma.Experiment.open(str(path), context=read_context())
    except (tiledbsoma.DoesNotExistError, tiledbsoma.SOMAError, TypeError) as error:
        raise KbaggError(f"{where}: not a TileDB-SOMA Experiment ({error})") from None
    with experiment:
        n_obs = experiment.obs.count if "obs" in experiment else 0
        measurements = list(experiment.ms.keys()) if "ms" in experiment else []
        raw = experiment.metadata.get(JOURNAL_KEY)
        journal = Journal.from_json(raw, source=f"{where}: its journal") if raw else None
    if not n_obs or measurement in measurements:
        return
    marker = Path(workdir) / PROJECT_MARKER
    project = marker.read_text().strip() if marker.is_file() else None
    own = sum(entry.n_obs for entry in journal.own(project).values()) if journal else 0
    if project is not None and own == n_obs:
        return  # this project's own store: the rule rebuilds it with the new measurement
    raise KbaggError(
        f"config aggregate.soma.measurement '{measurement}': the store {uri} has "
        f"measurement(s) {', '.join(measurements) or 'none'} and cells of other projects, "
        f"so it cannot be rebuilt; set aggregate.soma.measurement to one of them"
    )


def check_download(config: Mapping) -> None:
    """`kb ref -d` fetches prebuilt indices of the standard and nac workflows only."""
    reference = config.get("reference") or {}
    workflow = config.get("workflow", "standard")
    if "download" in reference and workflow not in ("standard", "nac"):
        raise KbaggError(
            f"config reference.download '{reference['download']}': kb ref -d has prebuilt "
            f"indices for workflows standard and nac, not '{workflow}'; build it with "
            "reference.fasta and reference.gtf"
        )


def check_normalize(config: Mapping) -> None:
    """``aggregate.normalize: mapped`` thins kb's BUS file of the called cells and recounts it
    as kb did: it needs called cells (filter.enabled) and kb's standard workflow (one
    ``bustools count`` of one BUS file)."""
    aggregate = config.get("aggregate") or {}
    if aggregate.get("normalize", "none") != "mapped":
        return
    if not (config.get("filter") or {}).get("enabled", True):
        raise KbaggError(
            "config aggregate.normalize: mapped normalizes the called cells; it needs "
            "filter.enabled: true"
        )
    workflow = config.get("workflow", "standard")
    if workflow != "standard":
        raise KbaggError(
            f"config aggregate.normalize: mapped needs workflow standard, not '{workflow}' "
            "(kb counts nascent and mature RNA separately there)"
        )
