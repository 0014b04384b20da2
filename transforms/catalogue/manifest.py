"""Catalogue manifests: reading rows and deciding which ones are usable tracks.

Pure Python on file objects and dicts (and Beam's filesystems to open a
manifest by URI), no pipeline: the transforms in ``transforms.read`` call
these from their workers.

A manifest is CSV (with a header), JSON Lines or Parquet, with at least the
columns ``track_id`` and ``uri``; every other column is carried into the
output metadata as text. Relative local ``uri`` values are relative to the
manifest's folder.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import posixpath
import re
import unicodedata
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

from apache_beam.io.filesystems import FileSystems

from models.errors import InputError
from models.uris import normalize
from transforms.catalogue.layout import RESERVED

REQUIRED = ("track_id", "uri")
SCHEMES = ("gs", "s3", "file")
MAX_TRACK_ID = 512
# A manifest row is a few hundred bytes; a longer line is garbage (or a file that is not a manifest).
MAX_LINE_BYTES = 1 << 20
BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Track:
    """One catalogue entry that passed validation."""

    track_id: str
    uri: str
    row: int  # 1-based position in the manifest; the first of duplicates wins
    extra: dict = field(default_factory=dict, hash=False, compare=False)


#: The output tag of a step's failures (``Failure``s, or the training set's rows that failed).
FAILURES = "failures"


@dataclass(frozen=True)
class Failure:
    """A track or manifest row that produced no stems, and why."""

    track_id: str
    source_uri: str
    stage: str
    error_type: str
    message: str

    @classmethod
    def of(cls, track_id: str, source_uri: str, error: Exception) -> "Failure":
        return cls(track_id, source_uri, getattr(error, "stage", "internal"), type(error).__name__, str(error))


def manifest_format(uri: str) -> str:
    lowered = uri.lower()
    for suffix, kind in ((".csv", "csv"), (".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "jsonl"),
                         (".parquet", "parquet"), (".pq", "parquet")):
        if lowered.endswith(suffix):
            return kind
    raise InputError(f"{uri}: unknown manifest format (use .csv, .jsonl or .parquet)")


def read_rows(stream: BinaryIO, kind: str, name: str,
              required: tuple[str, ...] = REQUIRED) -> Iterator[tuple[int, dict | InputError]]:
    """``(row_number, fields)`` for every row, or ``(row_number, InputError)`` for an unreadable one.

    A manifest without the ``required`` columns (a catalogue's by default), or
    one whose structure breaks (a CSV quote never closed, a CSV line over
    ``MAX_LINE_BYTES``, a Parquet file corrupt part-way) is an ``InputError``
    for the whole manifest, naming the line. Where a bad line cannot hide the
    rows after it (invalid UTF-8, a JSON line that is not an object, nested too
    deep or too long) it is an ``InputError`` row of its own, and the others
    are read on. Data is never altered: invalid UTF-8 is refused, not replaced.
    """
    if kind == "parquet":
        yield from _parquet_rows(stream, name, required)
    elif kind == "csv":
        yield from _csv_rows(_lines(stream), name, required)
    else:
        yield from _jsonl_rows(_lines(stream), name)


def _parquet_rows(stream: BinaryIO, name: str, required: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(stream)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise InputError(f"{name}: not a Parquet file ({_one_line(exc)})") from None
    _require_columns(table.schema_arrow.names, name, required)
    number = 0
    try:
        for batch in table.iter_batches(batch_size=4096):
            for fields in batch.to_pylist():
                number += 1
                yield number, fields
    except (OSError, pa.ArrowException) as exc:
        # A corrupt page: the rows after it cannot be found, so the manifest as a whole is unusable.
        raise InputError(f"{name}: unreadable after row {number} ({_one_line(exc)})") from None


def _lines(stream: BinaryIO) -> Iterator[tuple[int, int, bytes | None]]:
    """``(line_number, byte_offset, line)`` for each line of ``stream``, without a leading UTF-8 BOM.

    A line longer than ``MAX_LINE_BYTES`` comes as ``None``, skipped without
    ever being held whole: one unterminated gigabyte must not exhaust memory.
    """
    number, offset = 0, 0
    while True:
        line = stream.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        number, start = number + 1, offset
        offset += len(line)
        if number == 1 and line.startswith(BOM):  # spreadsheets save "UTF-8 with BOM"
            line = line[len(BOM):]
        if len(line) > MAX_LINE_BYTES:
            while line and not line.endswith(b"\n"):
                line = stream.readline(1 << 16)
                offset += len(line)
            yield number, start, None
        else:
            yield number, start, line


def _decode(line: bytes, offset: int) -> tuple[str, str | None]:
    """The line's text, and what is wrong with its encoding (``None`` when it is valid UTF-8)."""
    try:
        return line.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        problem = (f"invalid UTF-8 (byte 0x{line[exc.start]:02x} at byte offset {offset + exc.start} "
                   f"of the file; save the manifest as UTF-8)")
        # Undecodable bytes kept as lone surrogates: CSV's commas, quotes and newlines stay where they are.
        return line.decode("utf-8", "surrogateescape"), problem


def _jsonl_rows(lines, name: str) -> Iterator[tuple[int, dict | InputError]]:
    seen_columns = False
    for number, offset, line in lines:
        if line is None:
            yield number, InputError(f"{name} line {number}: longer than {MAX_LINE_BYTES} bytes")
            continue
        text, problem = _decode(line, offset)
        if problem:
            yield number, InputError(f"{name} line {number}: {problem}")
            continue
        if not text.strip():
            continue
        try:
            fields = json.loads(text)
            if not isinstance(fields, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            yield number, InputError(f"{name} line {number}: invalid JSON ({exc})")
            continue
        except RecursionError:
            yield number, InputError(f"{name} line {number}: invalid JSON (nested too deep)")
            continue
        seen_columns = True
        yield number, fields
    if not seen_columns:
        raise InputError(f"{name}: no rows")


class _CsvSource:
    """The text lines the csv reader pulls, noting the last line's number and any invalid UTF-8 met."""

    def __init__(self, lines, name: str):
        self.lines, self.name = lines, name
        self.line, self.problem = 0, None

    def __iter__(self):
        for number, offset, line in self.lines:
            self.line = number
            if line is None:
                # Inside a quoted field the next line may belong to the same row: no way to skip just this one.
                raise InputError(f"{self.name} line {number}: longer than {MAX_LINE_BYTES} bytes")
            text, problem = _decode(line, offset)
            self.problem = self.problem or (problem and f"line {number}: {problem}")
            yield text


def _csv_rows(lines, name: str, required: tuple[str, ...]) -> Iterator[tuple[int, dict | InputError]]:
    source = _CsvSource(lines, name)
    # strict: a quote never closed is an error, not a field that silently swallows every later row.
    reader = csv.reader(source, strict=True)
    header = _csv_record(reader, source, name) or []
    if source.problem:
        raise InputError(f"{name} header {source.problem}")
    _require_columns(header, name, required)
    number = 0
    while True:
        source.problem = None
        record = _csv_record(reader, source, name)
        if record is None:
            return
        if not record:  # a blank line
            continue
        number += 1
        if source.problem:
            yield number, InputError(f"{name} row {number}, {source.problem}")
        elif len(record) > len(header):
            yield number, InputError(f"{name} row {number}: more cells than columns")
        else:
            yield number, dict(zip(header, record + [None] * (len(header) - len(record))))


def _csv_record(reader, source: _CsvSource, name: str) -> list[str] | None:
    """The next CSV record, ``None`` at the end; a malformed one is an ``InputError`` naming its first line."""
    first = source.line + 1
    try:
        return next(reader)
    except StopIteration:
        return None
    except csv.Error as exc:
        if "field limit" in str(exc):
            runs_on = f"; the row runs on to line {source.line}: a quote never closed?" if source.line > first else ""
            problem = f"a field longer than the CSV reader's limit of {csv.field_size_limit()} characters{runs_on}"
        elif "unexpected end of data" in str(exc):
            problem = "a quote opened in the row starting here is never closed (it runs to the end of the file)"
        else:
            problem = f"malformed CSV ({exc})"
        raise InputError(f"{name} line {first}: {problem}") from None


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def read_manifest(uri: str, required: tuple[str, ...]) -> list[tuple[int, dict | InputError]]:
    """Every row of the manifest at ``uri`` (local, gs://, s3://), as ``read_rows`` gives them.

    Raises ``InputError`` for an unknown format, a missing manifest, or a
    ``required`` column that it lacks: in JSON Lines, which has no header, one
    that no row has.
    """
    kind = manifest_format(uri)
    if not FileSystems.exists(uri):
        raise InputError(f"{uri}: no such manifest")
    with FileSystems.open(uri, compression_type="uncompressed") as stream:
        rows = list(read_rows(stream, kind, uri, required))
    if kind == "jsonl":
        _require_columns(set().union(*(f.keys() for _, f in rows if isinstance(f, dict))), uri, required)
    return rows


def _require_columns(columns, name: str, required: tuple[str, ...] = REQUIRED) -> None:
    missing = [c for c in required if c not in columns]
    if missing:
        raise InputError(f"{name}: manifest lacks the column(s) {', '.join(missing)} (has: {', '.join(columns) or 'none'})")


def check_track_id(track_id: str) -> None:
    """A track_id becomes a folder name under the output prefix: refuse what could escape it."""
    if not track_id or not track_id.strip():
        raise InputError("track_id is empty")
    if len(track_id) > MAX_TRACK_ID:
        raise InputError(f"track_id is longer than {MAX_TRACK_ID} characters")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in track_id):
        raise InputError(f"track_id {track_id!r} contains control characters")
    # A drive ("C:...") or a URI ("gs://..."); a colon elsewhere is an ordinary character ("Artist: Title").
    if track_id.startswith("/") or "\\" in track_id or re.match(r"[A-Za-z]:|[A-Za-z][\w+.-]*://", track_id):
        raise InputError(f"track_id {track_id!r} is an absolute path")
    parts = track_id.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InputError(f"track_id {track_id!r} has an empty, '.' or '..' path component")
    if any(p.startswith(".") for p in parts):
        raise InputError(f"track_id {track_id!r} has a hidden ('.'-prefixed) path component")
    # Compared as a case-folding store would: "_success.json" is "_SUCCESS.json" there.
    reserved = [p for p in parts if folder_key(p) in _RESERVED_KEYS]
    if reserved:
        raise InputError(f"track_id {track_id!r} has the path component {reserved[0]!r}, "
                         f"a name the output layout reserves for its own files")


def folder_key(track_id: str) -> str:
    """What decides a track's folder on a store that folds case and Unicode normalization.

    macOS and Windows volumes (and the mounts of buckets on them) keep ``Song``
    and ``song``, or a composed and a decomposed ``é``, in one folder: two such
    ids are one track as far as the output is concerned.
    """
    return unicodedata.normalize("NFC", track_id).casefold()


_RESERVED_KEYS = frozenset(folder_key(name) for name in RESERVED)


def resolve_uri(uri: str, manifest_uri: str) -> str:
    """Absolute source URI: schemes checked, relative local paths taken from the manifest's folder."""
    if "://" in uri:
        scheme = uri.split("://", 1)[0].lower()
        if scheme not in SCHEMES:
            raise InputError(f"unsupported scheme {scheme}:// in {uri} (use a local path, gs://, s3:// or file://)")
        return normalize(uri)
    if uri.startswith("/"):
        return normalize(uri)
    # Absolute, so the URI means the same wherever it is read again (metadata, plans).
    return normalize(posixpath.join(posixpath.dirname(normalize(manifest_uri)), uri))


def to_track(number: int, fields: dict, manifest_uri: str) -> Track:
    """Validate one manifest row; raises ``InputError`` saying what is wrong with it."""
    track_id = fields.get("track_id")
    uri = fields.get("uri")
    if track_id is None or str(track_id).strip() == "":
        raise InputError(f"row {number}: missing track_id")
    track_id = str(track_id)
    check_track_id(track_id)
    if uri is None or str(uri).strip() == "":
        raise InputError(f"row {number}: missing uri")
    extra = {k: _text(v) for k, v in fields.items() if k not in REQUIRED}
    return Track(track_id, resolve_uri(str(uri).strip(), manifest_uri), number, extra)


def _text(value) -> str | None:
    """A manifest cell as the metadata's text: times in ISO 8601, lists and maps as JSON, scalars bare."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (datetime.date, datetime.time)):  # datetime is a date too
        return value.isoformat()
    return json.dumps(value, default=str)


def glob_folder(pattern: str) -> str:
    """The fixed folder of an ``--input`` glob, with its trailing slash: ``music/`` for ``music/**/*.mp3``."""
    fixed = pattern[: min((pattern.find(c) for c in "*?[" if c in pattern), default=len(pattern))]
    return fixed[: fixed.rfind("/") + 1]


def is_below(uri: str, folder: str) -> bool:
    """Whether ``uri`` is ``folder`` or lies under it (local paths compared as absolute paths)."""
    if "://" not in uri and "://" not in folder:
        uri, folder = os.path.abspath(uri), os.path.abspath(folder or ".")
    return (uri.rstrip("/") + "/").startswith(folder.rstrip("/") + "/")


def track_id_from_path(path: str, base: str) -> str:
    """``--input`` mode: the path below the glob's fixed folder, e.g. ``album/01.mp3``."""
    relative = path[len(base):] if base and path.startswith(base) else posixpath.basename(path)
    return relative.lstrip("/")
