"""Catalogue manifests: reading rows and deciding which ones are usable tracks.

Pure Python on file objects and dicts (and Beam's filesystems to open a
manifest by URI), no pipeline: the transforms in ``transforms.read`` call
these from their workers.

A manifest is CSV (with a header), JSON Lines or Parquet, with at least the
columns ``track_id`` and ``uri``; every other column is carried into the
output metadata as text. Relative ``uri`` values are relative to the
manifest's folder, and stay inside it unless a catalogue owner allows more.

Every row a parser yields passes ``read_rows``: text that no UTF-8 file, path
or table can hold (a lone surrogate, as JSON's ``"\\ud800"`` gives), a row
over ``Limits.row_bytes`` or with columns the metadata cannot carry is refused
there, before it reaches the index, a path or Parquet: a failure row, or the
whole manifest where every row would be one (a CSV or Parquet header).
"""

from __future__ import annotations

import csv
import datetime
import functools
import json
import os
import posixpath
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

from apache_beam.io.filesystems import FileSystems

from models.errors import InputError
from models.uris import normalize
from transforms.catalogue.layout import RESERVED

REQUIRED = ("track_id", "uri")
SCHEMES = ("gs", "s3", "file")
MAX_TRACK_ID = 512
# What file systems take as one name (ext4, XFS, APFS, NTFS: 255 bytes or UTF-16 units).
MAX_COMPONENT_BYTES = 255
# A manifest row is a few hundred bytes; a longer one is garbage (or a file that is not a manifest).
MAX_ROW_BYTES = 1 << 20
# Columns carried into the metadata besides track_id and uri: a metadata file of 100,000 columns
# takes gigabytes to write, and no catalogue describes a track with hundreds of fields.
MAX_COLUMNS = 256
# A Parquet manifest's row group, as bounded_parquet counts what it takes to read.
MAX_ROW_GROUP_BYTES = 256 << 20
# Parquet rows turned into Python values at a time, in bytes.
_ROWS_AT_ONCE = 16 << 20
BOM = b"\xef\xbb\xbf"
#: The metadata's own columns (transforms/write.py METADATA_SCHEMA): a manifest column of one of
#: these names is carried as ``manifest_<name>``.
METADATA_COLUMNS = frozenset({
    "track_id", "instrument", "uri", "source_uri", "duration_s", "sample_rate", "channels", "codec", "bitrate",
    "sample_format", "model", "peak", "rms", "loudness_lufs", "loudness_range_lu", "true_peak_dbtp", "vocal_activity",
    "instrumental", "run_id", "processed_at"})
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Limits:
    """What a manifest may hold and name: a catalogue owner's bounds, with defaults that fit any catalogue.

    ``row_bytes``: a JSON line, a CSV row, a Parquet row's cells (``--max_manifest_row_bytes``);
    ``columns``: the columns carried into the metadata besides track_id and uri
    (``--max_manifest_columns``); ``row_group_bytes``: what a Parquet row group
    may take to read (``--max_manifest_row_group_bytes``);
    ``source_outside_manifest``: relative URIs may lead outside the manifest's
    folder (``--allow_source_outside_manifest``).
    """

    row_bytes: int = MAX_ROW_BYTES
    columns: int = MAX_COLUMNS
    row_group_bytes: int = MAX_ROW_GROUP_BYTES
    source_outside_manifest: bool = False


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


def read_rows(stream: BinaryIO, kind: str, name: str, required: tuple[str, ...] = REQUIRED,
              limits: Limits = Limits()) -> Iterator[tuple[int, dict | InputError]]:
    """``(row_number, fields)`` for every row, or ``(row_number, InputError)`` for an unusable one.

    A manifest without the ``required`` columns (a catalogue's by default), or
    with columns it cannot carry (more than ``limits.columns``, one named
    twice, both ``x`` and ``manifest_x`` where ``x`` is a metadata column), or
    one whose structure breaks (a CSV quote never closed, a CSV row over
    ``limits.row_bytes``, a Parquet row group over ``limits.row_group_bytes`` or
    a Parquet file corrupt part-way) is an ``InputError`` for the whole
    manifest, naming the line or row. Where a bad row cannot hide the rows
    after it (invalid UTF-8, a JSON line that is not an object, nested too deep
    or too long, a Parquet row too big, text no UTF-8 store can hold, in JSON
    Lines columns the manifest cannot carry) it is an ``InputError`` row of its
    own, and the others are read on. Data is never altered: invalid UTF-8 is
    refused, not replaced.
    """
    if kind == "parquet":
        rows = _parquet_rows(stream, name, required, limits)
    elif kind == "csv":
        rows = _csv_rows(_lines(stream, limits.row_bytes), name, required, limits)
    else:
        rows = _jsonl_rows(_lines(stream, limits.row_bytes), name, limits)
    for number, fields in rows:
        if isinstance(fields, dict):
            problem = _unstorable_cell(fields)
            if problem:
                fields = InputError(f"{name} row {number}: {problem}")
        yield number, fields


