"""ReassembleTracks: a track's separated chunks back into stem files, then its completion record.

Two ways to bring a track's chunks together, one writer for both:

* in order (``--fan_out`` none or tracks: the local runner, CPU clusters): a
  bundle decodes, separates and hands over each track's chunks in order on one
  thread, so each chunk is written as it comes, with no grouping;
* stashed (``--fan_out=chunks``): chunks separated anywhere wait in scratch
  storage (transforms/stash.py); their references, a few hundred bytes each,
  are grouped by track, and the chunks are read back in order, one at a time.

Either way a worker holds one chunk per track it writes, whatever the track's
length, and no element that grows with a track crosses a shuffle.
"""

from __future__ import annotations

import datetime
import os
import shutil
import tempfile

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from models.chunking import ChunkGeometry
from models.errors import BeamsplitterError
from models.loudness import Loudness
from models.stems import StemWriter, stem_names
from transforms.catalogue import storage
from transforms.background import BackgroundDoFn, rewindow
from transforms.chunks import SeparatedChunk
from transforms.catalogue.completion import CompletionRecord
from transforms.catalogue.layout import is_stem_file, stem_file
from transforms.catalogue.manifest import FAILURES, Failure, Track, carried_columns
from transforms.job import FanOut, JobSettings


def loudness_columns(loudness: Loudness | None) -> dict:
    """A stem's loudness as metadata columns (null for silence, or when not measured)."""
    return {"loudness_lufs": loudness and loudness.integrated_lufs, "loudness_range_lu": loudness and loudness.range_lu,
            "true_peak_dbtp": loudness and loudness.true_peak_dbtp}


