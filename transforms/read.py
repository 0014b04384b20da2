"""ReadCatalogue: a manifest, or a glob of audio files, to validated, de-duplicated tracks.

For distributed runners, which take the whole catalogue in one pipeline: one
worker reads the rows (``transforms.catalogue.index.entries``) and a GroupByKey by
track id finds the duplicates. The local runner reads the catalogue in its
driver instead, once, into ``transforms.catalogue.index.CatalogueIndex``.
"""

from __future__ import annotations

import apache_beam as beam

from transforms.catalogue.index import duplicate_failure, duplicate_key, entries
from transforms.catalogue.manifest import FAILURES, Limits, Track


class _ReadEntries(beam.DoFn):
    def __init__(self, manifest_uri: str | None, input_glob: str | None, limits: Limits):
        self.manifest_uri, self.input_glob, self.limits = manifest_uri, input_glob, limits

    def process(self, _):
        for entry in entries(self.manifest_uri, self.input_glob, self.limits):
            yield entry if isinstance(entry, Track) else beam.pvalue.TaggedOutput(FAILURES, entry)


def _first_wins(keyed):
    """Of the rows sharing a track_id the first is processed, each other one is a failure."""
    _, rows = keyed
    rows = sorted(rows, key=lambda t: t.row)
    yield rows[0]
    for duplicate in rows[1:]:
        yield beam.pvalue.TaggedOutput(FAILURES, duplicate_failure(rows[0], duplicate))


class ReadCatalogue(beam.PTransform):
    """Tracks to separate from ``manifest`` (CSV, JSON Lines, Parquet) or an ``input_glob``.

    Returns ``(tracks, failures)``: ``Track`` elements, and a ``Failure`` for every
    unusable row (missing fields, unsafe track_id, unsupported scheme, duplicate, beyond ``limits``).
    """

    def __init__(self, manifest_uri: str | None = None, input_glob: str | None = None, limits: Limits = Limits()):
        super().__init__()
        self.manifest_uri, self.input_glob, self.limits = manifest_uri, input_glob, limits

    def expand(self, pbegin):
        rows = (pbegin
                | "Source" >> beam.Create([None])
                | "Rows" >> beam.ParDo(_ReadEntries(self.manifest_uri, self.input_glob, self.limits))
                .with_outputs(FAILURES, main="tracks"))
        unique = (rows.tracks
                  | "ByTrackId" >> beam.Map(lambda t: (duplicate_key(t.track_id), t))
                  | "GroupDuplicates" >> beam.GroupByKey()
                  | "FirstWins" >> beam.FlatMap(_first_wins).with_outputs(FAILURES, main="tracks"))
        failures = (rows.failures, unique.failures) | "AllRowFailures" >> beam.Flatten()
        return unique.tracks, failures
