"""MuData (.h5mu) files: one sample's modalities, and the aggregate of all samples.

Modalities are named after the library types (`kbagg.reference.features.MODALITY`):
``rna`` (Gene Expression), ``prot`` (Antibody Capture), ``hashtag`` (Multiplexing
Capture), ``crispr`` (CRISPR Guide Capture); a file holds those present. A sample's feature
matrices have exactly the gene-expression cells as rows (`kbagg.count.features`), so the
modalities share obs_names.

The aggregate is built with bounded memory: `concat_on_disk` (the chunked engine of the
h5ad aggregate) runs once per feature modality into a temporary h5ad beside the output (and
for ``rna`` too, unless the h5ad aggregate of the same samples is given: it is the ``rna``
modality as it stands); mudata then
writes the global parts from obs and var names alone (global obs/var, obsmap/varmap, the
per-modality obsm/varm masks, its file header), and each modality's groups are copied in
from its temporary h5ad by HDF5 itself (`h5py.Group.copy`, chunk by chunk). So the ``rna``
modality is the h5ad aggregate of the same inputs, group for group. The temporary files need
as much disk as the modalities' aggregates.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

import anndata as ad
import h5py
import pandas as pd
from natsort import natsorted

from kbagg.atomic import atomic_output
from kbagg.concat.engine import ConcatError, concat_on_disk
from kbagg.concat.inputs import read_dataframe
from kbagg.concat.options import ConcatOptions
from kbagg.feature_types import MODALITY
from kbagg.obs_columns import LIBRARY

MODALITY_ORDER = tuple(MODALITY.values())  # rna, prot, hashtag, crispr
ModalityInput = str | Path | ad.AnnData


def _read(value: ModalityInput) -> ad.AnnData:
    return value if isinstance(value, ad.AnnData) else ad.read_h5ad(value)


def _ordered(names) -> list[str]:
    names = list(dict.fromkeys(names))
    known = [m for m in MODALITY_ORDER if m in names]
    return known + [m for m in names if m not in MODALITY_ORDER]


def write_sample_h5mu(modalities: Mapping[str, ModalityInput], output: str | Path) -> Path:
    """One sample's modalities in one ``.h5mu`` (written atomically).

    Parameters
    ----------
    modalities
        Modality name (``rna``, ``prot``, ``hashtag``, ``crispr``) -> AnnData or h5ad path.
        With ``rna`` present, every other modality must have exactly its obs_names.
    output
        The ``.h5mu`` to write.
    """
    import mudata

    if not modalities:
        raise ConcatError(f"{output}: no modalities to write")
    adatas = {name: _read(modalities[name]) for name in _ordered(modalities)}
    if "rna" in adatas:
        cells = adatas["rna"].obs_names
        for name, adata in adatas.items():
            if not adata.obs_names.equals(cells):
                raise ConcatError(
                    f"{output}: modality '{name}' ({_describe(modalities[name])}) has "
                    f"{adata.n_obs} cells that are not the {len(cells)} rna cells in order; "
                    "feature matrices must be restricted to the gene-expression cells"
                )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mudata's notes about var_names shared across mods
        data = mudata.MuData(adatas)
        with atomic_output(output) as tmp:
            mudata.write_h5mu(tmp, data)
    return Path(output)


def _describe(value: ModalityInput) -> str:
    return "in memory" if isinstance(value, ad.AnnData) else str(value)


def concat_h5mu(
    inputs: Mapping[str, Mapping[str, str | Path] | str | Path],
    output: str | Path,
    options: ConcatOptions | None = None,
    *,
    progress: bool = True,
    uns: Mapping | None = None,
    rna_aggregate: str | Path | None = None,
    **concat,
) -> Path:
    """Aggregate samples into one ``.h5mu``, one `concat_on_disk` per modality.

    Parameters
    ----------
    inputs
        Sample name -> either {modality: h5ad path} or the path of the sample's ``.h5mu``.
        A modality may be missing from some samples; it then holds the others' cells.
    output
        The ``.h5mu`` to write (atomically).
    options
        `ConcatOptions` (join, label, obs names, obs metadata, chunk budget), applied to
        every modality (so obs_names agree); None: the config schema's defaults.
    progress
        As for `concat_on_disk`.
    uns
        `concat_on_disk`'s ``uns`` for the ``rna`` modality (the provenance), also written
        as the MuData's global ``uns``.
    rna_aggregate
        The h5ad aggregate of the samples' ``rna`` modality, made by `concat_on_disk` with
        the same ``options`` and ``uns`` and without compression (rule aggregate's
        ``filtered.h5ad``): copied in as the ``rna`` modality instead of concatenating the
        samples' rna a second time. None: concatenate them here.
    **concat
        Fields of `ConcatOptions` that replace those of ``options``.
    """
    options = ConcatOptions.given(options, **concat)
    output = Path(output)
    if not inputs:
        raise ConcatError("no input files given")
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.parts-") as parts:
        parts = Path(parts)
        files = _modality_files(inputs, parts)
        aggregates = {}
        for modality in _ordered(m for per_sample in files.values() for m in per_sample):
            if modality == "rna" and rna_aggregate is not None:
                aggregates[modality] = _checked_rna_aggregate(
                    Path(rna_aggregate), files, options.label
                )
                continue
            present = {s: mods[modality] for s, mods in files.items() if modality in mods}
            aggregates[modality] = concat_on_disk(
                present,
                parts / f"{modality}.h5ad",
                options,
                progress=progress,
                uns=uns if modality == "rna" else None,
            )
        with atomic_output(output) as tmp:
            _assemble(aggregates, tmp, dict(uns or {}))
    return output


def _checked_rna_aggregate(
    path: Path, files: Mapping[str, Mapping[str, Path]], label: str | None
) -> Path:
    """The rna aggregate, if it is an h5ad of exactly the samples with an rna modality."""
    samples = [s for s, mods in files.items() if "rna" in mods]
    if not path.is_file():
        raise ConcatError(f"the rna aggregate {path} does not exist")
    with h5py.File(path, "r") as f:
        if "X" not in f or "obs" not in f:
            raise ConcatError(f"the rna aggregate {path} is not an h5ad")
        if label is not None:
            held = [str(s) for s in read_dataframe(f["obs"])[label].cat.categories]
            if held != samples:
                raise ConcatError(
                    f"the rna aggregate {path} holds samples {', '.join(held)}, not "
                    f"{', '.join(samples)}; rerun rule aggregate"
                )
    return path


def _modality_files(inputs, parts: Path) -> dict[str, dict[str, Path]]:
    """Sample -> modality -> h5ad path; modalities of a sample's .h5mu are copied out."""
    files = {}
    for sample, value in inputs.items():
        if isinstance(value, Mapping):
            files[str(sample)] = {str(m): Path(p) for m, p in value.items()}
            continue
        path = Path(value)
        if not path.is_file():
            raise ConcatError(f"sample '{sample}': {path} does not exist")
        files[str(sample)] = {}
        with h5py.File(path, "r") as f:
            if "mod" not in f:
                raise ConcatError(f"sample '{sample}': {path} is not a MuData .h5mu (no /mod)")
            for modality in f["mod"]:
                target = parts / f"{sample}.{modality}.h5ad"
                with h5py.File(target, "w") as out:
                    _copy_group(f["mod"][modality], out)
                files[str(sample)][modality] = target
    return files


