"""Training crops: where a track's chunks sit, and synchronized random crops of ``T`` frames.

As Spleeter's training set: each track gives ``n_chunks_per_song`` chunks of
``chunk_duration`` seconds (20 s), evenly spread between half-second margins;
each chunk gives crops of ``T`` STFT frames, the same frames cut from the
mixture and from every stem, as magnitude spectrograms below bin ``F``.
Spleeter draws a fresh crop every time it reads a chunk; here a fixed number
is drawn per chunk, from a generator seeded by (seed, track, chunk), so the
same inputs always give the same records, in any order and on any worker.

Augmentation (optional, off by default as in Spleeter's own training) time
stretches by a factor in [0.9, 1.1] and pitch shifts by [-1, 1] semitone by
linear interpolation of the magnitudes, the same draw for every source.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from models import spectral
from models.config import SeparationConfig

MARGIN_S = 0.5
STRETCH = (0.9, 1.1)
SHIFT_SEMITONES = (-1.0, 1.0)


@dataclass(frozen=True)
class CropSampling:
    """How many crops, where, and with what randomness."""

    chunk_duration: float = 20.0
    n_chunks: int = 2
    crops_per_chunk: int = 4
    seed: int = 0
    augment: bool = False


def chunk_spans(n_samples: int, sample_rate: int, chunk_duration: float, n_chunks: int) -> list[tuple[int, int]]:
    """``[start, stop)`` sample ranges of a track's chunks.

    Spleeter's placement: chunk ``k`` of ``n`` starts at ``k * (d - c - 2m) / (n - 1) + m``
    seconds (``d`` the track's duration, ``c`` the chunk's, ``m`` the margin),
    one chunk starts at the centre. A track too short for distinct chunks gives
    one chunk, the whole track, rather than copies of it.
    """
    duration = n_samples / sample_rate
    length = int(round(chunk_duration * sample_rate))
    room = duration - chunk_duration - 2 * MARGIN_S
    if room <= 0 or n_chunks == 1:
        start = max(0, (n_samples - length) // 2)
        return [(start, min(n_samples, start + length))]
    spans = []
    for k in range(n_chunks):
        start = int(round((k * room / (n_chunks - 1) + MARGIN_S) * sample_rate))
        spans.append((start, min(n_samples, start + length)))
    return spans


def n_frames(n_samples: int, config: SeparationConfig) -> int:
    """Whole STFT frames in ``n_samples`` (no padding, as Spleeter's training spectrograms)."""
    if n_samples < config.frame_length:
        return 0
    return 1 + (n_samples - config.frame_length) // config.frame_step


def track_seed(seed: int, track: str, chunk: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(track.encode()), chunk])


def crops(sources: dict[str, np.ndarray], config: SeparationConfig, sampling: CropSampling,
          track: str) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """``(key, {source: [T, F, 2] float32 magnitude})`` for every crop of one track.

    ``sources``: the mixture and each stem, float32 ``[n_samples, 2]``, all the
    same length. Chunks shorter than ``T`` frames (or, with augmentation, than
    the stretched crop) give no crops, as in Spleeter.
    """
    n_samples = len(next(iter(sources.values())))
    for c, (start, stop) in enumerate(chunk_spans(n_samples, config.sample_rate, sampling.chunk_duration, sampling.n_chunks)):
        rng = track_seed(sampling.seed, track, c)
        available = n_frames(stop - start, config)
        for k in range(sampling.crops_per_chunk):
            stretch = rng.uniform(*STRETCH) if sampling.augment else 1.0
            shift = rng.uniform(*SHIFT_SEMITONES) if sampling.augment else 0.0
            # A stretch by `stretch` reads that many times T frames and resamples them to T.
            width = int(round(config.T * stretch))
            if available < width:
                continue
            first = int(rng.integers(0, available - width + 1))
            begin = start + first * config.frame_step
            end = begin + (width - 1) * config.frame_step + config.frame_length
            out = {}
            for name, samples in sources.items():
                magnitude = spectral.magnitude(
                    spectral.stft(samples[begin:end], config.frame_length, config.frame_step)).numpy()
                if sampling.augment:
                    magnitude = pitch_shift(time_stretch(magnitude, config.T), shift)
                out[name] = np.ascontiguousarray(magnitude[:, : config.F, :], dtype=np.float32)
            yield f"{track}/{c}/{k}", out


def _resample_axis(x: np.ndarray, length: int, axis: int) -> np.ndarray:
    """Linear interpolation of ``x`` to ``length`` points along ``axis``, ends aligned."""
    old = x.shape[axis]
    if old == length:
        return x
    position = np.linspace(0.0, old - 1.0, length)
    lower = np.floor(position).astype(int)
    upper = np.minimum(lower + 1, old - 1)
    weight_shape = [1] * x.ndim
    weight_shape[axis] = length
    weight = (position - lower).reshape(weight_shape)
    return np.take(x, lower, axis=axis) * (1 - weight) + np.take(x, upper, axis=axis) * weight


def time_stretch(magnitude: np.ndarray, frames: int) -> np.ndarray:
    """``[t, bins, 2]`` resampled to ``frames`` frames: a stretch by ``frames / t``."""
    return _resample_axis(magnitude, frames, axis=0)


def pitch_shift(magnitude: np.ndarray, semitones: float) -> np.ndarray:
    """``[t, bins, 2]`` with every bin ``b`` moved to ``b * 2^(semitones/12)``; same shape.

    Bins shifted past the top are dropped; the top left empty by a downward
    shift is zero.
    """
    bins = magnitude.shape[1]
    factor = 2.0 ** (semitones / 12.0)
    scaled = _resample_axis(magnitude, max(1, int(round(bins * factor))), axis=1)
    if scaled.shape[1] >= bins:
        return scaled[:, :bins]
    return np.pad(scaled, ((0, 0), (0, bins - scaled.shape[1]), (0, 0)))
