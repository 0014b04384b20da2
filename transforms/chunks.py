"""The elements that travel between the pipeline's stages."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transforms.manifest import Track


@dataclass
class TrackChunk:
    """One model chunk of a track: ``samples`` float32 ``[span, 2]`` of the padded timeline.

    ``last`` marks the final chunk, which also carries the track length; the
    reassembly step completes a track only when it holds chunks 0..last.
    """

    track: Track
    fingerprint: dict
    index: int
    samples: np.ndarray
    last: bool
    n_samples: int | None


@dataclass
class SeparatedChunk:
    """A chunk after inference: ``stems`` float32 ``[n_instruments, span, 2]``."""

    track: Track
    fingerprint: dict
    index: int
    stems: np.ndarray
    last: bool
    n_samples: int | None


@dataclass
class EstimatedChunk:
    """A chunk after the network: its STFT ``[T, bins, 2]`` and the estimates ``[n, T, F, 2]``.

    Spectrogram-sized: it only ever passes between fused steps of one worker.
    """

    chunk: TrackChunk
    spectrum: np.ndarray
    estimates: np.ndarray
