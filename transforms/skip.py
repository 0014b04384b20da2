"""SkipDone: leave out tracks whose stems this model already wrote from this very source."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from models.errors import BeamsplitterError
from transforms import storage
from transforms.layout import Layout
from transforms.manifest import Failure
from transforms.record import CompletionRecord

FAILURES, SKIPPED, RECOVERED = "failures", "skipped", "recovered"


class _Check(beam.DoFn):
    def __init__(self, layout: Layout, force: bool, committed_batches: frozenset):
        self.layout, self.force, self.committed_batches = layout, force, committed_batches
        self.skipped = Metrics.counter("beamsplitter", "tracks_skipped")

    def process(self, track):
        try:
            fingerprint = storage.fingerprint(track.uri)
        except BeamsplitterError as exc:
            yield beam.pvalue.TaggedOutput(FAILURES, Failure.of(track.track_id, track.uri, exc))
        else:
            record = None if self.force else CompletionRecord.read(self.layout.record(track.track_id))
            if record and record.is_done_for(track.uri, fingerprint):
                self.skipped.inc()
                yield beam.pvalue.TaggedOutput(SKIPPED, track)
                if record.metadata_batch not in self.committed_batches:
                    # Done by a run that was killed before its metadata landed: list it now.
                    for row in record.metadata_rows():
                        yield beam.pvalue.TaggedOutput(RECOVERED, row)
            else:
                yield track, fingerprint


class SkipDone(beam.PTransform):
    """``Track`` -> ``(track, fingerprint)`` still to do; plus ``skipped``, ``recovered`` and ``failures``.

    A track is redone when it has no completion record, when its source changed
    (size or modification time), or with ``force``. ``recovered`` holds the
    metadata rows of done tracks whose metadata batch never landed
    (``committed_batches`` are the batches that did).
    """

    def __init__(self, layout: Layout, force: bool = False, committed_batches: frozenset = frozenset()):
        super().__init__()
        self.check = _Check(layout, force, committed_batches)

    def expand(self, tracks):
        return tracks | beam.ParDo(self.check).with_outputs(FAILURES, SKIPPED, RECOVERED, main="todo")