def _copy_group(source: h5py.Group, target: h5py.Group) -> None:
    """Every member and attribute of `source` into `target` (datasets copied by HDF5)."""
    for key in source:
        source.copy(source[key], target, name=key)
    for key, value in source.attrs.items():
        target.attrs[key] = value


def _assemble(aggregates: dict[str, Path], tmp: Path, uns: dict) -> None:
    """Global parts by mudata from names only, then each modality's groups copied in."""
    import mudata

    skeletons = {}
    for modality, path in aggregates.items():
        with h5py.File(path, "r") as f:
            obs = pd.DataFrame(index=read_dataframe(f["obs"]).index)
            var = pd.DataFrame(index=read_dataframe(f["var"]).index)
        skeletons[modality] = ad.AnnData(obs=obs, var=var)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mudata's notes about var_names shared across mods
        data = mudata.MuData(skeletons)
        data.uns = uns
        mudata.write_h5mu(tmp, data)
    with h5py.File(tmp, "r+") as out:
        for modality, path in aggregates.items():
            group = out["mod"][modality]
            attrs = dict(group.attrs)  # mudata's encoder attributes
            for key in list(group):
                del group[key]
            with h5py.File(path, "r") as f:
                _copy_group(f, group)
            for key, value in attrs.items():
                group.attrs[key] = value


def label_demultiplexed_cells(
    h5mu: str | Path,
    label: str,
    *,
    modality: str = "hashtag",
    column: str = "hashtag_sample",
    metadata_columns: list[str] = (),
    demultiplexed_metadata: Mapping[str, Mapping[str, str]] | None = None,
) -> pd.DataFrame:
    """Give the MuData's global obs each cell's sample, demultiplexed where hashtags say so.

    The global obs gets ``library`` (the sample sheet's sample, the label of every modality),
    `label`: the same, except for cells of libraries with hashtags, whose `label` is their
    hashtag's sample (`column` of the `modality`'s obs; missing for doublets and negatives),
    and the sheet's `metadata_columns`: the library's values, replaced for the cells of a
    demultiplexed sample by its own (`demultiplexed_metadata`, from config `hashtags`). Only
    obs tables are read; the file is rewritten in place (its caller writes it under a
    temporary name).

    Parameters
    ----------
    h5mu
        The aggregate written by `concat_h5mu`.
    label
        The label column (config aggregate.label).
    modality, column
        Where the demultiplexed sample of each cell is.
    metadata_columns
        The sample sheet's metadata columns (in the rna modality's obs).
    demultiplexed_metadata
        Demultiplexed sample -> {metadata column: value}.
    """
    from anndata.io import write_elem

    with h5py.File(h5mu, "r+") as f:
        global_obs = read_dataframe(f["obs"])
        rna_obs = read_dataframe(f["mod"]["rna"]["obs"]).reindex(global_obs.index)
        library = rna_obs[label]
        labels = library.astype(object).where(library.notna(), None)
        if modality in f["mod"]:
            mod_obs = read_dataframe(f["mod"][modality]["obs"])
            if column in mod_obs:
                samples = mod_obs[column].astype(object)
                labels.loc[samples.index] = samples.where(samples.notna(), None)
        global_obs[LIBRARY] = library
        present = [str(v) for v in labels.dropna().unique()]
        order = [*[c for c in library.cat.categories if c in present], *present]
        global_obs[label] = pd.Categorical(labels, categories=list(dict.fromkeys(order)))
        for name in metadata_columns:
            values = rna_obs[name].astype(object)
            for sample, own in (demultiplexed_metadata or {}).items():
                if name in own:
                    values[(labels == sample).to_numpy()] = own[name]
            present = [str(v) for v in values.dropna().unique()]
            global_obs[name] = pd.Categorical(values, categories=natsorted(present))
        del f["obs"]
        write_elem(f, "obs", global_obs)
    return global_obs