def unstorable(value) -> str | None:
    """The first lone surrogate in ``value`` (text, or lists and maps of it), ``None`` when there is none.

    JSON's ``"\\ud800"`` escapes, or bytes decoded with ``surrogateescape``,
    give text that UTF-8 cannot encode: SQLite, Parquet and file names refuse it.
    """
    pending = [value]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            found = _first_surrogate(value)
            if found:
                return found
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, (list, tuple)):
            pending.extend(value)
    return None


def _first_surrogate(text: str) -> str | None:
    found = _SURROGATE.search(text)
    return found.group() if found else None


def _unstorable_cell(fields: dict) -> str | None:
    for column, value in fields.items():
        if value is None or type(value) is str:  # nearly every cell: searched without unstorable's walk
            found = _first_surrogate(column) or (value and _first_surrogate(value))
        else:
            found = unstorable(column) or unstorable(value)
        if found:
            return (f"column {column!r} holds a lone surrogate ({found!a}), text that no UTF-8 file, path "
                    f"or table can hold")
    return None


def storable(text: str) -> str:
    """``text`` with any lone surrogate written as its escape (``\\ud800``): what a failure row can hold."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _parquet_rows(stream: BinaryIO, name: str, required: tuple[str, ...],
                  limits: Limits) -> Iterator[tuple[int, dict | InputError]]:
    import pyarrow as pa

    from transforms.catalogue import bounded_parquet

    table = bounded_parquet.open_file(stream, name, limits.row_group_bytes)
    _check_columns(table.schema_arrow.names, name, required, limits)
    number = 0
    try:
        for batch, sizes in bounded_parquet.batches(table):
            start = 0
            while start < batch.num_rows:
                if sizes[start] > limits.row_bytes:  # never made Python values
                    number += 1
                    yield number, InputError(f"{name} row {number}: {sizes[start]} bytes, over the "
                                             f"{limits.row_bytes} a row may hold (--max_manifest_row_bytes)")
                    start += 1
                    continue
                end, taken = start + 1, sizes[start]
                while end < batch.num_rows and sizes[end] <= limits.row_bytes and taken + sizes[end] <= _ROWS_AT_ONCE:
                    taken += sizes[end]
                    end += 1
                for fields in _parquet_values(batch, start, end):
                    number += 1
                    yield number, (InputError(f"{name} row {number}: {fields}") if isinstance(fields, str) else fields)
                start = end
    except (OSError, pa.ArrowException) as exc:
        # A corrupt page: the rows after it cannot be found, so the manifest as a whole is unusable.
        raise InputError(f"{name}: unreadable after row {number} ({bounded_parquet.one_line(exc)})") from None


def _parquet_values(batch, start: int, end: int) -> list[dict | str]:
    """Rows ``start`` to ``end`` of a Parquet batch as Python values; what is wrong with one that has none.

    pyarrow does not check text as it reads it: invalid UTF-8 shows only here.
    """
    try:
        return batch.slice(start, end - start).to_pylist()
    except UnicodeDecodeError:
        rows = []
        for row in range(start, end):
            try:
                rows.append(batch.slice(row, 1).to_pylist()[0])
            except UnicodeDecodeError:
                column = next(name for name, cells in zip(batch.schema.names, batch.columns)
                              if not _decodes(cells.slice(row, 1)))
                rows.append(f"column {column!r} holds invalid UTF-8 (save the manifest's text as UTF-8)")
        return rows


def _decodes(cells) -> bool:
    try:
        cells.to_pylist()
        return True
    except UnicodeDecodeError:
        return False


def _lines(stream: BinaryIO, max_bytes: int) -> Iterator[tuple[int, int, bytes | None]]:
    """``(line_number, byte_offset, line)`` for each line of ``stream``, without a leading UTF-8 BOM.

    A line longer than ``max_bytes`` comes as ``None``, skipped without ever
    being held whole: one unterminated gigabyte must not exhaust memory.
    """
    number, offset = 0, 0
    while True:
        line = stream.readline(max_bytes + 1)
        if not line:
            return
        number, start = number + 1, offset
        offset += len(line)
        if number == 1 and line.startswith(BOM):  # spreadsheets save "UTF-8 with BOM"
            line = line[len(BOM):]
        if len(line) > max_bytes:
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


def _jsonl_rows(lines, name: str, limits: Limits) -> Iterator[tuple[int, dict | InputError]]:
    seen_columns = False
    carried: set[str] = set()  # the columns carried so far: their number is bounded for the whole manifest
    for number, offset, line in lines:
        if line is None:
            yield number, InputError(f"{name} line {number}: longer than {limits.row_bytes} bytes "
                                     f"(--max_manifest_row_bytes)")
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
        new = {column for column in fields if column not in REQUIRED and column not in carried}
        problem = _columns_problem(fields, limits.columns, len(carried | new) if new else 0)
        if problem:
            yield number, InputError(f"{name} line {number}: {problem}")
            continue
        carried |= new
        yield number, fields
    if not seen_columns:
        raise InputError(f"{name}: no rows")


class _CsvSource:
    """The text lines the csv reader pulls, noting the last line's number and any invalid UTF-8 met.

    A row is bounded as a JSON line is: quoted newlines cannot make one longer than ``max_bytes``.
    """

    def __init__(self, lines, name: str, max_bytes: int):
        self.lines, self.name, self.max_bytes = lines, name, max_bytes
        self.line, self.problem = 0, None
        self.first, self.taken = 1, 0  # the first line of the row being read, and its bytes so far

    def start_row(self) -> None:
        self.first, self.taken = self.line + 1, 0

    def __iter__(self):
        for number, offset, line in self.lines:
            self.line = number
            # Inside a quoted field the next line may belong to the same row: no way to skip just this one.
            if line is None:
                raise InputError(f"{self.name} line {number}: longer than {self.max_bytes} bytes "
                                 f"(--max_manifest_row_bytes)")
            self.taken += len(line)
            if self.taken > self.max_bytes:
                raise InputError(f"{self.name} line {self.first}: a row running on to line {number}, longer than "
                                 f"{self.max_bytes} bytes (--max_manifest_row_bytes)")
            text, problem = _decode(line, offset)
            self.problem = self.problem or (problem and f"line {number}: {problem}")
            yield text


def _csv_rows(lines, name: str, required: tuple[str, ...], limits: Limits) -> Iterator[tuple[int, dict | InputError]]:
    source = _CsvSource(lines, name, limits.row_bytes)
    # strict: a quote never closed is an error, not a field that silently swallows every later row.
    reader = csv.reader(source, strict=True)
    header = _csv_record(reader, source, name) or []
    if source.problem:
        raise InputError(f"{name} header {source.problem}")
    _check_columns(header, name, required, limits)
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
    source.start_row()
    first = source.first
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


def _check_columns(header: list[str], name: str, required: tuple[str, ...], limits: Limits) -> None:
    """A CSV or Parquet manifest's columns, which every row has: any that cannot be carried stop it as a whole."""
    columns = Counter(header)
    carried = sum(1 for column in columns if column not in REQUIRED)
    problem = _columns_problem(columns, limits.columns, carried)
    if problem:
        raise InputError(f"{name}: {problem}")
    twice = [column for column, count in columns.items() if count > 1]
    if twice:
        raise InputError(f"{name}: the column(s) {', '.join(map(repr, twice))} appear more than once")
    _require_columns(header, name, required)


