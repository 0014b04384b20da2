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
import io
import json
import os
import posixpath
import unicodedata
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

from apache_beam.io.filesystems import FileSystems

from models.errors import InputError

REQUIRED = ("track_id", "uri")
SCHEMES = ("gs", "s3", "file")
MAX_TRACK_ID = 512


@dataclass(frozen=True)
class Track:
    """One catalogue entry that passed validation."""

    track_id: str
    uri: str
    row: int  # 1-based position in the manifest; the first of duplicates wins
    extra: dict = field(default_factory=dict, hash=False, compare=False)


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

    A manifest without the ``required`` columns (a catalogue's by default) is an
    ``InputError`` for the whole manifest.
    """
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.ParquetFile(stream)
        except Exception as exc:  # pyarrow raises several unrelated types for a bad file
            raise InputError(f"{name}: not a Parquet file ({exc})") from None
        _require_columns(table.schema_arrow.names, name, required)
        number = 0
        for batch in table.iter_batches(batch_size=4096):
            for fields in batch.to_pylist():
                number += 1
                yield number, fields
        return
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="")
    if kind == "csv":
        reader = csv.DictReader(text)
        _require_columns(reader.fieldnames or [], name, required)
        for number, fields in enumerate(reader, start=1):
            if None in fields:  # more cells than header columns
                yield number, InputError(f"{name} row {number}: more cells than columns")
            else:
                yield number, fields
        return
    seen_columns = False
    for number, line in enumerate(text, start=1):
        if not line.strip():
            continue
        try:
            fields = json.loads(line)
            if not isinstance(fields, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            yield number, InputError(f"{name} line {number}: invalid JSON ({exc})")
            continue
        seen_columns = True
        yield number, fields
    if not seen_columns:
        raise InputError(f"{name}: no rows")


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
    if track_id.startswith("/") or "\\" in track_id or ":" in track_id.split("/", 1)[0]:
        raise InputError(f"track_id {track_id!r} is an absolute path")
    parts = track_id.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InputError(f"track_id {track_id!r} has an empty, '.' or '..' path component")
    if any(p.startswith(".") for p in parts):
        raise InputError(f"track_id {track_id!r} has a hidden ('.'-prefixed) path component")


def resolve_uri(uri: str, manifest_uri: str) -> str:
    """Absolute source URI: schemes checked, relative local paths taken from the manifest's folder."""
    if "://" in uri:
        scheme = uri.split("://", 1)[0].lower()
        if scheme not in SCHEMES:
            raise InputError(f"unsupported scheme {scheme}:// in {uri} (use a local path, gs://, s3:// or file://)")
        return uri[len("file://"):] if scheme == "file" else uri
    if uri.startswith("/"):
        return uri
    resolved = posixpath.join(posixpath.dirname(manifest_uri), uri)
    # Absolute, so the URI means the same wherever it is read again (metadata, plans).
    return resolved if "://" in resolved else os.path.abspath(resolved)


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
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def track_id_from_path(path: str, base: str) -> str:
    """``--input`` mode: the path below the glob's fixed folder, e.g. ``album/01.mp3``."""
    relative = path[len(base):] if base and path.startswith(base) else posixpath.basename(path)
    return relative.lstrip("/")
