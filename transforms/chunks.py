"""The elements that travel between the pipeline's stages, and their coder."""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass
from typing import Tuple

import apache_beam as beam
import numpy as np

from transforms.catalogue.manifest import Track


@dataclass
class TrackChunk:
    """One model chunk of a track: ``samples`` float32 ``[span, 2]`` of the padded timeline.

    ``last`` marks the final chunk, which also carries the track length; the
    reassembly step completes a track only when it holds chunks 0..last.
    With chunk fan-out the samples wait in scratch storage at ``uri`` instead.
    """

    track: Track
    fingerprint: dict
    index: int
    samples: np.ndarray | None
    last: bool
    n_samples: int | None
    uri: str | None = None


@dataclass
class SeparatedChunk:
    """A chunk after inference: ``stems`` float32 ``[n_instruments, span, 2]``."""

    track: Track
    fingerprint: dict
    index: int
    stems: np.ndarray
    last: bool
    n_samples: int | None


@dataclass(frozen=True)
class StashedChunk:
    """A separated chunk's stems written to scratch storage at ``uri`` (or ``error``, why not)."""

    track: Track
    fingerprint: dict
    index: int
    uri: str
    last: bool
    n_samples: int | None
    error: str | None = None


class ChunkCoder(beam.coders.Coder):
    """Chunks pickled whole; their size estimated from their arrays, without encoding them.

    Runners sample the elements of every step's output for size metrics, by
    encoding them unless the coder can tell: for chunks of several MB that
    sampling alone cost about half a second of CPU per 6 minutes of audio.
    """

    def encode(self, chunk) -> bytes:
        return pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, data: bytes):
        return pickle.loads(data)

    def is_deterministic(self) -> bool:
        return False

    def estimate_size(self, chunk) -> int:
        return 512 + sum(value.nbytes if isinstance(value, np.ndarray) else self.estimate_size(value)
                         for value in vars(chunk).values()
                         if isinstance(value, np.ndarray) or dataclasses.is_dataclass(value))


for _kind in (TrackChunk, SeparatedChunk):
    beam.coders.registry.register_coder(_kind, ChunkCoder)

#: Type hints of the keyed chunk collections, ``((track_id, index), chunk)``, so that runners use ChunkCoder.
KeyedTrackChunk = Tuple[Tuple[str, int], TrackChunk]
KeyedSeparatedChunk = Tuple[Tuple[str, int], SeparatedChunk]
KeyedStashedChunk = Tuple[str, StashedChunk]
