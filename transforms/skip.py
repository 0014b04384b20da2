"""SkipDone: leave out tracks whose stems this model already wrote from this very source.

``check`` decides for one track. SkipDone runs it inside the pipeline on
distributed runners; the local runner runs it in its driver over the catalogue
index (pipeline/waves.py), so that only tracks still to do make up its waves.
"""

from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam
from apache_beam.metrics import Metrics

from models.audio import EncodeOptions
from models.errors import BeamsplitterError, InputError
from transforms.catalogue import storage
from transforms.catalogue.completion import CompletionRecord
from transforms.catalogue.layout import Layout
from transforms.catalogue.manifest import FAILURES, Failure, Track

SKIPPED, RECOVERED = "skipped", "recovered"


@dataclass(frozen=True)
class Verdict:
    """What to do with one track: separate it (``fingerprint``), skip it, or report ``failure``."""

    track: Track
    fingerprint: dict | None = None  # set when the track is to be separated
    failure: Failure | None = None
    recovered: tuple = ()  # a skipped track's metadata rows, when its metadata commit never landed
    record: CompletionRecord | None = None  # the track's completion record, if it has one

    @property
    def skipped(self) -> bool:
        return self.fingerprint is None and self.failure is None


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


def check(track: Track, layout: Layout, encoding: EncodeOptions, force: bool,
          landed_commits: frozenset | None) -> Verdict:
    """Whether ``track`` is done by this model from this very source, encoded as ``encoding`` asks:
    a stat and a record read. ``landed_commits=None``: the metadata of done tracks is not wanted
    (``beamsplitter plan``)."""
    try:
        fingerprint = storage.fingerprint(track.uri)
    except BeamsplitterError as exc:
        return Verdict(track, failure=Failure.of(track.track_id, track.uri, exc))
    record = CompletionRecord.read(layout.record(track.track_id))
    foreign = _foreign_record(track.track_id, record)
    if foreign:
        return Verdict(track, failure=Failure.of(track.track_id, track.uri, foreign))
    if force or not (record and record.is_done_for(track.uri, fingerprint, encoding)):
        return Verdict(track, fingerprint=fingerprint, record=record)
    if landed_commits is None or record.metadata_commit in landed_commits:
        return Verdict(track, record=record)
    # Done by a run that was killed before its metadata landed: list it now.
    return Verdict(track, recovered=tuple(record.metadata_rows()), record=record)


class _Check(beam.DoFn):
    def __init__(self, layout: Layout, encoding: EncodeOptions, force: bool, landed_commits: frozenset):
        self.layout, self.encoding, self.force, self.landed_commits = layout, encoding, force, landed_commits
        self.skipped = Metrics.counter("beamsplitter", "tracks_skipped")

    def process(self, track):
        verdict = check(track, self.layout, self.encoding, self.force, self.landed_commits)
        if verdict.failure:
            yield beam.pvalue.TaggedOutput(FAILURES, verdict.failure)
        elif verdict.fingerprint is not None:
            yield track, verdict.fingerprint
        else:
            self.skipped.inc()
            yield beam.pvalue.TaggedOutput(SKIPPED, track)
            for row in verdict.recovered:
                yield beam.pvalue.TaggedOutput(RECOVERED, row)


class SkipDone(beam.PTransform):
    """``Track`` -> ``(track, fingerprint)`` still to do; plus ``skipped``, ``recovered`` and ``failures``.

    A track is redone when it has no completion record, when its source changed
    (size or modification time), when it was encoded otherwise than ``encoding``
    asks, or with ``force``. ``recovered`` holds the
    metadata rows of done tracks whose metadata commit never landed
    (``landed_commits`` are the commits that did).
    """

    def __init__(self, layout: Layout, encoding: EncodeOptions, force: bool = False,
                 landed_commits: frozenset = frozenset()):
        super().__init__()
        self.check = _Check(layout, encoding, force, landed_commits)

    def expand(self, tracks):
        return tracks | beam.ParDo(self.check).with_outputs(FAILURES, SKIPPED, RECOVERED, main="todo")
