"""DecodeChunks: source audio to the model chunks of each track, decoded in parallel workers."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from models import audio
from models.chunking import ChunkGeometry, segments
from models.config import load_config
from models.errors import BeamsplitterError
from transforms.catalogue import storage
from transforms.catalogue.manifest import FAILURES, Failure
from transforms.chunks import KeyedTrackChunk, TrackChunk
from transforms.stash import Scratch
from transforms.threads import prefetch


class _Decode(beam.DoFn):
    def __init__(self, model: str, scratch: Scratch | None, stall_timeout: float):
        self.model, self.scratch, self.stall_timeout = model, scratch, stall_timeout

    def setup(self):
        self.config = load_config(self.model)
        self.geometry = ChunkGeometry.of(self.config)
        self.chunks = Metrics.counter("beamsplitter", "chunks")

    def process(self, todo):
        track, fingerprint = todo
        try:
            with storage.local_copy(track.uri) as path:
                blocks = audio.decode(path, self.config.sample_rate, name=track.uri,
                                      stall_timeout=self.stall_timeout)
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
    A source from which ffmpeg gets no data for ``stall_timeout`` seconds fails.
    """

    def __init__(self, model: str, scratch: Scratch | None = None,
                 stall_timeout: float = audio.DEFAULT_STALL_TIMEOUT):
        super().__init__()
        self.model, self.scratch, self.stall_timeout = model, scratch, stall_timeout

    def expand(self, todo):
        decode = _Decode(self.model, self.scratch, self.stall_timeout)
        return todo | beam.ParDo(decode).with_output_types(KeyedTrackChunk).with_outputs(FAILURES, main="chunks")
