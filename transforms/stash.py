"""Chunks parked in scratch storage, so that only references cross shuffles (``--fan_out=chunks``).

Runners move large elements badly: Flink's TaskManagers buffer each element
on their Java heap (4.2 MB decoded chunks exhausted a 2 GB TaskManager) and
build one record of a key's grouped values (refused over about 86 MB: a
4.7-minute 2stems track); Dataflow bills every shuffled byte and holds a group
in one worker's memory. So each decoded chunk is written to scratch storage
beside the output (``Layout.scratch``), the inference step reads it and writes
the chunk's stems there too, and only references of a few hundred bytes cross
the shuffles. Reassembly groups a track's references, reads its separated
chunks in order and removes the track's scratch folder once the track is
written or given up.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from models.errors import BeamsplitterError
from transforms.catalogue import storage
from transforms.background import BackgroundDoFn
from transforms.chunks import StashedChunk
from transforms.catalogue.layout import Layout


@dataclass(frozen=True)
class Scratch:
    """One run's scratch storage: ``Layout.scratch(run_id)``."""

    layout: Layout
    run_id: str

    def uri(self, track_id: str, index: int, kind: str) -> str:
        return self.layout.scratch_chunk(self.run_id, track_id, index, kind)

    def save(self, array: np.ndarray, uri: str) -> None:
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        storage.publish_bytes(buffer.getvalue(), uri, "application/octet-stream")

    def load(self, uri: str) -> np.ndarray:
        try:
            return np.load(io.BytesIO(storage.read_bytes(uri)), allow_pickle=False)
        except Exception as exc:
            raise storage.StorageError(f"{uri}: cannot read the scratch chunk ({exc})") from None

    def remove_track(self, track_id: str) -> None:
        """Remove a track's chunks (best effort: a leftover only costs space under scratch/)."""
        try:
            storage.delete_tree(self.layout.scratch_track(self.run_id, track_id))
        except Exception:  # noqa: BLE001 - never fail a written track over its scratch files
            pass


class Stash(BackgroundDoFn):
    """``(key, SeparatedChunk)`` -> ``(track_id, StashedChunk)``; the writes run on threads of their own."""

    workers, in_flight = 2, 4

    def __init__(self, scratch: Scratch):
        self.scratch = scratch

    def work(self, keyed):
        _, chunk = keyed
        track_id = chunk.track.track_id
        uri = self.scratch.uri(track_id, chunk.index, "out")
        error = None
        try:
            self.scratch.save(chunk.stems, uri)
        except BeamsplitterError as exc:
            # Reported by reassembly, which sees every reference of the track.
            error = str(exc)
        return track_id, StashedChunk(chunk.track, chunk.fingerprint, chunk.index, uri, chunk.last,
                                      chunk.n_samples, error)
