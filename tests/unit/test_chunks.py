"""The chunk elements' coder: what runners use to move chunks and to size them."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
from apache_beam.typehints.native_type_compatibility import convert_to_beam_type

from transforms.chunks import ChunkCoder, KeyedTrackChunk, SeparatedChunk, TrackChunk
from transforms.catalogue.manifest import Track


def _chunk(rng) -> TrackChunk:
    track = Track("pop/one", "/music/one.wav", 1, {"artist": "someone"})
    return TrackChunk(track, {"size": 10, "mtime": 1.5}, 3, rng.standard_normal((527360, 2)).astype(np.float32),
                      True, 1234567)


def test_chunks_survive_the_coder_and_their_size_is_estimated_without_encoding():
    rng = np.random.default_rng(0)
    chunk = _chunk(rng)
    separated = SeparatedChunk(chunk.track, chunk.fingerprint, 3, rng.standard_normal((2, 527360, 2)).astype(
        np.float32), True, 1234567)
    coder = ChunkCoder()
    for element in (chunk, separated):
        encoded = coder.encode(element)
        decoded = coder.decode(encoded)
        assert type(decoded) is type(element)
        estimate = coder.estimate_size(element)
        assert abs(estimate - len(encoded)) < 0.01 * len(encoded), (type(element).__name__, estimate, len(encoded))
    again = coder.decode(coder.encode(chunk))
    assert again.track == chunk.track and again.fingerprint == chunk.fingerprint
    assert np.array_equal(again.samples, chunk.samples)


def test_keyed_chunk_collections_get_the_chunk_coder():
    coder = beam.coders.registry.get_coder(convert_to_beam_type(KeyedTrackChunk))  # as pipelines convert hints
    assert isinstance(coder, beam.coders.TupleCoder) and isinstance(coder.coders()[1], ChunkCoder)
