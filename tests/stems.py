"""Multitrack test material: the parts of ``pipeline.demo``'s music rendered as separate stems.

The stems are those of a 4stems model (vocals, drums, bass, other: the demo's
chord comping); they add up to a mixture mixed and panned as ``demo.synthesize``
mixes its tracks. The bass is the same signal on both channels (scaled), which
makes BSSEval's least-squares systems nearly singular: a hard case for it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import demo

INSTRUMENTS = ("vocals", "drums", "bass", "other")


def render(seconds: float, seed: int, sample_rate: int = 44100) -> dict[str, np.ndarray]:
    """instrument -> float64 ``[n_samples, 2]``; their sum peaks at -1 dBFS."""
    rng = np.random.default_rng(seed)
    root = int(rng.integers(45, 53))
    beat = 60.0 / float(rng.integers(96, 128))
    vocals = demo._vocals(rng, seconds, sample_rate, root)
    other_l, other_r = demo._harmony(rng, seconds, sample_rate, root, beat)
    bass = demo._bass(rng, seconds, sample_rate, root, beat)
    drums_l, drums_r = demo._drums(rng, seconds, sample_rate, beat)
    stems = {
        "vocals": np.stack([0.9 * vocals, 0.8 * vocals], axis=1),
        "drums": np.stack([drums_l, drums_r], axis=1),
        "bass": np.stack([bass, 0.9 * bass], axis=1),
        "other": np.stack([other_l, other_r], axis=1),
    }
    peak = np.max(np.abs(sum(stems.values())))
    return {name: stem * (10 ** (-1 / 20) / peak) for name, stem in stems.items()}


def write_musdb_track(folder: Path, seconds: float, seed: int, sample_rate: int = 44100) -> Path:
    """``folder/mixture.wav`` and ``folder/<instrument>.wav``, 16-bit; returns ``folder``."""
    stems = render(seconds, seed, sample_rate)
    for name, stem in stems.items():
        demo.write_wav(folder / f"{name}.wav", stem, sample_rate)
    demo.write_wav(folder / "mixture.wav", sum(stems.values()), sample_rate)
    return folder
