"""A track's completion record, ``_SUCCESS.json``: written after its stems, it is what makes the track done.

One type for the writer (ReassembleTracks), the skipping of done tracks
(SkipDone) and ``beamsplitter plan``. A record that cannot be read or is not a
valid record (truncated, another JSON value, garbage) counts as absent: the
track is redone, never skipped on the strength of a broken file.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import asdict, dataclass

from models.encoding import EncodeOptions
from transforms.catalogue import storage


# Where records written before the metadata commit was so named keep it.
LEGACY_COMMIT_KEY = "metadata_batch"


@dataclass(frozen=True)
class CompletionRecord:
    track_id: str
    source_uri: str
    source_fingerprint: dict  # {"size": bytes, "mtime": seconds}, as storage.fingerprint gives it
    model: str  # "spleeter:4stems@sha256:<checkpoint digest>"
    encoding: dict  # EncodeOptions.as_written(): codec, bitrate, sample_format
    stems: dict  # instrument -> stem URI
    run_id: str
    metadata_commit: str  # the metadata commit holding its rows; see layout.py
    metadata: tuple  # the track's metadata rows, one per stem, processed_at as ISO 8601 text
    # The stems whose rows go in metadata_commit; the others' rows landed with the earlier commit of the
    # run that wrote them (a run completing a track's stems lists only the rows of those it adds).
    # None: every stem's (records written before stems were chosen, and every run that wrote all).
    commit_stems: tuple | None = None

    @classmethod
    def of(cls, track_id: str, source_uri: str, fingerprint: dict, model: str, encoding: dict, stems: dict,
           run_id: str, metadata_commit: str, rows: list[dict],
           commit_stems: tuple | None = None) -> "CompletionRecord":
        text_rows = tuple(dict(row, processed_at=row["processed_at"].isoformat()) for row in rows)
        return cls(track_id, source_uri, fingerprint, model, dict(encoding), dict(stems), run_id, metadata_commit,
                   text_rows, None if commit_stems is None else tuple(commit_stems))

    def to_json(self) -> bytes:
        # The commit under its former key too: earlier versions need it to find the track done.
        fields = dict(asdict(self), **{LEGACY_COMMIT_KEY: self.metadata_commit})
        if self.commit_stems is None:
            del fields["commit_stems"]
        return json.dumps(fields, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "CompletionRecord":
        """The record in ``data``; ValueError when it is not a valid one."""
        fields = json.loads(data)
        if not isinstance(fields, dict):
            raise ValueError(f"a JSON {type(fields).__name__}, not an object")
        if "metadata_commit" not in fields and LEGACY_COMMIT_KEY in fields:
            fields["metadata_commit"] = fields[LEGACY_COMMIT_KEY]
        text = ("track_id", "source_uri", "model", "run_id", "metadata_commit")
        missing = [k for k in (*text, "source_fingerprint", "stems", "metadata") if k not in fields]
        if missing:
            raise ValueError(f"no {', '.join(missing)}")
        if not all(isinstance(fields[k], str) for k in text):
            raise ValueError("a text field is not text")
        fingerprint, stems, rows = fields["source_fingerprint"], fields["stems"], fields["metadata"]
        if not (isinstance(fingerprint, dict) and set(fingerprint) == {"size", "mtime"}
                and all(isinstance(v, (int, float)) for v in fingerprint.values())):
            raise ValueError(f"source_fingerprint {fingerprint!r}")
        if not (isinstance(stems, dict) and stems and all(isinstance(v, str) for v in stems.values())):
            raise ValueError(f"stems {stems!r}")
        if not (isinstance(rows, list) and all(isinstance(r, dict) for r in rows)):
            raise ValueError("metadata is not a list of rows")
        for row in rows:
            try:
                datetime.datetime.fromisoformat(row["processed_at"])
            except (KeyError, TypeError) as exc:
                raise ValueError(f"a metadata row without a time: {exc}") from None
        # Records written before the encoding was recorded know only their codec, the stems' extension
        # (their bitrate or sample format is unknown): they are done for any options of that codec.
        encoding = fields.get("encoding") or {"codec": next(iter(stems.values())).rsplit(".", 1)[-1]}
        if not (isinstance(encoding, dict) and set(encoding) in ({"codec", "bitrate", "sample_format"}, {"codec"})):
            raise ValueError(f"encoding {encoding!r}")
        commit_stems = fields.get("commit_stems")
        if commit_stems is not None and not (isinstance(commit_stems, list) and set(commit_stems) <= set(stems)):
            raise ValueError(f"commit_stems {commit_stems!r}")
        return cls(**{k: fields[k] for k in (*text, "source_fingerprint", "stems")}, encoding=encoding,
                   metadata=tuple(rows), commit_stems=None if commit_stems is None else tuple(commit_stems))

    @classmethod
    def read(cls, uri: str) -> "CompletionRecord | None":
        """The record at ``uri``; None when there is none, or none that is valid."""
        try:
            return cls.from_json(storage.read_bytes(uri))
        except Exception:  # absent, unreadable or invalid: not done
            return None

    def is_from(self, source_uri: str, fingerprint: dict) -> bool:
        """Whether this very source (URI, size and modification time) was separated, however encoded."""
        return self.source_uri == source_uri and self.source_fingerprint == fingerprint

    def is_encoded_for(self, source_uri: str, fingerprint: dict, encoding: EncodeOptions) -> bool:
        """Whether this very source was separated into stems encoded as ``encoding`` asks, as far as the
        record says (whichever stems)."""
        written = encoding.as_written()
        return self.is_from(source_uri, fingerprint) and all(written.get(k) == v for k, v in self.encoding.items())

    def is_done_for(self, source_uri: str, fingerprint: dict, encoding: EncodeOptions, stems=()) -> bool:
        """Done means: this very source was separated into stems encoded as ``encoding`` asks, ``stems``
        (stem names) among them, as far as the record says."""
        return self.is_encoded_for(source_uri, fingerprint, encoding) and not self.missing(stems)

    def missing(self, stems) -> list[str]:
        """Those of ``stems`` (stem names) that the track lacks, in their order."""
        return [name for name in stems if name not in self.stems]

    def metadata_rows(self) -> list[dict]:
        """The track's metadata rows as first written (processed_at a datetime again)."""
        return [dict(row, processed_at=datetime.datetime.fromisoformat(row["processed_at"])) for row in self.metadata]

    def commit_rows(self) -> list[dict]:
        """The rows that go in ``metadata_commit`` (``commit_stems``'): listed again when it never landed."""
        return [row for row in self.metadata_rows()
                if self.commit_stems is None or row.get("instrument") in self.commit_stems]
