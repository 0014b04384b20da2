"""Oracle separation: ideal ratio masks computed from the true stems instead of the network.

What a perfect estimator of Spleeter's masks would reach (not a strict
bound: other masks can score higher than ideal ratio masks): the mixture
goes through the model's own chunked separation (``models.chunking``), with
the true stems' magnitudes ``|S_i|`` in place of the network's estimates, so
that the masks are ``|S_i|^p / sum_j |S_j|^p`` (``p``: the configuration's
separation exponent) over every frequency bin, not only the ``F`` bins the
network sees.
"""

from __future__ import annotations

import numpy as np

from models import spectral
from models.chunking import ChunkGeometry, Segment, overlap_add, segments, separate_chunks, separate_stream
from models.config import SeparationConfig


def separate(mixture: np.ndarray, stems: np.ndarray, config: SeparationConfig) -> np.ndarray:
    """Oracle stems ``[n_instruments, n_samples, 2]`` from ``mixture`` ``[n_samples, 2]``
    and the true ``stems`` ``[n_instruments, n_samples, 2]`` (float, at ``config.sample_rate``)."""
    geometry = ChunkGeometry.of(config)
    truths = zip(*(segments([np.asarray(s, np.float32)], geometry) for s in stems))

    def with_true_magnitudes(batch: list[Segment]) -> np.ndarray:
        # The true stems' segments run in step with the mixture's: the stream asks for each chunk once, in order.
        (segment,) = batch
        truth = next(truths)
        assert all(t.index == segment.index for t in truth)
        samples = np.stack([t.samples for t in truth])[:, None]  # [n, 1, span, 2]
        true_magnitudes = spectral.magnitude(spectral.stft(samples, config.frame_length, config.frame_step))
        return separate_chunks(segment.samples[None], lambda _: true_magnitudes, config).numpy()

    mixture_segments = segments([np.asarray(mixture, np.float32)], geometry)
    return overlap_add(separate_stream(mixture_segments, with_true_magnitudes), geometry)
