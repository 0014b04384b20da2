"""The tests' synthetic music: the demo's tracks (pipeline/demo.py) and what only the tests need,
their separate stems, musdb-style multitrack folders and training sets.

``make_track``, ``synthesize`` and ``write_wav`` are the demo's own, so a track rendered here is
the same, sample for sample, as the one ``beamsplitter demo-catalogue`` writes for its seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.demo import make_track, render, synthesize, write_wav

__all__ = ["make_mono_22k", "make_multitrack", "make_song", "make_track", "make_training_set", "synthesize",
           "synthesize_stems", "write_wav"]


def synthesize_stems(seconds: float = 30.0, seed: int = 0, sample_rate: int = 44100,
                     channels: int = 2) -> dict[str, np.ndarray]:
    """The parts of ``synthesize(seconds, seed, ...)``: float32 ``vocals``, ``drums``, ``bass``, ``other``.

    Each is ``[round(seconds * sample_rate), channels]`` at the mix's gain, so
    they add up to the mix (to float32 rounding); ``accompaniment`` is the sum
    of the three that are not vocals, as Spleeter's 2stems models see it.
    """
    parts, gain = render(seconds, seed, sample_rate, channels)
    stems = {name: (part * gain).astype(np.float32) for name, part in parts.items()}
    stems["accompaniment"] = ((parts["other"] + parts["bass"] + parts["drums"]) * gain).astype(np.float32)
    return stems


def make_song(path: str | Path, seconds: float, seed: int = 0, vocals_from: float | None = 0.0,
              channels: int = 2) -> Path:
    """A demo track whose espeak-ng vocals sound only from ``vocals_from`` seconds on (None: an
    instrumental, the same music without them), peak at -1 dBFS, as 16-bit 44.1 kHz WAV."""
    parts, _ = render(seconds, seed, 44100, channels)
    vocals = parts["vocals"]
    vocals[:len(vocals) if vocals_from is None else int(round(vocals_from * 44100))] = 0.0
    mix = vocals + parts["other"] + parts["bass"] + parts["drums"]
    return write_wav(path, mix * (10 ** (-1 / 20) / np.max(np.abs(mix))), 44100)


def make_mono_22k(path: str | Path, seconds: float = 20.0, seed: int = 1) -> Path:
    """A mono 22.05 kHz variant (decoders must resample and duplicate the channel)."""
    return make_track(path, seconds, seed, sample_rate=22050, channels=1)


def make_multitrack(folder: str | Path, seconds: float = 10.0, seed: int = 0,
                    instruments: tuple[str, ...] = ("vocals", "accompaniment")) -> Path:
    """A musdb-style track folder: ``mixture.wav`` and ``<instrument>.wav`` per instrument, 16-bit
    44.1 kHz (instruments from ``synthesize_stems``); returns the folder."""
    folder = Path(folder)
    write_wav(folder / "mixture.wav", synthesize(seconds, seed), 44100)
    stems = synthesize_stems(seconds, seed)
    for instrument in instruments:
        write_wav(folder / f"{instrument}.wav", stems[instrument], 44100)
    return folder


def make_training_set(folder: str | Path, tracks: int = 4, seconds: float = 10.0, first_seed: int = 100,
                      instruments: tuple[str, ...] = ("vocals", "accompaniment")) -> Path:
    """Tracks with their stems, for ``beamsplitter train``; returns the manifest, ``train.csv``.

    Each track is ``<name>/mixture.wav`` and ``<name>/<instrument>.wav``; the
    manifest has Spleeter's training columns ``mix_path``, ``<instrument>_path``
    (relative to the manifest's folder) and ``duration``.
    """
    folder = Path(folder)
    rows = [",".join(["mix_path"] + [f"{name}_path" for name in instruments] + ["duration"])]
    for i in range(tracks):
        name = f"song-{i + 1:02d}"
        make_multitrack(folder / name, seconds, first_seed + i, instruments)
        rows.append(",".join([f"{name}/mixture.wav"] + [f"{name}/{s}.wav" for s in instruments] + [f"{seconds:g}"]))
    manifest = folder / "train.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest
