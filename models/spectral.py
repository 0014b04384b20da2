"""Spleeter's spectral maths as pure functions on numpy arrays.

Conventions: waveforms are float32 ``[n_samples, 2]``; STFTs are complex64
``[frames, bins, 2]`` with ``bins = frame_length // 2 + 1``; magnitudes and
masks are float32 with the same frame-major layout. A periodic Hann window is
used for analysis and synthesis, as in Spleeter (``tf.signal.stft`` and
``inverse_stft`` with ``hann_window(periodic=True)``).
"""

from __future__ import annotations

import functools

import numpy as np

from models.config import SeparationConfig

# Spleeter scales its inverse STFT by 2/3: the sum of squared periodic Hann
# windows at 75 % overlap is 3/2 everywhere, so this makes analysis+synthesis
# the identity.
WINDOW_COMPENSATION = 2.0 / 3.0
EPSILON = 1e-10


def hann(length: int) -> np.ndarray:
    """Periodic Hann window, float32 ``[length]``."""
    n = np.arange(length, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _tf_stft(frame_length: int, frame_step: int):
    import tensorflow as tf

    def periodic_hann(length, dtype):
        return tf.signal.hann_window(length, periodic=True, dtype=dtype)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32)])
    def transform(channels):
        return tf.signal.stft(channels, frame_length, frame_step, window_fn=periodic_hann)

    return transform


def stft(segment: np.ndarray, frame_length: int, frame_step: int) -> np.ndarray:
    """Frames of ``segment`` [n_samples, 2] at every ``frame_step``, windowed and transformed.

    Returns complex64 ``[frames, bins, 2]`` with ``frames = 1 + (n - frame_length) // frame_step``.
    TensorFlow's ``tf.signal.stft``, as in Spleeter: the same numbers, three
    times faster than numpy's FFT, and run on all cores. The result is a view of
    a ``[2, frames, bins]`` array.
    """
    channels = np.ascontiguousarray(segment.T, dtype=np.float32)
    return _tf_stft(frame_length, frame_step)(channels).numpy().transpose(1, 2, 0)


def analyze(segment: np.ndarray, config: SeparationConfig) -> tuple[np.ndarray, np.ndarray]:
    """Segment ``[span, 2]`` -> (STFT ``[T, bins, 2]`` complex64, the network's input: magnitude ``[T, F, 2]``)."""
    spectrum = stft(segment, config.frame_length, config.frame_step)
    return spectrum, np.abs(spectrum[:, : config.F, :])


def istft(spectrum: np.ndarray, frame_length: int, frame_step: int) -> np.ndarray:
    """Windowed overlap-add of the inverse frames of ``spectrum`` [..., frames, bins, 2].

    Returns float32 ``[..., (frames - 1) * frame_step + frame_length, 2]``, scaled
    by ``WINDOW_COMPENSATION``; samples near either end lack some of their
    overlapping frames and are completed by the neighbouring chunks. Leading
    axes (instruments) are transformed together.
    """
    *lead, n_frames, _, channels = spectrum.shape
    # Transform along the last axis of a [..., frames, 2, bins] layout (contiguous
    # when it comes from apply_masks).
    frames = np.fft.irfft(spectrum.swapaxes(-1, -2), n=frame_length, axis=-1).astype(np.float32, copy=False)
    frames *= hann(frame_length) * np.float32(WINDOW_COMPENSATION)
    overlap = frame_length // frame_step
    # Split every frame into `overlap` hop-sized pieces: piece q of frame j lands
    # on hop j + q, so the overlap-add is `overlap` shifted slice additions.
    pieces = frames.reshape(*lead, n_frames, channels, overlap, frame_step)
    out = np.zeros((*lead, n_frames + overlap - 1, channels, frame_step), np.float32)
    for q in range(overlap):
        out[..., q:q + n_frames, :, :] += pieces[..., q, :]
    return out.swapaxes(-1, -2).reshape(*lead, -1, channels)


def ratio_masks(estimates: np.ndarray, config: SeparationConfig) -> np.ndarray:
    """Spleeter's soft masks from the network's spectrogram estimates, below ``F``.

    ``estimates``: float32 ``[n_instruments, ..., F, 2]``; returns the same shape:
    ``(s_i^p + eps/n) / (sum_j s_j^p + eps)``. ``apply_masks`` extends them above ``F``.
    """
    n = estimates.shape[0]
    powered = estimates ** np.float32(config.separation_exponent)
    masks = powered + np.float32(EPSILON / n)
    masks /= powered.sum(axis=0) + np.float32(EPSILON)
    return masks


def apply_masks(spectrum: np.ndarray, masks: np.ndarray, extension: str = "zeros") -> np.ndarray:
    """``spectrum`` [frames, bins, 2] times ``masks`` [n, frames, F, 2] extended to all bins.

    Above ``F`` the mask is zero (``"zeros"``) or its mean over the band
    (``"average"``), as Spleeter's ``mask_extension``. Returns complex64
    ``[n, frames, bins, 2]``, laid out (``[n, frames, 2, bins]`` in memory) for ``istft``.
    """
    n, frames, F, channels = masks.shape
    bins = spectrum.shape[-2]
    out = np.empty((n, frames, channels, bins), np.complex64)
    source = spectrum.swapaxes(-1, -2)
    np.multiply(source[..., :F], masks.swapaxes(-1, -2), out=out[..., :F])
    if extension == "average":
        np.multiply(source[..., F:], masks.mean(axis=-2)[..., None], out=out[..., F:])
    else:
        out[..., F:] = 0
    return out.swapaxes(-1, -2)


def synthesize(spectrum: np.ndarray, estimates: np.ndarray, config: SeparationConfig) -> np.ndarray:
    """One chunk's stems ``[n, span, 2]``: its STFT ``[T, bins, 2]`` masked by the estimates ``[n, T, F, 2]``, inverted."""
    masked = apply_masks(spectrum, ratio_masks(estimates, config), config.mask_extension)
    return istft(masked, config.frame_length, config.frame_step)
