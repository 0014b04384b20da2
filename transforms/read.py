"""ReadCatalogue: a manifest, or a glob of audio files, to validated, de-duplicated tracks."""

from __future__ import annotations

import zlib

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from models.errors import InputError
from transforms import manifest
from transforms.manifest import Failure, Track

FAILURES = "failures"


class _ReadManifest(beam.DoFn):
    def process(self, uri: str):
        kind = manifest.manifest_format(uri)
        with FileSystems.open(uri, compression_type="uncompressed") as stream:
            for number, fields in manifest.read_rows(stream, kind, uri):
                if isinstance(fields, InputError):
                    yield beam.pvalue.TaggedOutput(FAILURES, Failure.of(f"<row {number}>", "", fields))
                    continue
                try:
                    yield manifest.to_track(number, fields, uri)
                except InputError as exc:
                    track_id = str(fields.get("track_id") or f"<row {number}>")
                    yield beam.pvalue.TaggedOutput(FAILURES, Failure.of(track_id, str(fields.get("uri") or ""), exc))


class _MatchInput(beam.DoFn):
    def process(self, pattern: str):
        base = pattern[: min((pattern.find(c) for c in "*?[" if c in pattern), default=len(pattern))]
        base = base[: base.rfind("/") + 1]
        matches = FileSystems.match([pattern])[0].metadata_list
        for number, entry in enumerate(sorted(m.path for m in matches), start=1):
            track_id = manifest.track_id_from_path(entry, base)
            try:
                manifest.check_track_id(track_id)
            except InputError as exc:
                yield beam.pvalue.TaggedOutput(FAILURES, Failure.of(track_id, entry, exc))
                continue
            yield Track(track_id, entry, number)


def _first_wins(keyed):
    """Of the rows sharing a track_id the first is processed, each other one is a failure."""
    track_id, rows = keyed
    rows = sorted(rows, key=lambda t: t.row)
    yield rows[0]
    for duplicate in rows[1:]:
        error = InputError(f"row {duplicate.row}: duplicate track_id {track_id!r} (first at row {rows[0].row})")
        yield beam.pvalue.TaggedOutput(FAILURES, Failure.of(track_id, duplicate.uri, error))


def in_wave(track_id: str, wave: tuple[int, int]) -> bool:
    """Whether ``track_id`` belongs to wave ``wave[0]`` of ``wave[1]``: all rows of one id share a wave."""
    index, count = wave
    return count == 1 or zlib.crc32(track_id.encode()) % count == index


class ReadCatalogue(beam.PTransform):
    """Tracks to separate from ``manifest`` (CSV, JSON Lines, Parquet) or an ``input_glob``.

    Returns ``(tracks, failures)``: ``Track`` elements, and a ``Failure`` for every
    unusable row (missing fields, unsafe track_id, unsupported scheme, duplicate).
    ``wave=(k, n)`` keeps only the k-th of n disjoint parts of the catalogue.
    """

    def __init__(self, manifest_uri: str | None = None, input_glob: str | None = None,
                 wave: tuple[int, int] = (0, 1)):
        super().__init__()
        self.manifest_uri, self.input_glob, self.wave = manifest_uri, input_glob, wave

    def expand(self, pbegin):
        if self.manifest_uri:
            source, reader = self.manifest_uri, _ReadManifest()
        else:
            source, reader = self.input_glob, _MatchInput()
        wave = self.wave
        rows = (pbegin
                | "Source" >> beam.Create([source])
                | "Rows" >> beam.ParDo(reader).with_outputs(FAILURES, main="tracks"))
        unique = (rows.tracks
                  | "InWave" >> beam.Filter(lambda t: in_wave(t.track_id, wave))
                  | "ByTrackId" >> beam.Map(lambda t: (t.track_id, t))
                  | "GroupDuplicates" >> beam.GroupByKey()
                  | "FirstWins" >> beam.FlatMap(_first_wins).with_outputs(FAILURES, main="tracks"))
        row_failures = rows.failures | "FailuresInWave" >> beam.Filter(lambda f: in_wave(f.track_id, wave))
        failures = (row_failures, unique.failures) | "AllRowFailures" >> beam.Flatten()
        return unique.tracks, failures
