"""The SOMA store's journal: which samples it holds for which project, the append in flight,
the runs that changed it. Kept as JSON in the experiment's metadata (`JOURNAL_KEY`); these
typed records are its only readers and writers (`Journal.to_json` / `Journal.from_json`), and
`read_journal` / `write_journal` the only code that reads or writes that key."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

import tiledbsoma as soma

from kbagg.errors import parse_json_record
from kbagg.soma.context import read_context
from kbagg.soma.layouts import GENE_QUERY
from kbagg.soma.lock import StoreError

JOURNAL_KEY = "kbagg_store"  # the experiment metadata key holding the journal
FORMAT = 1


@dataclass
class SampleEntry:
    """One sample the store holds: what it was made from and where its cells are."""

    sha256: str  # of the sample's h5ad
    metadata: dict[str, str | None]  # its sample-table row
    n_obs: int
    path: str
    run: str  # the run that added it
    project: str | None  # the project that manages it
    added: str  # UTC time, ISO 8601
    obs_joinids: list[int]  # [first, end) soma_joinids of its cells
    # "committed"; or "reserved": obs/var rows written, X layers still to be written by a
    # parallel writer (`kbagg.soma.parallel.write_sample`) and checked by `finish_store`
    state: str = "committed"

    @property
    def fingerprint(self) -> dict:
        return {"sha256": self.sha256, "metadata": self.metadata}


@dataclass
class PendingAppend:
    """An append in flight: journaled before its cells are written, cleared after."""

    sample: str
    run: str
    obs_joinids: list[int]  # [first, end) soma_joinids it may have written
    n_vars_before: int  # var rows before it (rows from here on may be its own)
    sha256: str
    metadata: dict[str, str | None]

    @property
    def fingerprint(self) -> dict:
        return {"sha256": self.sha256, "metadata": self.metadata}


@dataclass
class Journal:
    """The whole journal of one store."""

    measurement: str
    label: str
    index_unique: str | None
    # how X is kept (kbagg.soma.layouts): GENE_QUERY, or TWO_ARRAYS (a gene-major copy of
    # each layer); journals written before it existed are GENE_QUERY
    layout: str = GENE_QUERY
    samples: dict[str, SampleEntry] = field(default_factory=dict)
    pending: PendingAppend | None = None
    obs_dtypes: dict[str, str] = field(default_factory=dict)  # nullable dtypes to restore
    runs: list[dict] = field(default_factory=list)  # the runs that changed it, a log
    format: int = FORMAT

    def settings(self) -> dict[str, str | None]:
        """The update settings a project's samples were written with."""
        return {
            "measurement": self.measurement,
            "label": self.label,
            "index_unique": self.index_unique,
            "layout": self.layout,
        }

    def own(self, project: str | None) -> dict[str, SampleEntry]:
        """The samples ``project`` manages."""
        return {n: e for n, e in self.samples.items() if e.project == project}

    def to_json(self) -> str:
        """Compact JSON with sorted keys (as stored in the experiment's metadata)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, source: str = "the store's journal") -> Journal:
        """Parse `to_json` output (or an older journal, whose missing keys take defaults).

        Parameters
        ----------
        text
            The JSON text.
        source
            What the text came from (the store), for the error message.
        """
        return parse_json_record(
            text, cls._from_dict, source=source, what="kbagg store journal", error=StoreError
        )

    @classmethod
    def _from_dict(cls, data: dict) -> Journal:
        samples = {
            str(name): SampleEntry(**_known(SampleEntry, _entry_defaults(entry)))
            for name, entry in data.get("samples", {}).items()
        }
        pending = data.get("pending")
        return cls(
            measurement=data["measurement"],
            label=data["label"],
            index_unique=data.get("index_unique"),
            layout=data.get("layout", GENE_QUERY),
            samples=samples,
            pending=None if pending is None else PendingAppend(**_known(PendingAppend, pending)),
            obs_dtypes=dict(data.get("obs_dtypes", {})),
            runs=list(data.get("runs", [])),
            format=int(data.get("format", FORMAT)),
        )


def _entry_defaults(entry: dict) -> dict:
    defaults = {"metadata": {}, "path": "", "run": "", "project": None, "added": ""}
    return {**defaults, "obs_joinids": [0, entry.get("n_obs", 0)], **entry}


def _known(record: type, data: dict) -> dict:
    names = {f.name for f in fields(record)}
    return {k: v for k, v in data.items() if k in names}


def read_journal(uri: str) -> Journal | None:
    """The journal of the store at ``uri``; None if it has none (not made by kbagg).

    Parameters
    ----------
    uri
        The store (a TileDB-SOMA Experiment).
    """
    with soma.Experiment.open(uri, context=read_context()) as exp:
        raw = exp.metadata.get(JOURNAL_KEY)
    return None if raw is None else Journal.from_json(raw, source=f"{uri}: its journal")


def write_journal(uri: str, journal: Journal) -> None:
    """Replace the journal of the store at ``uri``; the caller holds the store's lock, or
    writes a store no one else writes yet.

    Parameters
    ----------
    uri
        The store (a TileDB-SOMA Experiment).
    journal
        The journal to store.
    """
    with soma.Experiment.open(uri, "w") as exp:
        exp.metadata[JOURNAL_KEY] = journal.to_json()
