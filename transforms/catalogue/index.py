"""A catalogue's entries, in order, and the local runner's on-disk index of them (no Beam inside).

Every row of a manifest (or every file matching an ``--input`` glob) is one
entry: a ``Track``, or a ``Failure`` when the row is unusable. ``entries``
yields them in catalogue order; ``ReadCatalogue`` (transforms/read.py) runs it
on a worker and dedupes there, for distributed runners.

On the local runner the driver reads the catalogue exactly once, into a
``CatalogueIndex``: an SQLite database in a temporary file, with a unique key
per track id, so the first row of a track id wins in memory that does not grow
with the catalogue (a set of a million ids would; the local runner's
GroupByKey held every row, about 5 KB each). Each wave is then fed its own
entries from the index, instead of every wave re-reading the manifest.
"""

from __future__ import annotations

import itertools
import pickle
import sqlite3
from typing import Iterable, Iterator

from apache_beam.io.filesystems import FileSystems

from models.errors import InputError
from models.uris import normalize
from transforms.catalogue import manifest
from transforms.catalogue.manifest import Failure, Limits, Track


def entries(manifest_uri: str | None = None, input_glob: str | None = None,
            limits: Limits = Limits()) -> Iterator[Track | Failure]:
    """The catalogue's rows in order, each a ``Track`` or a ``Failure``; duplicates are not looked for here.

    Raises ``InputError`` for a manifest that is unusable as a whole (missing
    columns, not Parquet, beyond ``limits``...).
    """
    if manifest_uri:
        yield from _manifest_entries(manifest_uri, limits)
    else:
        yield from _glob_entries(input_glob)


def _manifest_entries(uri: str, limits: Limits) -> Iterator[Track | Failure]:
    kind = manifest.manifest_format(uri)
    sources = manifest.Sources(uri, limits.source_outside_manifest)
    with FileSystems.open(uri, compression_type="uncompressed") as stream:
        for number, fields in manifest.read_rows(stream, kind, uri, limits=limits):
            if isinstance(fields, InputError):
                yield Failure.of(f"<row {number}>", "", fields)
                continue
            try:
                yield manifest.to_track(number, fields, sources)
            except InputError as exc:
                yield Failure.of(str(fields.get("track_id") or f"<row {number}>"), str(fields.get("uri") or ""), exc)


def input_files(pattern: str) -> list[str]:
    """The files an ``--input`` glob names, sorted; an InputError naming the glob when there are none.

    Beam's glob, with two differences a user expects from a shell: ``**/``
    also matches no folder at all (``music/**/*.mp3`` takes ``music/a.mp3``
    too), and a relative local glob starts from the working folder.
    """
    parts = _absolute(pattern).split("/**/")
    variants = sorted({parts[0] + "".join(sep + part for sep, part in zip(seps, parts[1:]))
                       for seps in itertools.product(("/**/", "/"), repeat=len(parts) - 1)})
    found = sorted({m.path for result in FileSystems.match(variants) for m in result.metadata_list})
    if not found:
        raise InputError(f"--input {pattern}: no file matches")
    return found


def _absolute(pattern: str) -> str:
    """The glob in ``models.uris.normalize``'s form (absolute, ``file://`` as a path), keeping a final ``/``."""
    absolute = normalize(pattern)
    return absolute + ("/" if pattern.endswith("/") and not absolute.endswith("/") else "")


def _glob_entries(pattern: str) -> Iterator[Track | Failure]:
    base = manifest.glob_folder(_absolute(pattern))
    for number, entry in enumerate(input_files(pattern), start=1):
        track_id = manifest.track_id_from_path(entry, base)
        try:
            manifest.check_track_id(track_id)
            if manifest.unstorable(entry):  # a folder above the track's: its name is not UTF-8
                raise InputError(f"{entry!r}: a path that is not UTF-8, which metadata cannot hold; rename it")
        except InputError as exc:
            yield Failure.of(track_id, entry, exc)
            continue
        yield Track(track_id, entry, number)


def duplicate_key(track_id: str) -> str:
    """What two rows share when they name the same track: the later one is a duplicate.

    Ids equal but for case (or Unicode normalization) count as one: a store that
    folds case, as macOS and Windows volumes do, would give them one folder.
    """
    return manifest.folder_key(track_id)


def duplicate_failure(first: Track, duplicate: Track) -> Failure:
    """The failure row of ``duplicate``, naming the row of ``first``, which wins."""
    spelt = "" if duplicate.track_id == first.track_id else f" as {first.track_id!r}, one folder on stores that fold case"
    error = InputError(f"row {duplicate.row}: duplicate track_id {duplicate.track_id!r} "
                       f"(first at row {first.row}{spelt})")
    return Failure.of(duplicate.track_id, duplicate.uri, error)


class CatalogueIndex:
    """The catalogue's entries, read once and de-duplicated, in a temporary SQLite file.

    One table, one row per catalogue entry in catalogue order (``seq``): the
    first ``Track`` of each key, or a ``Failure`` (an invalid row, or a
    duplicate naming the row that won). SQLite keeps a small page cache and the
    rest on disk, so building and reading it run in bounded memory, in time
    linear in the rows (one B-tree lookup each). The database is SQLite's
    private temporary file (an empty name): unlinked as soon as it is opened,
    so nothing is left behind, even by a killed run.
    """

    def __init__(self):
        self._db = sqlite3.connect("", isolation_level=None)
        self._db.execute("PRAGMA cache_size = -16384")  # 16 MiB of pages in memory, the rest on disk
        self._db.execute("PRAGMA journal_mode = OFF")  # a scratch copy: nothing to recover after a crash
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.execute("CREATE TABLE entries (seq INTEGER PRIMARY KEY, key TEXT UNIQUE, entry BLOB NOT NULL)")
        self.rows = 0
        self.tracks = 0

    @classmethod
    def build(cls, manifest_uri: str | None = None, input_glob: str | None = None,
              limits: Limits = Limits()) -> "CatalogueIndex":
        index = cls()
        try:
            index.add_all(entries(manifest_uri, input_glob, limits))
        except BaseException:
            index.close()
            raise
        return index

    def add_all(self, items: Iterable[Track | Failure]) -> None:
        db = self._db
        db.execute("BEGIN")
        for item in items:
            if isinstance(item, Track):
                key = duplicate_key(item.track_id)
                added = db.execute("INSERT OR IGNORE INTO entries (key, entry) VALUES (?, ?)", (key, _dump(item)))
                if added.rowcount:
                    self.tracks += 1
                else:
                    (first,) = db.execute("SELECT entry FROM entries WHERE key = ?", (key,)).fetchone()
                    db.execute("INSERT INTO entries (entry) VALUES (?)", (_dump(duplicate_failure(_load(first), item)),))
            else:
                db.execute("INSERT INTO entries (entry) VALUES (?)", (_dump(item),))
            self.rows += 1
        db.execute("COMMIT")

    def __iter__(self) -> Iterator[Track | Failure]:
        """Every entry in catalogue order, streamed from disk."""
        for (data,) in self._db.execute("SELECT entry FROM entries ORDER BY seq"):
            yield _load(data)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "CatalogueIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _dump(item) -> bytes:
    return pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)


def _load(data: bytes):
    return pickle.loads(data)
