"""BSSEval v4 source separation metrics as pure functions on numpy arrays.

Conventions: ``references`` and ``estimates`` are float arrays ``[n_sources,
n_samples, n_channels]`` at one sample rate; estimate ``j`` is scored against
reference ``j`` (no permutation search). Metrics are in dB, float64 arrays
``[n_sources, n_frames]``.

The measure is BSSEval's "images" decomposition (Vincent, Gribonval and
Févotte, 2006) in its version 4 (Liutkus, Stöter and Ito, SiSEC 2018), the
convention of the ``museval`` package:

* two multichannel FIR filters of ``L = 512`` taps per source, fitted by least
  squares *once over the whole track* (time-invariant): ``P_own`` maps the
  channels of reference ``j`` onto estimate ``j``, ``P_all`` maps the channels
  of every reference onto it;
* the track is then cut into frames (1 s windows, 1 s hop by default) and in
  each frame the filters are applied to that frame's references alone (each
  output runs ``L - 1`` samples past the frame). With ``s`` reference ``j``,
  ``ŝ`` estimate ``j``, both zero-padded the same way::

      SDR = 10 log10 |s|² / |ŝ - s|²                  distortion of every kind
      ISR = 10 log10 |s|² / |P_own s - s|²            spatial (filtering) distortion
      SIR = 10 log10 |P_own s|² / |P_all - P_own|²    interference of the other sources
      SAR = 10 log10 |P_all|² / |ŝ - P_all|²          artifacts

A frame in which any reference or any estimate is silent (its channels sum to
exactly zero at every sample, museval's test) is NaN for every source; a source
that is silent over the whole track (museval refuses those) makes every frame
NaN. Aggregation follows SiSEC: the median over a track's frames, NaN frames
left out, then the median over tracks.

References that are exactly linearly dependent, as files hold them (a
dual-mono stem, a stem that repeats another, bit for bit) have many
least-squares filters but one projection: one of them is taken, and the
figures are museval's. References dependent only up to rounding (unquantized
synthetic tones) have no reproducible figures: museval's own move by decibels
when the channels are swapped.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np
import scipy.fft
import scipy.linalg
import scipy.linalg.lapack

FILTER_LENGTH = 512
METRICS = ("sdr", "isr", "sir", "sar")
# Samples per block when correlating whole tracks: the correlations are summed
# block by block in the frequency domain, so memory does not grow with the track.
CORRELATION_BLOCK = 1 << 16


@dataclass(frozen=True)
class Metrics:
    """BSSEval v4 of one track: each metric in dB, ``[n_sources, n_frames]``, NaN for skipped frames.

    Frame ``t`` covers samples ``[t * hop, t * hop + window)``.
    """

    sdr: np.ndarray
    isr: np.ndarray
    sir: np.ndarray
    sar: np.ndarray
    window: int
    hop: int

    @property
    def n_frames(self) -> int:
        return self.sdr.shape[1]

    def frame_starts(self) -> np.ndarray:
        """First sample of every frame, ``[n_frames]``."""
        return np.arange(self.n_frames) * self.hop

    def values(self) -> np.ndarray:
        """All four metrics stacked in ``METRICS`` order: ``[4, n_sources, n_frames]``."""
        return np.stack([getattr(self, name) for name in METRICS])


def frame_bounds(n_samples: int, window: int, hop: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of every frame: full windows only (a shorter tail is left out),
    or one frame over the whole signal when it is no longer than ``window``."""
    if window >= n_samples:
        return [(0, n_samples)]
    count = (n_samples - window + hop) // hop
    return [(t * hop, t * hop + window) for t in range(count)]


def bss_eval(references: np.ndarray, estimates: np.ndarray, window: int = 44100, hop: int = 44100,
             filter_length: int = FILTER_LENGTH) -> Metrics:
    """BSSEval v4 metrics of ``estimates`` against ``references``, both ``[n_sources, n_samples, n_channels]``.

    ``window`` and ``hop`` are in samples (one second each at 44.1 kHz, the
    SiSEC setting); ``filter_length`` is the taps of the distortion filters.
    """
    references = np.asarray(references, np.float64)
    estimates = np.asarray(estimates, np.float64)
    if references.ndim != 3 or references.shape != estimates.shape:
        raise ValueError(f"references {references.shape} and estimates {estimates.shape} must both be "
                         "[n_sources, n_samples, n_channels]")
    if window <= 0 or hop <= 0 or filter_length <= 0:
        raise ValueError("window, hop and filter_length must be positive")
    n_sources, n_samples, _ = references.shape
    bounds = frame_bounds(n_samples, int(window), int(hop))
    out = np.full((4, n_sources, len(bounds)), np.nan)
    if not (_silent(references) or _silent(estimates)):
        filters = _Filters.fit(references, estimates, filter_length)
        responses: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # by FFT size: one for all full frames
        for t, (start, stop) in enumerate(bounds):
            ref, est = references[:, start:stop], estimates[:, start:stop]
            if not (_silent(ref) or _silent(est)):
                size = scipy.fft.next_fast_len(stop - start + filter_length - 1, real=True)
                if size not in responses:
                    responses[size] = filters.spectra(size)
                out[:, :, t] = _frame_metrics(ref, est, filter_length, size, *responses[size])
    return Metrics(*out, window=int(window), hop=int(hop))


