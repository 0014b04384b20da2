"""Spleeter's ``--mwf``: norbert's multichannel Wiener filter (one EM iteration), in two passes.

Spleeter filters the whole track's STFT at once with ``norbert.wiener(v, x)``:
a soft mask ``y_j = v_j / (eps + sum_k v_k) * x`` from the network's raw
estimates ``v`` (not the ratio masks), then one expectation-maximisation step:

* per source, a spatial covariance over the *whole track*:
  ``R_j[f] = sum_t y_j[t,f] y_j[t,f]^H / (eps + sum_t p_j[t,f])`` with
  ``p_j = mean over channels of |y_j|^2``;
* per frame, ``y_j = p_j R_j (sum_k p_k R_k + sqrt(eps) I)^-1 x``;

all on ``x`` and ``y`` divided by ``m = max(1, max|x| / 10)``, and scaled back.
``R`` and ``m`` need the whole track, so streaming takes two passes: the first
accumulates ``sum_t y y^H``, ``sum_t p`` and ``max|x|`` chunk by chunk
(``WienerStatistics``), the second filters each chunk with them (``filter_chunk``).

Shapes: ``x`` complex64 ``[frames, bins, 2]``; estimates ``[n, frames, bins, 2]``
(zero above the network's ``F``, as Spleeter pads them).
"""

from __future__ import annotations

import numpy as np

EPS = float(np.finfo(np.float32).eps)  # norbert's default: the mixture's float epsilon


def softmask(estimates: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``y_j = v_j / (eps + sum_k v_k) * x``: ``[n, frames, bins, 2]`` complex64."""
    total = estimates.sum(axis=0, keepdims=True)
    return (estimates / (np.float32(EPS) + total)) * x[None]


def _power(y: np.ndarray) -> np.ndarray:
    """``p_j``: mean over channels of ``|y_j|^2``, ``[n, frames, bins]``."""
    return np.mean(np.abs(y) ** 2, axis=-1)


class WienerStatistics:
    """Whole-track sums for the spatial covariances, accumulated chunk by chunk."""

    def __init__(self, n_sources: int, bins: int):
        self.covariance = np.zeros((n_sources, bins, 2, 2), np.complex128)
        self.power = np.zeros((n_sources, bins), np.float64)
        self.max_abs = 0.0

    def add(self, y: np.ndarray, x: np.ndarray) -> None:
        """Add one chunk's soft-masked sources ``y`` and its mixture ``x``."""
        self.covariance += np.einsum("ntfa,ntfb->nfab", y, np.conj(y), dtype=np.complex128)
        self.power += _power(y).sum(axis=1, dtype=np.float64)
        self.max_abs = max(self.max_abs, float(np.abs(x).max(initial=0.0)))

    @property
    def scale(self) -> float:
        """norbert's ``max_abs``: the filter runs on the mixture divided by it."""
        return max(1.0, self.max_abs / 10.0)

    def spatial_covariances(self) -> np.ndarray:
        """``R_j``, ``[n, bins, 2, 2]``, as norbert computes it on the scaled signals."""
        s2 = self.scale ** 2
        weight = EPS + self.power / s2
        return ((self.covariance / s2) / weight[..., None, None]).astype(np.complex64)


def filter_chunk(estimates: np.ndarray, x: np.ndarray, R: np.ndarray, scale: float) -> np.ndarray:
    """One chunk's filtered sources ``[n, frames, bins, 2]`` complex64, ready for the inverse STFT."""
    xs = x / np.float32(scale)
    y = softmask(estimates, xs)
    p = _power(y)  # [n, t, f]
    mix = np.einsum("ntf,nfab->tfab", p, R) + np.sqrt(EPS) * np.eye(2, dtype=np.complex64)
    det = mix[..., 0, 0] * mix[..., 1, 1] - mix[..., 0, 1] * mix[..., 1, 0]
    inverse = np.stack([np.stack([mix[..., 1, 1], -mix[..., 0, 1]], -1),
                        np.stack([-mix[..., 1, 0], mix[..., 0, 0]], -1)], -2) / det[..., None, None]
    gain = p[..., None, None] * np.einsum("nfab,tfbc->ntfac", R, inverse)
    filtered = np.einsum("ntfab,tfb->ntfa", gain, xs)
    return (filtered * np.float32(scale)).astype(np.complex64)
