"""The separation maths for one chunk, and a whole waveform, with a loaded model."""

from __future__ import annotations

import numpy as np

from models import spectral
from models.chunking import ChunkGeometry, OverlapAdd, segments
from models.config import SeparationConfig
from models.unet import SeparationNetwork


class Separator:
    """A configuration with its network weights loaded, ready to separate chunks.

    Build it once per process: the network is traced on the first call and
    reused for every chunk of every track after that.
    """

    def __init__(self, config: SeparationConfig, weights: dict[str, np.ndarray], checkpoint_sha256: str = ""):
        self.config = config
        self.geometry = ChunkGeometry.of(config)
        self.checkpoint_sha256 = checkpoint_sha256
        self.network = SeparationNetwork(config)
        self.network.assign(weights)

    @property
    def model_id(self) -> str:
        """Configuration and weights, as recorded in output metadata."""
        return f"{self.config.name}@sha256:{self.checkpoint_sha256}" if self.checkpoint_sha256 else self.config.name

    @property
    def instruments(self) -> tuple[str, ...]:
        return self.config.instruments

    def analyze(self, segment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Segment ``[span, 2]`` -> (STFT ``[T, bins, 2]`` complex64, magnitude ``[T, F, 2]`` float32)."""
        return spectral.analyze(segment, self.config)

    def estimate(self, magnitudes: np.ndarray) -> np.ndarray:
        """Network estimates ``[n_instruments, B, T, F, 2]`` for magnitudes ``[B, T, F, 2]``."""
        return self.network(magnitudes).numpy()

    def full_band(self, estimates: np.ndarray) -> np.ndarray:
        """Estimates ``[n, T, F, 2]`` zero-padded to all STFT bins, as Spleeter feeds its Wiener filter."""
        pad = [(0, 0)] * estimates.ndim
        pad[-2] = (0, self.config.n_bins - self.config.F)
        return np.pad(estimates, pad)

    def synthesize(self, spectrum: np.ndarray, estimates: np.ndarray) -> np.ndarray:
        """One chunk's stems ``[n_instruments, span, 2]`` from its STFT and its estimates ``[n, T, F, 2]``."""
        return spectral.synthesize(spectrum, estimates, self.config)

    def separate(self, waveform: np.ndarray, batch_size: int = 4) -> dict[str, np.ndarray]:
        """Separate a whole in-memory waveform ``[n_samples, 2]``; returns ``[n_samples, 2]`` per instrument."""
        joiner = OverlapAdd(self.geometry)
        pieces = []
        batch = []

        def flush():
            spectra, magnitudes = zip(*(self.analyze(s.samples) for s in batch))
            estimates = self.estimate(np.stack(magnitudes))
            for i, segment in enumerate(batch):
                stems = self.synthesize(spectra[i], estimates[:, i])
                pieces.append(joiner.add(segment.index, stems, segment.n_samples))
            batch.clear()

        for segment in segments([np.asarray(waveform, np.float32)], self.geometry):
            batch.append(segment)
            if len(batch) == batch_size or segment.last:
                flush()
        stems = np.concatenate(pieces, axis=1)
        return dict(zip(self.instruments, stems))
