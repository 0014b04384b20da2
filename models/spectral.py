"""Spleeter's spectral maths, written once, in TensorFlow ops.

The same functions run eagerly on numpy arrays (host callers: ``--mwf``, the
oracle, training crops; call ``.numpy()`` on the result) and inside the one
TensorFlow function that separates a batch of chunks on the model's device
(``Separator.separate_chunks``, models/chunking.py), where TensorFlow fuses
them with the network and runs them on all cores, or on the GPU.

Conventions: waveforms are float32 ``[..., n_samples, 2]``; STFTs are complex64
``[..., 2, frames, bins]`` with ``bins = frame_length // 2 + 1`` (channel-major, as
``tf.signal`` lays them out); magnitudes, the network's estimates and masks are
float32 ``[..., frames, F, 2]`` (the network's layout). A periodic Hann window is
used for analysis and synthesis, as in Spleeter (``tf.signal.stft`` and
``inverse_stft`` with ``hann_window(periodic=True)``).
"""

from __future__ import annotations

from models.config import SeparationConfig

# Spleeter scales its inverse STFT by 2/3: the sum of squared periodic Hann
# windows at 75 % overlap is 3/2 everywhere, so this makes analysis+synthesis
# the identity.
WINDOW_COMPENSATION = 2.0 / 3.0
EPSILON = 1e-10


def _tf():
    # Imported on first use, so that importing this module (the CLI's help, the
    # layer test) does not load TensorFlow.
    import tensorflow as tf

    return tf


def _periodic_hann(length, dtype):
    return _tf().signal.hann_window(length, periodic=True, dtype=dtype)


def stft(waveform, frame_length: int, frame_step: int):
    """Frames of ``waveform`` [..., n_samples, 2] at every ``frame_step``, windowed and transformed.

    Returns complex64 ``[..., 2, frames, bins]`` with ``frames = 1 + (n - frame_length) // frame_step``.
    """
    tf = _tf()
    channels = tf.linalg.matrix_transpose(tf.convert_to_tensor(waveform, tf.float32))
    return tf.signal.stft(channels, frame_length, frame_step, window_fn=_periodic_hann)


def magnitude(spectrum, bins: int | None = None):
    """``|spectrum|`` of the lowest ``bins`` bins (all by default), in the network's layout ``[..., frames, bins, 2]``."""
    tf = _tf()
    if bins is not None:
        spectrum = spectrum[..., :bins]
    rank = len(spectrum.shape)
    return tf.transpose(tf.abs(spectrum), [*range(rank - 3), rank - 2, rank - 1, rank - 3])


def analyze(samples, config: SeparationConfig):
    """Segments ``[..., span, 2]`` -> (STFT ``[..., 2, T, bins]``, the network's input: magnitude ``[..., T, F, 2]``)."""
    spectrum = stft(samples, config.frame_length, config.frame_step)
    return spectrum, magnitude(spectrum, config.F)


def istft(spectrum, frame_length: int, frame_step: int):
    """Windowed overlap-add of the inverse frames of ``spectrum`` [..., 2, frames, bins].

    Returns float32 ``[..., (frames - 1) * frame_step + frame_length, 2]``, scaled
    by ``WINDOW_COMPENSATION``; samples near either end lack some of their
    overlapping frames and are completed by the neighbouring chunks.
    """
    tf = _tf()
    waveform = tf.signal.inverse_stft(spectrum, frame_length, frame_step, window_fn=_periodic_hann)
    return tf.linalg.matrix_transpose(waveform * WINDOW_COMPENSATION)


def ratio_masks(estimates, config: SeparationConfig):
    """Spleeter's soft masks from the network's spectrogram estimates.

    ``estimates``: float32 ``[n_instruments, ..., F, 2]``; returns the same shape:
    ``(s_i^p + eps/n) / (sum_j s_j^p + eps)``. ``apply_masks`` extends them above ``F``.
    """
    tf = _tf()
    n = estimates.shape[0]
    powered = tf.pow(tf.convert_to_tensor(estimates, tf.float32), config.separation_exponent)
    return (powered + EPSILON / n) / (tf.reduce_sum(powered, axis=0) + EPSILON)


def apply_masks(spectrum, masks, extension: str = "zeros"):
    """``spectrum`` [..., 2, frames, bins] times ``masks`` [n, ..., frames, F, 2] extended to all bins.

    Above ``F`` the mask is zero (``"zeros"``) or its mean over the band
    (``"average"``), as Spleeter's ``mask_extension``. Returns complex64
    ``[n, ..., 2, frames, bins]``.
    """
    tf = _tf()
    rank = len(masks.shape)
    masks = tf.transpose(masks, [*range(rank - 3), rank - 1, rank - 3, rank - 2])  # [n, ..., 2, frames, F]
    F, bins = masks.shape[-1], spectrum.shape[-1]
    spectrum = spectrum[tf.newaxis]
    masked = tf.complex(masks, tf.zeros_like(masks)) * spectrum[..., :F]
    if F == bins:
        return masked
    if extension == "average":
        mean = tf.reduce_mean(masks, axis=-1, keepdims=True)
        return tf.concat([masked, tf.complex(mean, tf.zeros_like(mean)) * spectrum[..., F:]], axis=-1)
    return tf.pad(masked, [[0, 0]] * (rank - 1) + [[0, bins - F]])


def group_masks(masks, groups):
    """The masks ``[n, ...]`` of ``groups`` (tuples of instrument indices): each group's masks summed, ``[len(groups), ...]``.

    A group of one is that instrument's mask itself, so its stem is the same as in a run of every stem.
    """
    tf = _tf()
    return tf.stack([masks[group[0]] if len(group) == 1 else tf.add_n([masks[i] for i in group])
                     for group in groups])


def synthesize(spectrum, estimates, config: SeparationConfig, groups=None):
    """Chunks' stems ``[n, ..., span, 2]``: their STFT ``[..., 2, T, bins]`` masked by the estimates ``[n, ..., T, F, 2]``, inverted.

    ``groups`` (``StemSelection.groups``): only those stems, each the mix masked by its instruments' masks
    summed, ``[len(groups), ..., span, 2]``; the other instruments' masks go no further.
    """
    masks = ratio_masks(estimates, config)
    if groups is not None:
        masks = group_masks(masks, groups)
    masked = apply_masks(spectrum, masks, config.mask_extension)
    return istft(masked, config.frame_length, config.frame_step)
