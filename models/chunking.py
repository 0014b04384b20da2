"""Separating a waveform stream chunk by chunk: the one separation routine, for every runner.

Spleeter prepends ``frame_length`` zeros to the track, takes STFT frames every
``frame_step`` samples, zero-pads the frame count to a multiple of ``T`` and
runs the network on non-overlapping blocks of ``T`` frames. Each block (a
*chunk*) depends only on its own frames, so the whole-track result can be
computed one chunk at a time:

* chunk ``c`` reads padded samples ``[c*step, c*step + span)``, where
  ``step = T*frame_step`` and ``span = step + frame_length - frame_step``:
  consecutive chunks share ``frame_length - frame_step`` samples, the part of
  the last frames that reaches into the next chunk;
* its inverse STFT covers the same ``span`` samples; its last
  ``frame_length - frame_step`` samples are incomplete and are added to the
  head of the next chunk's (overlap-add across the chunk border);
* frames past the end of the track see only zeros and contribute nothing, so
  treating the track as followed by endless silence changes no sample.

The output is cropped back to ``[frame_length, frame_length + n_samples)`` of
the padded timeline, as Spleeter does.

A chunk goes through five stages, each a function of arrays:

    segments            waveform blocks [n, 2]      -> Segment: samples [span, 2]
    spectral.analyze    samples [B, span, 2]        -> STFT [B, 2, T, bins], magnitude [B, T, F, 2]
    estimate            magnitudes [B, T, F, 2]     -> estimates [n_instruments, B, T, F, 2]  (the network)
    spectral.synthesize STFT, estimates             -> stems [n_instruments, B, span, 2]
    OverlapAdd.add      stems, in chunk order       -> the samples that became final

The middle three are TensorFlow ops, strung by ``separate_chunks``: the model
runs them as one TensorFlow function on its device (``Separator.separate_chunks``),
so only waveforms cross into and out of it, and TensorFlow spreads all three
over every core (or runs them on the GPU). Segmenting and overlap-add stay on
the host. ``separate_stream`` strings the stages for an in-memory run;
``beamsplitter separate`` (pipeline/separate.py) and the Beam steps
(transforms/) call the same stages, only on other threads and workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from models import spectral
from models.config import SeparationConfig


@dataclass(frozen=True)
class ChunkGeometry:
    """Where chunks sit on the padded timeline; all figures in samples."""

    frame_length: int
    frame_step: int
    T: int

    @classmethod
    def of(cls, config: SeparationConfig) -> "ChunkGeometry":
        return cls(config.frame_length, config.frame_step, config.T)

    @property
    def lead(self) -> int:
        """Zeros prepended to the track."""
        return self.frame_length

    @property
    def step(self) -> int:
        return self.T * self.frame_step

    @property
    def overlap(self) -> int:
        return self.frame_length - self.frame_step

    @property
    def span(self) -> int:
        return self.step + self.overlap

    def n_chunks(self, n_samples: int) -> int:
        """Chunks Spleeter runs for a track of ``n_samples`` (its padded STFT, ``pad_end=True``)."""
        n_frames = math.ceil((n_samples + self.lead) / self.frame_step)
        return math.ceil(n_frames / self.T)


@dataclass
class Segment:
    """The padded samples one chunk reads: ``samples`` is float32 ``[span, 2]``."""

    index: int
    samples: np.ndarray
    last: bool = False
    #: The track's length in samples, known once the stream has ended (set on the last segment).
    n_samples: int | None = None


def segments(blocks: Iterable[np.ndarray], geometry: ChunkGeometry) -> Iterator[Segment]:
    """Cut a stream of ``[n, 2]`` blocks into chunk segments, holding at most two in memory.

    One segment is held back so that the last one can be flagged with the
    track length.
    """
    buffer = np.zeros((geometry.lead, 2), np.float32)
    n_samples = 0
    index = 0
    held: Segment | None = None
    for block in blocks:
        n_samples += len(block)
        buffer = np.concatenate([buffer, block])
        while len(buffer) >= geometry.span:
            if held is not None:
                yield held
            held = Segment(index, buffer[:geometry.span].copy())
            buffer = buffer[geometry.step:]
            index += 1
    total = geometry.n_chunks(n_samples)
    while index < total:
        if held is not None:
            yield held
        padded = np.zeros((geometry.span, 2), np.float32)
        padded[:len(buffer)] = buffer[:geometry.span]
        held = Segment(index, padded)
        buffer = buffer[geometry.step:]
        index += 1
    if held is not None:
        held.last, held.n_samples = True, n_samples
        yield held


class OverlapAdd:
    """Joins per-chunk syntheses ``[..., span, 2]``, in chunk order, into the cropped track.

    ``add`` returns the samples that became final: the chunk's first ``step``
    padded samples, with the previous chunk's tail added and the lead and the
    padding past ``n_samples`` removed.
    """

    def __init__(self, geometry: ChunkGeometry):
        self.geometry = geometry
        self.next_index = 0
        self._tail: np.ndarray | None = None

    def add(self, index: int, synthesis: np.ndarray, n_samples: int | None = None) -> np.ndarray:
        g = self.geometry
        if index != self.next_index:
            raise ValueError(f"chunk {index} arrived, chunk {self.next_index} expected")
        self.next_index += 1
        synthesis = synthesis.copy()
        if self._tail is not None:
            synthesis[..., :g.overlap, :] += self._tail
        self._tail = synthesis[..., g.step:, :]
        start = index * g.step  # padded timeline
        final = synthesis[..., :g.step, :]
        lo = max(0, g.lead - start)
        hi = g.step if n_samples is None else max(lo, min(g.step, g.lead + n_samples - start))
        return final[..., lo:hi, :]


def separate_chunks(samples, estimate: Callable, config: SeparationConfig, groups=None):
    """The analyze, estimate and synthesize stages of a batch of chunks: samples ``[B, span, 2]`` -> stems ``[n_instruments, B, span, 2]``
    (with ``groups``, a ``StemSelection``'s, the stems of the selection: ``[len(groups), B, span, 2]``).

    ``estimate(magnitudes [B, T, F, 2])`` gives the estimates ``[n_instruments, B, T, F', 2]``
    (``F' = F`` from the network; the oracle gives every bin). TensorFlow ops:
    eager on numpy arrays, or traced into one function (``Separator``).
    """
    spectrum, magnitudes = spectral.analyze(samples, config)
    return spectral.synthesize(spectrum, estimate(magnitudes), config, groups)


def separate_stream(stream: Iterable[Segment], separate: Callable[[list[Segment]], np.ndarray],
                    batch_size: int = 1) -> Iterator[tuple[Segment, np.ndarray]]:
    """Each segment of ``stream`` with its stems ``[n_instruments, span, 2]``, in order.

    ``separate(batch)`` gives the stems ``[n_instruments, B, span, 2]`` of the
    ``B`` segments of ``batch`` (``separate_chunks`` of their samples); it is called
    once per batch, batches in stream order. A batch holds up to ``batch_size``
    segments and never reaches past a track's last one.
    """
    batch: list[Segment] = []
    for segment in stream:
        batch.append(segment)
        if len(batch) == batch_size or segment.last:
            stems = np.asarray(separate(batch))
            for i, s in enumerate(batch):
                yield s, stems[:, i]
            batch = []


def overlap_add(chunks: Iterable[tuple[Segment, np.ndarray]], geometry: ChunkGeometry) -> np.ndarray:
    """One track's ``(segment, stems [..., span, 2])``, in chunk order, joined into ``[..., n_samples, 2]``."""
    joiner = OverlapAdd(geometry)
    return np.concatenate([joiner.add(s.index, stems, s.n_samples) for s, stems in chunks], axis=-2)
