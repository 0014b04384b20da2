"""Oracle separation: ideal ratio masks computed from the true stems instead of the network.

What a perfect estimator of Spleeter's masks would reach (not a strict
bound: other masks can score higher than ideal ratio masks): the mixture
goes through the model's own chunking, STFT, masks and inverse STFT
(``models.spectral``), the masks being ``|S_i|^p / sum_j |S_j|^p`` of the
true stems ``S_i`` (``p``: the configuration's separation exponent) over
every frequency bin, not only the ``F`` bins the network sees.
"""

from __future__ import annotations

import numpy as np

from models import spectral
from models.chunking import ChunkGeometry, OverlapAdd, segments
from models.config import SeparationConfig


def separate(mixture: np.ndarray, stems: np.ndarray, config: SeparationConfig) -> np.ndarray:
    """Oracle stems ``[n_instruments, n_samples, 2]`` from ``mixture`` ``[n_samples, 2]``
    and the true ``stems`` ``[n_instruments, n_samples, 2]`` (float, at ``config.sample_rate``)."""
    geometry = ChunkGeometry.of(config)
    joiner = OverlapAdd(geometry)
    stem_segments = [segments([np.asarray(s, np.float32)], geometry) for s in stems]
    pieces = []
    for segment, *truth in zip(segments([np.asarray(mixture, np.float32)], geometry), *stem_segments):
        spectrum = spectral.stft(segment.samples, config.frame_length, config.frame_step)
        magnitudes = np.stack([np.abs(spectral.stft(t.samples, config.frame_length, config.frame_step))
                               for t in truth])
        masks = spectral.ratio_masks(magnitudes, config)
        separated = spectral.istft(spectral.apply_masks(spectrum, masks), config.frame_length, config.frame_step)
        pieces.append(joiner.add(segment.index, separated, segment.n_samples))
    return np.concatenate(pieces, axis=1)
