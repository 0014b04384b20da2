"""DecodeChunks: source audio to the model chunks of each track, decoded in parallel workers."""

from __future__ import annotations

from typing import Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

from models import decoding
from models.chunking import ChunkGeometry, segments
from models.errors import BeamsplitterError
from transforms.background import rewindow
from transforms.catalogue import storage
from transforms.catalogue.manifest import FAILURES, Failure
from transforms.chunks import KeyedTrackChunk, TrackChunk
from transforms.job import JobSettings
from transforms.threads import Interleave


class _Decode(beam.DoFn):
    def __init__(self, job: JobSettings):
        self.job = job

    def setup(self):
        self.geometry = ChunkGeometry.of(self.job.config)
        self.chunks = Metrics.counter("beamsplitter", "chunks")
        # Decoding runs ahead on threads, a track each, while the chunks before are separated; with several
        # tracks at once, one slow decoder never leaves the model waiting when others have chunks ready.
        # Two chunks (4.2 MB each) wait per track being decoded.
        at_once = self.job.tracks_at_once
        self.decoders = Interleave(at_once, depth=2 * at_once)

    def start_bundle(self):
        self.decoders.discard()  # a failed bundle's

    def process(self, todo, windowed=beam.DoFn.WindowedValueParam):
        yield from self._outputs(self.decoders.add(windowed, self._track(*todo)))

    def finish_bundle(self):
        yield from self._outputs(self.decoders.drain())

    def teardown(self):
        self.decoders.close()

    def _outputs(self, ready) -> Iterator:
        # On the bundle's thread: Beam's metrics belong to it.
        for source, output in ready:
            if not isinstance(output, beam.pvalue.TaggedOutput):
                self.chunks.inc()
            yield rewindow(source, output)

    def _track(self, track, fingerprint) -> Iterator:
        """On a decoder's thread: the track's chunks, then its failure if its decoding failed."""
        # What a killed writer left in the track's folder goes before the track is redone (or fails):
        # under the run's lease no other writer is there.
        job, scratch = self.job, self.job.scratch
        storage.delete_partials(job.layout.track_dir(track.track_id))
        try:
            with storage.local_copy(track.uri) as path:
                blocks = decoding.decode(path, job.config.sample_rate, name=track.uri,
                                         stall_timeout=job.io.stall_timeout, max_duration=job.io.max_duration)
                for segment in segments(blocks, self.geometry):
                    samples, uri = segment.samples, None
                    if scratch is not None:
                        uri = scratch.uri(track.track_id, segment.index, "in")
                        scratch.save(samples, uri)
                        samples = None
                    yield (track.track_id, segment.index), TrackChunk(
                        track, fingerprint, segment.index, samples, segment.last, segment.n_samples, uri)
        except BeamsplitterError as exc:
            # Chunks already emitted never complete the track: the last one is missing.
            yield beam.pvalue.TaggedOutput(FAILURES, Failure.of(track.track_id, track.uri, exc))


class DecodeChunks(beam.PTransform):
    """``(track, fingerprint)`` -> ``((track_id, index), TrackChunk)``, plus a ``failures`` output.

    With chunk fan-out the chunks' samples are written to scratch storage, and
    the chunks carry only their URI. A source from which ffmpeg gets no data
    for the stall timeout fails, and so does one longer than the longest
    duration (the job's ``io``). Before a track is decoded, the temporary files
    that a killed writer left in its folder are removed. The job's
    ``tracks_at_once`` tracks of a bundle are decoded at the same time, their
    chunks handed on as they come (each track's in order), so that the model's
    batches fill from several tracks.
    """

    def __init__(self, job: JobSettings):
        super().__init__()
        self.job = job

    def expand(self, todo):
        return todo | beam.ParDo(_Decode(self.job)).with_output_types(KeyedTrackChunk).with_outputs(
            FAILURES, main="chunks")
