"""Separated chunks parked in scratch storage between inference and reassembly (``--fan_out=chunks``).

A runner that groups a track's chunks builds one record of all of them: Flink
refuses records over about 86 MB (a 4.7-minute 2stems track), Dataflow holds
the group in one worker's memory. So the inference step writes each chunk's
stems to ``Layout.scratch`` beside the output and passes on only a reference
of a few hundred bytes; reassembly groups the references, reads the chunks in
order and deletes them once the track is written or given up.
"""

from __future__ import annotations

import io

import apache_beam as beam
import numpy as np

from models.errors import BeamsplitterError
from transforms import storage
from transforms.background import BackgroundDoFn
from transforms.chunks import StashedChunk
from transforms.layout import Layout


class Stash(BackgroundDoFn):
    """``(key, SeparatedChunk)`` -> ``(track_id, StashedChunk)``; the writes run on threads of their own."""

    workers, in_flight = 2, 4

    def __init__(self, layout: Layout, run_id: str):
        self.layout, self.run_id = layout, run_id

    def work(self, keyed):
        _, chunk = keyed
        track_id = chunk.track.track_id
        uri = self.layout.scratch_chunk(self.run_id, track_id, chunk.index)
        error = None
        try:
            buffer = io.BytesIO()
            np.save(buffer, chunk.stems, allow_pickle=False)
            storage.publish_bytes(buffer.getvalue(), uri, "application/octet-stream")
        except BeamsplitterError as exc:
            # Reported by reassembly, which sees every reference of the track.
            error = str(exc)
        return track_id, StashedChunk(chunk.track, chunk.fingerprint, chunk.index, uri, chunk.last,
                                      chunk.n_samples, error)


def load(ref: StashedChunk) -> np.ndarray:
    """The stems ``[n_instruments, span, 2]`` of a stashed chunk."""
    if ref.error:
        raise storage.StorageError(ref.error)
    try:
        return np.load(io.BytesIO(storage.read_bytes(ref.uri)), allow_pickle=False)
    except Exception as exc:
        raise storage.StorageError(f"{ref.uri}: cannot read the separated chunk ({exc})") from None


def drop(refs: list[StashedChunk]) -> None:
    """Delete the stashed chunks (best effort: a leftover only costs space under scratch/)."""
    try:
        storage.delete([ref.uri for ref in refs if not ref.error])
    except Exception:  # noqa: BLE001 - never fail a written track over its scratch files
        pass
