"""Spleeter's spectral maths as pure functions on numpy arrays.

Conventions: waveforms are float32 ``[n_samples, 2]``; STFTs are complex64
``[frames, bins, 2]`` with ``bins = frame_length // 2 + 1``; magnitudes and
masks are float32 with the same frame-major layout. A periodic Hann window is
used for analysis and synthesis, as in Spleeter (``tf.signal.stft`` and
``inverse_stft`` with ``hann_window(periodic=True)``).
"""

from __future__ import annotations

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


def stft(segment: np.ndarray, frame_length: int, frame_step: int) -> np.ndarray:
    """Frames of ``segment`` [n_samples, 2] at every ``frame_step``, windowed and transformed.

    Returns complex64 ``[frames, bins, 2]`` with ``frames = 1 + (n - frame_length) // frame_step``.
    """
    frames = np.lib.stride_tricks.sliding_window_view(segment, frame_length, axis=0)[::frame_step]
    windowed = np.ascontiguousarray(frames, dtype=np.float64) * hann(frame_length)  # [frames, 2, L]
    # numpy's float64 FFT is faster than its float32 one; the result is rounded to complex64 like TF's.
    spectrum = np.fft.rfft(windowed, axis=-1).astype(np.complex64)  # [frames, 2, bins]
    return spectrum.transpose(0, 2, 1)


def istft(spectrum: np.ndarray, frame_length: int, frame_step: int) -> np.ndarray:
    """Windowed overlap-add of the inverse frames of ``spectrum`` [..., frames, bins, 2].

    Returns float32 ``[..., (frames - 1) * frame_step + frame_length, 2]``, scaled
    by ``WINDOW_COMPENSATION``; samples near either end lack some of their
    overlapping frames and are completed by the neighbouring chunks. Leading
    axes (instruments) are transformed together.
    """
    *lead, n_frames, _, channels = spectrum.shape
    # Transform along the last axis of a [..., frames, 2, bins] layout: stft()
    # returns its spectra laid out that way, so this view is contiguous and fast.
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


def apply_masks(spectrum: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """``spectrum`` [frames, bins, 2] times ``masks`` [n, frames, bins, 2], laid out for ``istft``."""
    out = np.empty(masks.shape[:-2] + masks.shape[-1:] + masks.shape[-2:-1], np.complex64)
    np.multiply(spectrum.swapaxes(-1, -2), masks.swapaxes(-1, -2), out=out)
    return out.swapaxes(-1, -2)


def ratio_masks(estimates: np.ndarray, config: SeparationConfig) -> np.ndarray:
    """Spleeter's soft masks from the network's spectrogram estimates.

    ``estimates``: float32 ``[n_instruments, ..., F, 2]``. Returns
    ``[n_instruments, ..., bins, 2]``: ``(s_i^p + eps/n) / (sum_j s_j^p + eps)``
    below ``F``; above it zeros or the mean over the band (``mask_extension``).
    """
    n = estimates.shape[0]
    powered = estimates ** np.float32(config.separation_exponent)
    masks = (powered + np.float32(EPSILON / n)) / (powered.sum(axis=0) + np.float32(EPSILON))
    extra = config.n_bins - config.F
    if config.mask_extension == "average":
        extension = np.broadcast_to(masks.mean(axis=-2, keepdims=True), masks.shape[:-2] + (extra, masks.shape[-1]))
    else:
        extension = np.zeros(masks.shape[:-2] + (extra, masks.shape[-1]), np.float32)
    return np.concatenate([masks, extension], axis=-2)