def _columns_problem(columns, limit: int, carried: int) -> str | None:
    """Why a row with ``columns`` (a container) cannot be carried into the metadata, if it cannot.

    ``carried``: how many columns the manifest would carry with it, besides
    track_id and uri; over ``limit`` is too many. A column named like one of
    the metadata's own is carried as ``manifest_<name>``: a row may not have
    that name too, or one value would be lost.
    """
    if carried > limit:
        return (f"the manifest would carry {carried} columns into the metadata besides track_id and uri, over "
                f"the {limit} it may (--max_manifest_columns)")
    clash = next((c for c in columns if c in METADATA_COLUMNS and c not in REQUIRED and f"manifest_{c}" in columns),
                 None)
    if clash:
        return (f"the columns {clash!r} and 'manifest_{clash}' would both be the metadata's column "
                f"'manifest_{clash}' (a column named like one of the metadata's own is carried as "
                f"manifest_<name>); rename one")
    return None


def carried_columns(extra: dict) -> dict:
    """A track's manifest columns as the metadata names them (see ``_columns_problem``)."""
    return {(f"manifest_{column}" if column in METADATA_COLUMNS else column): value for column, value in extra.items()}


def check_track_id(track_id: str) -> None:
    """A track_id becomes a folder name under the output prefix: refuse what could escape it."""
    if not track_id or not track_id.strip():
        raise InputError("track_id is empty")
    surrogate = unstorable(track_id)
    if surrogate:
        raise InputError(f"track_id {track_id!r} holds a lone surrogate ({surrogate!a}), which no file name can")
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
    long = next((p for p in parts if len(p.encode()) > MAX_COMPONENT_BYTES), None)
    if long is not None:
        raise InputError(f"track_id has a path component of {len(long.encode())} bytes (UTF-8), longer than the "
                         f"{MAX_COMPONENT_BYTES} a file system takes for a name: {long[:40]!r}...")
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


