"""SkipDone: leave out tracks whose stems this model already wrote from this very source."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from models.errors import BeamsplitterError, InputError
from transforms import storage
from transforms.layout import Layout
from transforms.manifest import Failure
from transforms.record import CompletionRecord

FAILURES, SKIPPED, RECOVERED = "failures", "skipped", "recovered"


def _foreign_record(track_id: str, record: CompletionRecord | None) -> InputError | None:
    """What is wrong when the track's folder holds the completion record of another track id.

    A store that folds case (macOS, Windows volumes) gives 'SONG' the folder of
    'Song': skipping would report that track's stems as this one's, and redoing,
    with --force too, would write over them.
    """
    if record is None or record.track_id == track_id:
        return None
    return InputError(f"track_id {track_id!r} finds the completion record of track {record.track_id!r} in its "
                      "folder: the store folds case, so the two would share their stems; rename one of them")


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
            record = CompletionRecord.read(self.layout.record(track.track_id))
            foreign = _foreign_record(track.track_id, record)
            if foreign:
                yield beam.pvalue.TaggedOutput(FAILURES, Failure.of(track.track_id, track.uri, foreign))
                return
            if self.force:
                record = None
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
