"""SkipDone: leave out tracks whose stems this model already wrote from this very source.

``check`` decides for one track. SkipDone runs it inside the pipeline on
distributed runners; the local runner runs it in its driver over the catalogue
index (pipeline/waves.py), so that only tracks still to do make up its waves.

A done track whose metadata commit never landed (its run was killed between
the record and the commit) is recovered: ``RecoverRows`` lists its rows again,
from its record, in the commit of the pipeline at hand, and moves the record
to that commit first (see ``recover``), on either runner.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.metrics import Metrics

from models.errors import BeamsplitterError, InputError
from transforms.catalogue import storage
from transforms.catalogue.completion import CompletionRecord
from transforms.catalogue.layout import Layout
from transforms.catalogue.manifest import FAILURES, Failure, Track
from transforms.job import JobSettings

SKIPPED, RECOVERED = "skipped", "recovered"


@dataclass(frozen=True)
class Verdict:
    """What to do with one track: separate it (``fingerprint``), skip it, or report ``failure``."""

    track: Track
    fingerprint: dict | None = None  # set when the track is to be separated
    failure: Failure | None = None
    recover: bool = False  # skipped, but its metadata commit never landed: its rows are to be listed again
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


def check(track: Track, job: JobSettings, listing: bool = True) -> Verdict:
    """Whether ``track`` is done by the job's model from this very source, encoded as the job asks, with
    every stem of its selection (a track lacking one is separated again, to add it), unless the job forces
    a redo: a stat and a record read. ``listing=False``: the metadata of done tracks is not wanted
    (``beamsplitter plan``)."""
    try:
        fingerprint = storage.fingerprint(track.uri)
    except BeamsplitterError as exc:
        return Verdict(track, failure=Failure.of(track.track_id, track.uri, exc))
    record = CompletionRecord.read(job.layout.record(track.track_id))
    foreign = _foreign_record(track.track_id, record)
    if foreign:
        return Verdict(track, failure=Failure.of(track.track_id, track.uri, foreign))
    if job.force or not (record and record.is_done_for(track.uri, fingerprint, job.encoding, job.selection.names)):
        return Verdict(track, fingerprint=fingerprint, record=record)
    if not listing or record.metadata_commit in job.landed_commits:
        return Verdict(track, record=record)
    # Done by a run that was killed before its metadata landed: list it now.
    return Verdict(track, recover=True, record=record)


def recover(record: CompletionRecord, layout: Layout, commit: str) -> list[dict]:
    """The metadata rows of a done track whose metadata commit never landed, to be listed in ``commit``.

    The record is moved to ``commit`` before its rows are handed on, so before
    ``commit`` can land: once it has, the record names a commit that landed and
    no later run lists the rows again; a run that dies before leaves ``commit``
    unlanded too, and the next run lists them again.
    """
    if record.metadata_commit != commit:  # the same commit: a retried bundle moved it already
        moved = dataclasses.replace(record, metadata_commit=commit)
        storage.publish_bytes(moved.to_json(), layout.record(record.track_id))
    return record.commit_rows()


class _Check(beam.DoFn):
    def __init__(self, job: JobSettings):
        self.job = job
        self.skipped = Metrics.counter("beamsplitter", "tracks_skipped")

    def process(self, track):
        verdict = check(track, self.job)
        if verdict.failure:
            yield beam.pvalue.TaggedOutput(FAILURES, verdict.failure)
        elif verdict.fingerprint is not None:
            yield track, verdict.fingerprint
        else:
            self.skipped.inc()
            yield beam.pvalue.TaggedOutput(SKIPPED, track)
            if verdict.recover:
                yield beam.pvalue.TaggedOutput(RECOVERED, verdict.record)


class SkipDone(beam.PTransform):
    """``Track`` -> ``(track, fingerprint)`` still to do; plus ``skipped``, ``recovered`` and ``failures``.

    A track is redone when it has no completion record, when its source changed
    (size or modification time), when it was encoded otherwise than the job
    asks, when it lacks one of the job's stems, or when the job forces it.
    ``recovered`` holds the completion records of done tracks whose metadata
    commit never landed (the job's ``landed_commits`` are those that did), for
    ``RecoverRows``.
    """

    def __init__(self, job: JobSettings):
        super().__init__()
        self.check = _Check(job)

    def expand(self, tracks):
        return tracks | beam.ParDo(self.check).with_outputs(FAILURES, SKIPPED, RECOVERED, main="todo")


class RecoverRows(beam.PTransform):
    """Completion records of done tracks whose metadata commit never landed -> their metadata rows,
    each record moved to ``commit``, the metadata commit those rows go to (see ``recover``)."""

    def __init__(self, layout: Layout, commit: str):
        super().__init__()
        self.layout, self.commit = layout, commit

    def expand(self, records):
        return records | beam.FlatMap(recover, self.layout, self.commit)
