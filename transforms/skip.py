"""SkipDone: leave out tracks whose stems this model already wrote from this very source."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from models.errors import BeamsplitterError
from transforms import storage
from transforms.layout import Layout
from transforms.manifest import Failure

FAILURES, SKIPPED = "failures", "skipped"


def is_done(record: dict | None, uri: str, fingerprint: dict) -> bool:
    """Done means: a completion record for the same source URI and the same source version."""
    return bool(record) and record.get("source_uri") == uri and record.get("source_fingerprint") == fingerprint


class _Check(beam.DoFn):
    def __init__(self, layout: Layout, force: bool):
        self.layout, self.force = layout, force
        self.skipped = Metrics.counter("beamsplitter", "tracks_skipped")

    def process(self, track):
        try:
            fingerprint = storage.fingerprint(track.uri)
        except BeamsplitterError as exc:
            yield beam.pvalue.TaggedOutput(FAILURES, Failure.of(track.track_id, track.uri, exc))
            return
        if not self.force and is_done(storage.read_json(self.layout.record(track.track_id)), track.uri, fingerprint):
            self.skipped.inc()
            yield beam.pvalue.TaggedOutput(SKIPPED, track)
            return
        yield track, fingerprint


class SkipDone(beam.PTransform):
    """``Track`` -> ``(track, fingerprint)`` still to do; plus ``skipped`` and ``failures`` outputs.

    A track is redone when it has no completion record, when its source changed
    (size or modification time), or with ``force``.
    """

    def __init__(self, layout: Layout, force: bool = False):
        super().__init__()
        self.layout, self.force = layout, force

    def expand(self, tracks):
        return tracks | beam.ParDo(_Check(self.layout, self.force)).with_outputs(FAILURES, SKIPPED, main="todo")