class Sources:
    """Where the rows of the manifest at ``manifest_uri`` may take their sources from.

    A relative ``uri`` is taken from the manifest's folder and must stay inside
    it (``..`` resolved, and symbolic links on a local disk), unless
    ``outside`` allows any: a manifest is often written by someone else than
    whoever runs the job, and must not make it read, and publish the stems
    of, any file the job can read. Absolute paths and URIs are taken as given.
    """

    def __init__(self, manifest_uri: str, outside: bool = False):
        self.manifest_uri, self.outside = manifest_uri, outside
        self.folder = posixpath.dirname(normalize(manifest_uri))
        # Resolving each folder of a million rows' paths again would cost a stat per path component.
        self._real = functools.lru_cache(maxsize=1024)(os.path.realpath)

    def resolve(self, uri: str) -> str:
        """``resolve_uri(uri)``; an ``InputError`` for a relative one that leads outside the folder."""
        resolved = resolve_uri(uri, self.manifest_uri)
        if self.outside or "://" in uri or uri.startswith("/"):
            return resolved
        if "://" in self.folder:  # an object store: names are only text
            inside = posixpath.normpath(uri).split("/")[0] != ".."
        else:
            folder, name = os.path.split(resolved)
            real = os.path.join(self._real(folder), name)
            inside = is_below(os.path.realpath(real) if os.path.islink(real) else real, self._real(self.folder))
        if not inside:
            raise InputError(f"uri {uri!r} leads outside the manifest's folder {self.folder}/ "
                             f"(--allow_source_outside_manifest allows it)")
        return resolved


def to_track(number: int, fields: dict, sources: Sources) -> Track:
    """Validate one manifest row, its relative ``uri`` taken from ``sources``; raises ``InputError`` saying
    what is wrong with it."""
    track_id = fields.get("track_id")
    uri = fields.get("uri")
    if track_id is None or str(track_id).strip() == "":
        raise InputError(f"row {number}: missing track_id")
    track_id = str(track_id)
    check_track_id(track_id)
    if uri is None or str(uri).strip() == "":
        raise InputError(f"row {number}: missing uri")
    uri = str(uri).strip()
    if "\x00" in uri:
        raise InputError(f"row {number}: uri {uri!r} holds a NUL character, which no path or object name can")
    extra = {k: _text(v) for k, v in fields.items() if k not in REQUIRED}
    return Track(track_id, sources.resolve(uri), number, extra)


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
