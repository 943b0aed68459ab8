"""The FASTQ check's record of one lane (`LaneRecord`), written by rule fastq_check and read
by the rules after it (cells, feature counts, provenance). Its own module, so that its
readers need not import the parser (`kbagg.count.fastq_check`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from kbagg.atomic import atomic_output
from kbagg.errors import KbaggError, parse_json_record


class FastqError(KbaggError):
    """A FASTQ file of a lane is damaged or does not pair; the message names sample, lane,
    file and read number or byte offset."""


@dataclass(frozen=True)
class FastqFileRecord:
    """What one FASTQ file of a lane held when it was checked."""

    path: str  # as given to check_lane
    size_bytes: int  # bytes as stored (compressed when gzip)
    sha256: str  # of the bytes as stored: equals `sha256sum PATH`
    compression: str  # "gzip" or "none"
    gzip_members: int  # 0 for plain FASTQ; 1 for plain gzip; more for bgzip / concatenated
    reads: int
    min_length: int  # shortest sequence (bases)
    max_length: int  # longest sequence (bases)


@dataclass(frozen=True)
class LaneRecord:
    """The outcome of `check_lane_files` for one lane: all its files passed every check."""

    sample: str
    lane: int
    reads: int  # reads per file (read pairs for R1 + R2)
    files: dict[str, FastqFileRecord]  # by sample-sheet column: fastq_1 ... fastq_N

    @property
    def r1(self) -> FastqFileRecord:
        """The first file (fastq_1)."""
        return self.files["fastq_1"]

    @property
    def r2(self) -> FastqFileRecord:
        """The second file (fastq_2)."""
        return self.files["fastq_2"]

    def to_json(self) -> str:
        """JSON with stable, sorted keys: files {fastq_1: {...}, ...}, lane, reads, sample."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: str = "lane record") -> LaneRecord:
        """Parse `to_json()` output; FastqError naming `source` and the key when malformed.

        Parameters
        ----------
        text
            The JSON text.
        source
            What the text came from (a file name), for the error message.
        """
        return parse_json_record(
            text,
            cls._from_dict,
            source=source,
            what="lane record",
            error=FastqError,
            hint="rerun the FASTQ check",
        )

    @classmethod
    def _from_dict(cls, data: dict) -> LaneRecord:
        files = {
            column: FastqFileRecord(**{f: entry[f] for f in FastqFileRecord.__dataclass_fields__})
            for column, entry in data["files"].items()
        }
        return cls(sample=data["sample"], lane=data["lane"], reads=data["reads"], files=files)


def write_lane_record(record: LaneRecord, path: str | Path) -> None:
    """Write `record.to_json()` to `path` atomically (kbagg.atomic.atomic_output).

    Parameters
    ----------
    record
        The result of `check_lane`.
    path
        The JSON file to write.
    """
    with atomic_output(path) as tmp:
        Path(tmp).write_text(record.to_json())


def read_lane_record(path: str | Path) -> LaneRecord:
    """Read a JSON file written by `write_lane_record`.

    Parameters
    ----------
    path
        The JSON file.
    """
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise FastqError(f"{path}: cannot read the lane record ({e.strerror})") from None
    return LaneRecord.from_json(text, source=str(path))
