"""DecodeChunks: source audio to the model chunks of each track, decoded in parallel workers."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from models import decoding, ffmpeg_process
from models.chunking import ChunkGeometry, segments
from models.config import load_config
from models.errors import BeamsplitterError
from transforms.catalogue import storage
from transforms.catalogue.layout import Layout
from transforms.catalogue.manifest import FAILURES, Failure
from transforms.chunks import KeyedTrackChunk, TrackChunk
from transforms.stash import Scratch
from transforms.threads import prefetch


class _Decode(beam.DoFn):
    def __init__(self, model: str, layout: Layout, scratch: Scratch | None, stall_timeout: float,
                 max_duration: float):
        self.model, self.layout, self.scratch = model, layout, scratch
        self.stall_timeout, self.max_duration = stall_timeout, max_duration

    def setup(self):
        self.config = load_config(self.model)
        self.geometry = ChunkGeometry.of(self.config)
        self.chunks = Metrics.counter("beamsplitter", "chunks")

    def process(self, todo):
        track, fingerprint = todo
        # What a killed writer left in the track's folder goes before the track is redone (or fails):
        # under the run's lease no other writer is there.
        storage.delete_partials(self.layout.track_dir(track.track_id))
        try:
            with storage.local_copy(track.uri) as path:
                blocks = decoding.decode(path, self.config.sample_rate, name=track.uri,
                                         stall_timeout=self.stall_timeout, max_duration=self.max_duration)
                # Decoding runs ahead on a thread while the chunks before it are separated.
                for segment in prefetch(segments(blocks, self.geometry), depth=2):
                    self.chunks.inc()
                    samples, uri = segment.samples, None
                    if self.scratch is not None:
                        uri = self.scratch.uri(track.track_id, segment.index, "in")
                        self.scratch.save(samples, uri)
                        samples = None
                    yield (track.track_id, segment.index), TrackChunk(
                        track, fingerprint, segment.index, samples, segment.last, segment.n_samples, uri)
        except BeamsplitterError as exc:
            # Chunks already emitted never complete the track: the last one is missing.
            yield beam.pvalue.TaggedOutput(FAILURES, Failure.of(track.track_id, track.uri, exc))


class DecodeChunks(beam.PTransform):
    """``(track, fingerprint)`` -> ``((track_id, index), TrackChunk)``, plus a ``failures`` output.

    With ``scratch`` the chunks' samples are written there, and the chunks carry only their URI.
    A source from which ffmpeg gets no data for ``stall_timeout`` seconds fails, and so does one
    longer than ``max_duration`` seconds (0: no limit). Before a track is decoded, the temporary
    files that a killed writer left in its folder under ``layout`` are removed.
    """

    def __init__(self, model: str, layout: Layout, scratch: Scratch | None = None,
                 stall_timeout: float = ffmpeg_process.DEFAULT_STALL_TIMEOUT, max_duration: float = 0.0):
        super().__init__()
        self.model, self.layout, self.scratch = model, layout, scratch
        self.stall_timeout, self.max_duration = stall_timeout, max_duration

    def expand(self, todo):
        decode = _Decode(self.model, self.layout, self.scratch, self.stall_timeout, self.max_duration)
        return todo | beam.ParDo(decode).with_output_types(KeyedTrackChunk).with_outputs(FAILURES, main="chunks")