class TrackWriter:
    """One track's separated chunks, given in order, into its published stems, then its completion record.

    The stems go through ``models.stems.StemWriter``, the writer of
    ``beamsplitter separate`` too: under a local prefix they are encoded in
    place under temporary names; for an object store they are encoded into a
    local scratch folder and uploaded whole by ``finish``. ``abort`` drops
    them. Not thread-safe: one thread feeds a writer.

    The chunks hold the stems of the run's selection. A track whose record
    (this very source, encoded the same way) lacks some of them is completed:
    only the missing stems are encoded and published, the files already there
    stay as they are, and the new record lists them all.
    """

    def __init__(self, job: JobSettings, commit: str, track: Track, fingerprint: dict):
        self.job, self.commit, self.track, self.fingerprint = job, commit, track, fingerprint
        config, codec, names = job.config, job.encoding.codec, job.selection.names
        previous = None if job.force else CompletionRecord.read(job.layout.record(track.track_id))
        self.kept = previous if previous and previous.track_id == track.track_id and previous.is_encoded_for(
            track.uri, fingerprint, job.encoding) else None
        written = self.kept.missing(names) if self.kept else names
        self.uris = {name: job.layout.stem(track.track_id, name, codec) for name in written}
        self.scratch = None if storage.is_local(job.layout.prefix) else tempfile.mkdtemp(prefix="beamsplitter-")
        paths = self.uris if self.scratch is None else {
            name: os.path.join(self.scratch, stem_file(name, codec)) for name in written}
        try:
            self.stems = StemWriter(paths, ChunkGeometry.of(config), config.sample_rate, job.encoding,
                                    job.io.stall_timeout, measure=True, names=names,
                                    whole_mix=job.selection.covers_mix(len(config.instruments)))
        except BaseException:
            self._drop_scratch()
            raise

    def add(self, index: int, stems: np.ndarray, n_samples: int | None = None) -> None:
        """Chunk ``index``'s stems ``[len(selection), span, 2]``; ``n_samples``, the track's length, with the last."""
        self.stems.add(index, stems, n_samples)

    def finish(self) -> list[dict]:
        """Publish the stems and the completion record; returns the metadata rows of the run's commit."""
        job, track, stems, kept = self.job, self.track, self.stems, self.kept
        config = job.config
        record_uri = job.layout.record(track.track_id)
        try:
            if kept is None:
                # Withdrawn before the first stem is replaced: a redo that dies part-way
                # leaves a track that is not done, never old and new stems under a record.
                # (A completion replaces no stem its record lists: the record stays until the next.)
                storage.delete_files([record_uri])
            stems.close()
            if self.scratch is not None:
                for name, uri in self.uris.items():
                    storage.publish_file(stems.outputs[name], uri)
            # Every other stem file of the track goes, in whatever codec: not only those of the record
            # withdrawn above, since a redo killed just after withdrawing it left its stems unrecorded.
            listed = {stem_file(name, job.encoding.codec) for name in (*(kept.stems if kept else ()), *self.uris)}
            storage.delete_files([uri for uri in storage.find(job.layout.track_dir(track.track_id), "*")
                                  if is_stem_file(uri.rsplit("/", 1)[-1], stem_names(config.instruments))
                                  and uri.rsplit("/", 1)[-1] not in listed])
        except BaseException:
            self.abort()
            raise
        self._drop_scratch()
        processed_at = datetime.datetime.now(datetime.timezone.utc)
        encoding = job.encoding.as_written()
        vocal_activity, instrumental = stems.vocal_presence()  # the track's, on each row written with the vocals
        rows = [{
            "track_id": track.track_id, "instrument": name, "uri": uri, "source_uri": track.uri,
            "duration_s": stems.n_samples / config.sample_rate, "sample_rate": config.sample_rate,
            "channels": config.n_channels, **encoding, "model": job.model_id, "peak": stems.peak[name],
            "rms": stems.rms(name), **loudness_columns(stems.loudness(name)), "vocal_activity": vocal_activity,
            "instrumental": instrumental, "run_id": job.run_id, "processed_at": processed_at,
        } for name, uri in self.uris.items()]
        carried = carried_columns(track.extra)  # the manifest's own columns, renamed where named like ours
        for row in rows:
            row.update(carried)
        uris, commit_stems, all_rows = dict(self.uris), None, rows
        if kept is not None:
            # The kept stems' rows landed with their run's commit, or go in this one with the new rows
            # when that commit never landed (its run was killed): each row lands once.
            unlanded = kept.commit_rows() if kept.metadata_commit not in job.landed_commits else []
            uris = {**kept.stems, **self.uris}
            all_rows = kept.metadata_rows() + rows
            rows = unlanded + rows
            commit_stems = tuple(row["instrument"] for row in rows)
        record = CompletionRecord.of(track.track_id, track.uri, self.fingerprint, job.model_id, encoding,
                                     uris, job.run_id, self.commit, all_rows,
                                     None if commit_stems is not None and set(commit_stems) == set(uris)
                                     else commit_stems)
        # Written last: its presence is what makes the track count as done.
        storage.publish_bytes(record.to_json(), record_uri)
        storage.delete_partials(job.layout.track_dir(track.track_id))
        return rows

    def abort(self) -> None:
        self.stems.abort()
        self._drop_scratch()

    def _drop_scratch(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


class _AssembleDoFn(BackgroundDoFn):
    """What both ways share: tracks are written on threads of their own, and counted here."""

    def __init__(self, job: JobSettings, commit: str):
        self.job, self.commit = job, commit
        self.done = Metrics.counter("beamsplitter", "tracks_done")
        self.seconds = Metrics.counter("beamsplitter", "audio_seconds")

    def outputs(self, source, result):
        if isinstance(result, Failure):
            yield rewindow(source, beam.pvalue.TaggedOutput(FAILURES, result))
        elif result:
            self.done.inc()
            self.seconds.inc(int(round(result[0]["duration_s"])))
            for row in result:
                yield rewindow(source, row)


class _AssembleStashed(_AssembleDoFn):
    """``(track_id, [StashedChunk])`` -> rows; two tracks at a time (one thread cannot keep ffmpeg busy)."""

    workers = in_flight = 2

    def arguments(self, keyed):
        track_id, refs = keyed
        # Sorted here: the runner's grouped values are read on the bundle's thread.
        return track_id, sorted(refs, key=lambda r: r.index)

    def work(self, track_id, refs) -> list | Failure:
        try:
            result = self._write(track_id, refs)
        except BeamsplitterError as exc:
            result = Failure.of(track_id, refs[0].track.uri, exc)
        # Settled (written, failed or incomplete): its chunks are no longer needed. After
        # any other error they stay, for the bundle's retry.
        self.job.scratch.remove_track(track_id)
        return result

    def _write(self, track_id, refs) -> list:
        # A track whose decoding failed part-way lacks its last chunk:
        # DecodeChunks reported it, and nothing of it is published.
        if not (refs[-1].last and [r.index for r in refs] == list(range(len(refs)))):
            return []
        track, fingerprint = refs[0].track, refs[0].fingerprint
        done = CompletionRecord.read(self.job.layout.record(track_id))
        if done and done.run_id == self.job.run_id and done.is_done_for(track.uri, fingerprint, self.job.encoding,
                                                                         self.job.selection.names):
            # A retried bundle: an earlier attempt wrote the track and removed its chunks.
            return done.commit_rows()
        writer = TrackWriter(self.job, self.commit, track, fingerprint)
        try:
            for ref in refs:
                if ref.error:
                    raise storage.StorageError(ref.error)
                writer.add(ref.index, self.job.scratch.load(ref.uri), ref.n_samples if ref.last else None)
        except BaseException:
            writer.abort()
            raise
        return writer.finish()


class _AssembleInOrder(_AssembleDoFn):
    """``((track_id, index), SeparatedChunk)`` in order -> rows, each chunk written as it arrives.

    A track left unfinished at the end of the bundle stopped decoding part-way
    (DecodeChunks reported it): its stems are dropped, nothing is published.
    """

    in_flight = 4  # chunks: the network goes on while the writer catches up

    def start_bundle(self):
        super().start_bundle()
        self._drop_unfinished()  # a failed bundle's, if any

    def finish_bundle(self):
        yield from super().finish_bundle()
        self._drop_unfinished()

    def teardown(self):
        super().teardown()
        self._drop_unfinished()

    def _drop_unfinished(self):
        for writer in getattr(self, "writers", {}).values():
            if writer is not None:
                writer.abort()
        self.writers: dict[str, TrackWriter | None] = {}  # None: the track failed, its chunks are skipped

    def arguments(self, keyed):
        return (keyed[1],)

    def work(self, chunk: SeparatedChunk) -> list | Failure:
        track_id = chunk.track.track_id
        writer = self.writers.get(track_id)
        if writer is None and track_id in self.writers:
            return []
        try:
            if writer is None:
                if chunk.index != 0:
                    raise RuntimeError(f"{track_id}: chunk {chunk.index} came first; in-order assembly "
                                       "needs each track's chunks in one bundle, in order (--fan_out none or tracks)")
                writer = self.writers[track_id] = TrackWriter(self.job, self.commit, chunk.track, chunk.fingerprint)
            writer.add(chunk.index, chunk.stems, chunk.n_samples if chunk.last else None)
            if not chunk.last:
                return []
            del self.writers[track_id]
            return writer.finish()
        except BeamsplitterError as exc:
            if writer is not None:
                writer.abort()
            self.writers[track_id] = None
            return Failure.of(track_id, chunk.track.uri, exc)


class ReassembleTracks(beam.PTransform):
    """Separated chunks -> metadata rows (dicts), plus a ``failures`` output.

    In order (fan-out none or tracks): ``((track_id, index), SeparatedChunk)``,
    each track's chunks in one bundle, in order. With chunk fan-out:
    ``(track_id, StashedChunk)`` references from anywhere, grouped here by
    track. Each completion record names ``commit``, the metadata commit its
    rows land in (transforms/catalogue/layout.py). The chunks hold the job's
    selection of stems; a track whose record lacks some of them is completed,
    unless the job forces a redo (see ``TrackWriter``); the rows of commits
    that landed before the run are not listed again.
    """

    def __init__(self, job: JobSettings, commit: str):
        super().__init__()
        self.job, self.commit = job, commit

    def expand(self, separated):
        if self.job.fan_out is not FanOut.CHUNKS:
            return separated | "Assemble" >> beam.ParDo(_AssembleInOrder(self.job, self.commit)).with_outputs(
                FAILURES, main="metadata")
        return (separated
                | "GroupChunks" >> beam.GroupByKey()
                | "Assemble" >> beam.ParDo(_AssembleStashed(self.job, self.commit))
                .with_outputs(FAILURES, main="metadata"))