def nanmedian(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """Median along ``axis`` without the NaNs; NaN where there is nothing else (and no warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(np.asarray(values, np.float64), axis=axis)


def median_over_frames(metrics: Metrics) -> dict[str, np.ndarray]:
    """SiSEC's per-track figure: each metric's median over the track's frames, ``[n_sources]``."""
    return {name: nanmedian(getattr(metrics, name), axis=-1) for name in METRICS}


def median_over_tracks(per_track: np.ndarray) -> np.ndarray:
    """SiSEC's per-source figure from per-track medians ``[n_tracks, ...]``: their median over tracks."""
    return nanmedian(per_track, axis=0)


def _silent(sources: np.ndarray) -> bool:
    """Whether any source's channels sum to exactly zero at every sample (museval's silence test)."""
    return bool(np.any(np.all(sources.sum(axis=2) == 0, axis=1)))


@dataclass(frozen=True)
class _Filters:
    """The time-invariant distortion filters of a track.

    ``all``: ``[n_sources (reference), n_channels (in), L, n_sources (estimate), n_channels (out)]``;
    ``own``: ``[n_sources, n_channels (in), L, n_channels (out)]``, reference j onto estimate j.
    """

    all: np.ndarray
    own: np.ndarray

    @classmethod
    def fit(cls, references: np.ndarray, estimates: np.ndarray, length: int) -> "_Filters":
        n_sources, _, n_channels = references.shape
        channels = n_sources * n_channels
        refs = references.transpose(0, 2, 1).reshape(channels, -1)
        ests = estimates.transpose(0, 2, 1).reshape(channels, -1)
        r = _correlations(refs, np.concatenate([refs, ests]), length - 1)
        # Right-hand sides, row (p, a), column (estimate channel): <ref_p(. - a), est> = r_p,est[a].
        rhs = r[:, channels:, length - 1:].transpose(0, 2, 1).reshape(channels * length, channels)
        own = np.empty((n_sources, n_channels, length, n_channels))
        for j in range(n_sources):
            mine = slice(j * n_channels, (j + 1) * n_channels)
            rows = slice(j * n_channels * length, (j + 1) * n_channels * length)
            own[j] = _least_squares(partial(_gram, r[mine, mine], length), rhs[rows, mine]).reshape(
                n_channels, length, n_channels)
        all_ = _least_squares(partial(_gram, r[:, :channels], length), rhs)
        return cls(all_.reshape(n_sources, n_channels, length, n_sources, n_channels), own)

    def spectra(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Frequency responses at FFT ``size``: ``all`` as ``[n_src * n_ch (in), n_src * n_ch (out), bins]``,
        ``own`` as ``[n_src, n_ch (in), n_ch (out), bins]``."""
        n_sources, n_channels, length = self.all.shape[:3]
        all_ = scipy.fft.rfft(self.all, n=size, axis=2).transpose(0, 1, 3, 4, 2)
        own = scipy.fft.rfft(self.own, n=size, axis=2).transpose(0, 1, 3, 2)
        return all_.reshape(n_sources * n_channels, n_sources * n_channels, -1), own


def _gram(r: np.ndarray, length: int) -> np.ndarray:
    """Gram matrix of reference channels delayed by 0 to ``length - 1`` samples, from their correlations
    ``r`` (``_correlations``, ``[P, P, 2 * length - 1]``): row ``(p, a)``, column ``(q, b)`` holds
    ``<ref_p(. - a), ref_q(. - b)> = r_pq[a - b]``; ``[P * length, P * length]``."""
    channels = len(r)
    lags = np.arange(length)[:, None] - np.arange(length)[None, :] + length - 1
    gram = np.empty((channels, length, channels, length))
    for p in range(channels):
        for q in range(channels):
            gram[p, :, q, :] = r[p, q][lags]
    return gram.reshape(channels * length, channels * length)


def _least_squares(gram: Callable[[], np.ndarray], rhs: np.ndarray) -> np.ndarray:
    """Filters ``x`` that fit ``gram() @ x = rhs`` in the least-squares sense; ``gram`` builds the
    matrix, a second time only when the first is found singular."""
    # museval solves with a tiny ridge and, when that finds the matrix singular, falls back to least
    # squares. A channel silent throughout needs only the ridge; channels that carry one signal bit for
    # bit (a dual-mono stem, a stem that repeats another) make the matrix exactly singular, and the
    # filters are no longer unique: a "left minus right" filter can be added to any of them, and it
    # projects to nothing. Every least-squares solution then gives the same figures; pivoted Cholesky
    # finds one (the independent delayed channels, zero taps for the rest) at the cost of the solve,
    # where museval's minimum-norm one takes some twenty times as long.
    matrix = gram()
    matrix.flat[::len(matrix) + 1] += np.finfo(np.float64).eps
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        factors = scipy.linalg.lu_factor(matrix, overwrite_a=True, check_finite=False)
    if np.all(factors[0].diagonal() != 0):
        return scipy.linalg.lu_solve(factors, rhs, check_finite=False)
    del matrix, factors
    factor, pivots, rank, _ = scipy.linalg.lapack.dpstrf(gram(), lower=0, overwrite_a=1)
    kept, upper = pivots[:rank] - 1, factor[:rank, :rank]
    solution = np.zeros_like(rhs)
    solution[kept] = scipy.linalg.solve_triangular(
        upper, scipy.linalg.solve_triangular(upper, rhs[kept], trans="T", check_finite=False), check_finite=False)
    return solution


def _correlations(x: np.ndarray, y: np.ndarray, max_lag: int) -> np.ndarray:
    """``r[p, q, k + max_lag] = sum_n x[p, n] y[q, n + k]`` for ``|k| <= max_lag``.

    ``x``: ``[P, n]``, ``y``: ``[Q, n]``; returns ``[P, Q, 2 * max_lag + 1]``.
    Each block of ``x`` meets the part of ``y`` it reaches at those lags; the
    cross-spectra of all blocks add up before a single inverse FFT.
    """
    n = x.shape[1]
    block = min(CORRELATION_BLOCK, n)
    size = scipy.fft.next_fast_len(block + 2 * max_lag, real=True)
    y = np.pad(y, ((0, 0), (max_lag, max_lag)))
    total = np.zeros((x.shape[0], y.shape[0], size // 2 + 1), np.complex128)
    for start in range(0, n, block):
        xs = np.conj(scipy.fft.rfft(x[:, start:start + block], n=size, axis=1))
        ys = scipy.fft.rfft(y[:, start:start + block + 2 * max_lag], n=size, axis=1)
        for p in range(len(xs)):
            total[p] += xs[p] * ys
    return scipy.fft.irfft(total, n=size, axis=2)[:, :, :2 * max_lag + 1]


def _frame_metrics(ref: np.ndarray, est: np.ndarray, length: int, size: int, all_f: np.ndarray,
                   own_f: np.ndarray) -> np.ndarray:
    """``[4, n_sources]``: SDR, ISR, SIR, SAR of one frame.

    ``ref`` and ``est``: ``[n_src, n, n_ch]``; ``all_f`` and ``own_f``: the
    filters' responses (``_Filters.spectra``) at FFT ``size``, at least ``n + length - 1``.
    """
    n_sources, n, n_channels = ref.shape
    padded = n + length - 1
    ref_f = scipy.fft.rfft(ref, n=size, axis=1).transpose(0, 2, 1)  # [src, ch, bins]
    flat = ref_f.reshape(n_sources * n_channels, -1)
    mixed = np.zeros(all_f.shape[1:], np.complex128)  # [src * ch (out), bins]
    for p in range(len(flat)):
        mixed += flat[p] * all_f[p]
    own = np.einsum("scf,scdf->sdf", ref_f, own_f)
    # Back to [src, samples, ch], each output L - 1 samples longer than the frame.
    p_all = scipy.fft.irfft(mixed, n=size, axis=-1)[:, :padded].reshape(n_sources, n_channels, padded)
    p_all = p_all.transpose(0, 2, 1)
    p_own = scipy.fft.irfft(own, n=size, axis=-1)[..., :padded].transpose(0, 2, 1)
    s = np.zeros_like(p_all)
    s[:, :n] = ref
    s_hat = np.zeros_like(p_all)
    s_hat[:, :n] = est

    def energy(signal):
        return np.sum(signal ** 2, axis=(1, 2))

    target = energy(s)
    return np.stack([
        _db(target, energy(s_hat - s)),
        _db(target, energy(p_own - s)),
        _db(energy(p_own), energy(p_all - p_own)),
        _db(energy(p_all), energy(s_hat - p_all)),
    ])


def _db(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``10 log10(num / den)``; +inf where nothing is left to measure (``den == 0``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator == 0, np.inf, 10 * np.log10(numerator / np.where(denominator == 0, 1, denominator)))
