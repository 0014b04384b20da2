"""Evaluation datasets: tracks with their mixture and the true stem of each instrument.

Pure Python over Beam's filesystems (local paths, gs://, s3://), no pipeline.
A dataset is either

* a musdb-style folder: ``DIR/<track>/mixture.<ext>`` beside one
  ``<instrument>.<ext>`` per stem (also one level deeper, ``DIR/<subset>/<track>/``,
  as musdb's ``train/`` and ``test/``); the track id is the folder's path below
  ``DIR``. A model instrument ``accompaniment`` without a file of its own is,
  as in musdb, the sum of the folder's stems other than ``vocals``;
* a manifest (``.csv``, ``.jsonl`` or ``.parquet``) with the columns
  ``track_id``, ``mixture`` and one per instrument of the model; relative
  paths are relative to the manifest's folder.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from apache_beam.io.filesystems import FileSystems

from models.errors import InputError
from models.uris import normalize
from transforms.catalogue import manifest, storage
from transforms.catalogue.manifest import Failure

MIXTURE = "mixture"
ACCOMPANIMENT, VOCALS = "accompaniment", "vocals"


@dataclass(frozen=True)
class EvalTrack:
    """A track to score: its mixture, and per instrument the stem files whose sum is the reference."""

    track_id: str
    mixture: str
    stems: dict  # instrument -> tuple of URIs


def discover(dataset: str, instruments: tuple[str, ...]) -> tuple[list[EvalTrack], list[Failure]]:
    """The usable tracks of ``dataset`` in track id order, and a failure for every unusable one.

    Raises ``InputError`` when the dataset as a whole is unusable (nothing there,
    a manifest lacking a column).
    """
    dataset = normalize(dataset)  # mixtures and stems as absolute URIs, wherever they are read again
    try:
        manifest.manifest_format(dataset)
    except InputError:
        return _from_folder(dataset.rstrip("/"), instruments)
    return _from_manifest(dataset, instruments)


def _from_folder(folder: str, instruments) -> tuple[list[EvalTrack], list[Failure]]:
    patterns = [storage.join(folder, "*", f"{MIXTURE}.*"), storage.join(folder, "*", "*", f"{MIXTURE}.*")]
    try:
        found = FileSystems.match(patterns)
    except Exception as exc:  # Beam wraps each backend's listing errors differently
        raise InputError(f"{folder}: cannot list ({exc})") from None
    mixtures = sorted({m.path for result in found for m in result.metadata_list})
    if not mixtures:
        raise InputError(f"{folder}: neither a manifest (.csv, .jsonl, .parquet) nor a musdb-style folder "
                         f"(no <track>/{MIXTURE}.* in it)")
    tracks, failures, seen = [], [], set()
    for mixture in mixtures:
        track_dir = posixpath.dirname(mixture)
        track_id = track_dir[len(folder):].lstrip("/")
        if track_id in seen:  # two mixture files in one folder
            failures.append(Failure.of(track_id, mixture, InputError(f"{track_dir}: more than one mixture file")))
            continue
        seen.add(track_id)
        try:
            manifest.check_track_id(track_id)
            tracks.append(EvalTrack(track_id, mixture, _folder_stems(track_dir, mixture, instruments)))
        except InputError as exc:
            failures.append(Failure.of(track_id, mixture, exc))
    return tracks, failures


def _folder_stems(track_dir: str, mixture: str, instruments) -> dict:
    files: dict[str, list[str]] = {}
    for entry in FileSystems.match([storage.join(track_dir, "*")])[0].metadata_list:
        name = posixpath.basename(entry.path)
        # Hidden files are no stems (among them the temporary files of unfinished writes).
        if posixpath.dirname(entry.path) == track_dir and "." in name and not name.startswith("."):
            files.setdefault(name.rsplit(".", 1)[0], []).append(entry.path)
    extension = mixture.rsplit(".", 1)[1]

    def pick(candidates: list[str]) -> str:  # the mixture's format first, when a stem has several
        return min(candidates, key=lambda p: (not p.endswith("." + extension), p))

    stems = {}
    for instrument in instruments:
        if instrument in files:
            stems[instrument] = (pick(files[instrument]),)
        elif instrument == ACCOMPANIMENT and VOCALS in files and len(files) > 2:
            stems[instrument] = tuple(pick(paths) for name, paths in sorted(files.items())
                                      if name not in (MIXTURE, VOCALS))
        else:
            raise InputError(f"{storage.join(track_dir, instrument + '.' + extension)}: no such file "
                             f"(the stem of the model's instrument {instrument})")
    return stems


def _from_manifest(uri: str, instruments) -> tuple[list[EvalTrack], list[Failure]]:
    tracks, failures, seen = [], [], set()
    for number, row in manifest.read_manifest(uri, ("track_id", MIXTURE, *instruments)):
        if isinstance(row, InputError):
            failures.append(Failure.of(f"<row {number}>", "", row))
            continue
        track_id = str(row.get("track_id") or "").strip() or f"<row {number}>"
        try:
            manifest.check_track_id(track_id)
            if track_id in seen:
                raise InputError(f"{uri} row {number}: duplicate track_id {track_id!r}")
            seen.add(track_id)
            mixture = _file(row, MIXTURE, uri, number)
            stems = {instrument: (_file(row, instrument, uri, number),) for instrument in instruments}
            tracks.append(EvalTrack(track_id, mixture, stems))
        except InputError as exc:
            failures.append(Failure.of(track_id, str(row.get(MIXTURE) or ""), exc))
    return sorted(tracks, key=lambda t: t.track_id), failures


def _file(row: dict, column: str, manifest_uri: str, number: int) -> str:
    value = str(row.get(column) or "").strip()
    if not value:
        raise InputError(f"{manifest_uri} row {number}: no {column} file")
    resolved = manifest.resolve_uri(value, manifest_uri)
    if not storage.exists(resolved):
        raise InputError(f"{resolved}: no such file (the {column} of row {number} of {manifest_uri})")
    return resolved
