"""Deterministic synthetic music for ``beamsplitter demo-catalogue``.

No third-party audio is in the repository; everything is made here. The tests
and benchmarks render their tracks with the same code (tests/music.py adds the
separate stems and the multitrack folders that only they need).

A track is a mix of four parts, each panned to its own place in the stereo field:

* vocals: espeak-ng speech, sentence by sentence at varied pitch and speed
  (a vowel-formant "singer" made by additive synthesis when espeak-ng is missing);
* harmony: a chord progression of harmonic tones with attack/release envelopes;
* bass: a plucked line on the chord roots and fifths;
* drums: kick (pitched sine sweep), snare (noise and a tone), hi-hat (high-passed noise).

Everything is numpy only (no scipy) and seeded, so a given ``(seconds, seed,
sample_rate, channels)`` always gives the same samples. Rendering 30 s takes
well under a second plus about a second of espeak-ng.
"""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np

ESPEAK_RATE = 22050  # espeak-ng's --stdout sample rate
SENTENCES = (
    "The river runs to the silver sea, and the morning light is calling me.",
    "Hold on, hold on, the night is long, but we will find the words to the song.",
    "Every city sleeps tonight, under a thousand yellow lights.",
    "Carry me home across the water, carry me home.",
    "I hear the voices in the rain, they whisper softly of my name.",
    "One more time before we go, sing it high and sing it low.",
)
# Chord progressions as semitone offsets of the chord tones from the key's root.
PROGRESSIONS = (
    ((0, 4, 7), (9, 12, 16), (5, 9, 12), (7, 11, 14)),    # I vi IV V
    ((9, 12, 16), (5, 9, 12), (0, 4, 7), (7, 11, 14)),    # vi IV I V
    ((0, 4, 7), (7, 11, 14), (9, 12, 16), (5, 9, 12)),    # I V vi IV
)


def midi_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69) / 12.0)


def _envelope(n: int, rate: int, attack: float, release: float, decay: float = 0.0) -> np.ndarray:
    """Linear attack, optional exponential decay (time constant ``decay`` s), linear release."""
    t = np.arange(n) / rate
    env = np.ones(n)
    a = max(1, int(attack * rate))
    env[:a] = np.linspace(0.0, 1.0, a, endpoint=False)[: min(a, n)]
    if decay > 0:
        env *= np.exp(-t / decay)
    r = min(n, max(1, int(release * rate)))
    env[n - r:] *= np.linspace(1.0, 0.0, r)
    return env


def _tone(freq: float, n: int, rate: int, harmonics: int, rolloff: float, phase: float) -> np.ndarray:
    """A harmonic tone: partial k at amplitude 1/k**rolloff, partials at or above Nyquist left out."""
    t = np.arange(n) / rate
    out = np.zeros(n)
    for k in range(1, harmonics + 1):
        if k * freq >= 0.45 * rate:
            break
        out += np.sin(2 * np.pi * k * freq * t + phase * k) / k ** rolloff
    return out


def _highpass_noise(rng: np.random.Generator, n: int, rate: int, cutoff: float) -> np.ndarray:
    """White noise with everything below ``cutoff`` Hz removed (in the frequency domain)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    spectrum[freqs < cutoff] = 0.0
    return np.fft.irfft(spectrum, n)


def _bandpass_noise(rng: np.random.Generator, n: int, rate: int, lo: float, hi: float) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    spectrum[(freqs < lo) | (freqs > hi)] = 0.0
    return np.fft.irfft(spectrum, n)


def _add(buffer: np.ndarray, start: int, signal: np.ndarray) -> None:
    """Mix ``signal`` into ``buffer`` at ``start``, cropping at either end."""
    if start >= len(buffer) or start + len(signal) <= 0:
        return
    lo = max(0, -start)
    hi = min(len(signal), len(buffer) - start)
    buffer[start + lo:start + hi] += signal[lo:hi]


def resample(signal: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling of a 1-D signal by zero-padding or truncating its spectrum."""
    if rate_in == rate_out:
        return signal.astype(np.float64)
    n_out = int(round(len(signal) * rate_out / rate_in))
    spectrum = np.fft.rfft(signal)
    bins = n_out // 2 + 1
    if bins <= len(spectrum):
        spectrum = spectrum[:bins]
    else:
        spectrum = np.concatenate([spectrum, np.zeros(bins - len(spectrum), spectrum.dtype)])
    return np.fft.irfft(spectrum, n_out) * (n_out / len(signal))


@functools.lru_cache(maxsize=64)
def _espeak(text: str, pitch: int, speed: int, voice: str) -> np.ndarray | None:
    """espeak-ng's rendering of ``text``, float64 mono at 22050 Hz, or None without espeak-ng."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        return None
    result = subprocess.run(
        [binary, "-v", voice, "-p", str(pitch), "-s", str(speed), "-a", "150", "--stdout", text],
        capture_output=True, check=False, timeout=60,
    )
    if result.returncode != 0 or not result.stdout:
        return None
    # espeak-ng streams its WAV with placeholder sizes; read the PCM after the header.
    data = result.stdout
    with wave.open(io.BytesIO(data)) as w:
        rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
    start = data.find(b"data") + 8
    pcm = np.frombuffer(data[start:start + (len(data) - start) // 2 * 2], "<i2").astype(np.float64) / 32768.0
    if width != 2 or channels != 1 or rate != ESPEAK_RATE:
        return None
    return pcm


def _sung_vowels(rng: np.random.Generator, seconds: float, rate: int, root: int) -> np.ndarray:
    """Fallback voice: glottal-like harmonic series shaped by vowel formants, with vibrato."""
    formants = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410))
    n = int(round(seconds * rate))
    out = np.zeros(n)
    pos = int(0.3 * rate)
    scale = (0, 2, 4, 5, 7, 9, 11, 12)
    while pos < n:
        dur = int(rng.uniform(0.3, 0.9) * rate)
        f0 = midi_hz(root + 12 + scale[rng.integers(len(scale))])
        f1, f2, f3 = formants[rng.integers(len(formants))]
        t = np.arange(dur) / rate
        inst = f0 * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * t))
        phase = 2 * np.pi * np.cumsum(inst) / rate
        note = np.zeros(dur)
        for k in range(1, 40):
            fk = k * f0
            if fk > 0.45 * rate:
                break
            gain = sum(np.exp(-((fk - f) / (0.1 * f + 60)) ** 2) for f in (f1, f2, f3)) + 0.05
            note += gain / k * np.sin(k * phase)
        _add(out, pos, note * _envelope(dur, rate, 0.04, 0.08))
        pos += dur + int(rng.uniform(0.05, 0.4) * rate)
    return out


def _vocals(rng: np.random.Generator, seconds: float, rate: int, root: int) -> np.ndarray:
    n = int(round(seconds * rate))
    out = np.zeros(n)
    pos = int(rng.uniform(0.2, 0.8) * rate)
    order = rng.permutation(len(SENTENCES))
    i = 0
    while pos < n:
        text = SENTENCES[order[i % len(SENTENCES)]]
        voice = ("en-us", "en-gb", "en-us+f3", "en-us+m3")[i % 4]
        speech = _espeak(text, int(rng.integers(25, 80)), int(rng.integers(140, 190)), voice)
        if speech is None:
            return _sung_vowels(rng, seconds, rate, root)
        speech = resample(speech, ESPEAK_RATE, rate)
        peak = np.max(np.abs(speech)) or 1.0
        _add(out, pos, speech / peak)
        pos += len(speech) + int(rng.uniform(0.3, 1.0) * rate)
        i += 1
    return out


def _harmony(rng, seconds, rate, root, beat):
    n = int(round(seconds * rate))
    left, right = np.zeros(n), np.zeros(n)
    progression = PROGRESSIONS[rng.integers(len(PROGRESSIONS))]
    bar = 4 * beat
    for b in range(int(np.ceil(seconds / bar))):
        chord = progression[b % len(progression)]
        for j, interval in enumerate(chord):
            for hit in (0, 2.5) if b % 2 else (0, 2, 3):  # syncopated comping
                length = beat * (2 if hit == 0 else 1) * 0.95
                m = int(length * rate)
                tone = _tone(midi_hz(root + 12 + interval), m, rate, harmonics=12, rolloff=1.3,
                             phase=rng.uniform(0, 2 * np.pi))
                tone *= _envelope(m, rate, 0.01, 0.12, decay=0.9) * 0.22
                start = int((b * bar + hit * beat) * rate)
                pan = 0.3 + 0.4 * j / max(1, len(chord) - 1)  # spread the chord tones across the field
                _add(left, start, tone * (1 - pan))
                _add(right, start, tone * pan)
    return left, right


def _bass(rng, seconds, rate, root, beat):
    n = int(round(seconds * rate))
    out = np.zeros(n)
    progression = PROGRESSIONS[0]
    bar = 4 * beat
    for b in range(int(np.ceil(seconds / bar))):
        chord_root = progression[b % len(progression)][0]
        for step in range(8):  # eighth notes
            if step in (3, 7) and rng.random() < 0.5:
                continue
            note = root - 12 + chord_root + (7 if step in (2, 6) else 0)
            m = int(beat / 2 * 0.9 * rate)
            tone = _tone(midi_hz(note), m, rate, harmonics=6, rolloff=1.8, phase=0.0)
            tone *= _envelope(m, rate, 0.005, 0.03, decay=0.35) * 0.5
            _add(out, int((b * bar + step * beat / 2) * rate), tone)
    return out


def _drums(rng, seconds, rate, beat):
    n = int(round(seconds * rate))
    left, right = np.zeros(n), np.zeros(n)
    # One kick, snare and hi-hat sample each, reused with small gain variations.
    m = int(0.35 * rate)
    t = np.arange(m) / rate
    sweep = 50 + 100 * np.exp(-t / 0.04)  # 150 Hz -> 50 Hz
    kick = np.sin(2 * np.pi * np.cumsum(sweep) / rate) * np.exp(-t / 0.12)
    kick[: int(0.002 * rate)] += _highpass_noise(rng, int(0.002 * rate), rate, 1000) * 0.3
    m = int(0.25 * rate)
    t = np.arange(m) / rate
    snare = (_bandpass_noise(rng, m, rate, 1500, 9000) * 0.6 * np.exp(-t / 0.06)
             + np.sin(2 * np.pi * 190 * t) * np.exp(-t / 0.04))
    m = int(0.08 * rate)
    t = np.arange(m) / rate
    hat = _highpass_noise(rng, m, rate, 7000) * np.exp(-t / 0.015)
    for s in range(int(np.ceil(seconds / (beat / 2)))):  # eighth-note grid
        start = int(s * beat / 2 * rate)
        step = s % 8
        accent = rng.uniform(0.85, 1.0)
        if step in (0, 4) or (step == 5 and rng.random() < 0.3):
            _add(left, start, kick * 0.8 * accent)
            _add(right, start, kick * 0.8 * accent)
        if step in (2, 6):
            _add(left, start, snare * 0.35 * accent)
            _add(right, start, snare * 0.45 * accent)
        _add(left, start, hat * 0.18 * accent)
        _add(right, start, hat * 0.08 * accent)
    return left, right


def synthesize(seconds: float = 30.0, seed: int = 0, sample_rate: int = 44100, channels: int = 2) -> np.ndarray:
    """The track as float32 ``[round(seconds * sample_rate), channels]``, peak at -1 dBFS."""
    parts, gain = render(seconds, seed, sample_rate, channels)
    mix = parts["vocals"] + parts["other"] + parts["bass"] + parts["drums"]
    return (mix * gain).astype(np.float32)


def render(seconds: float, seed: int, sample_rate: int, channels: int) -> tuple[dict[str, np.ndarray], float]:
    """The track's parts ``vocals``, ``other``, ``bass`` and ``drums``, each float64 ``[n, channels]``
    with ``n = round(seconds * sample_rate)``, unscaled; and the gain that puts their sum's peak at -1 dBFS."""
    if channels not in (1, 2):
        raise ValueError("channels must be 1 or 2")
    rng = np.random.default_rng(seed)
    root = int(rng.integers(45, 53))  # key: A2..C#3 region for the chords' root
    beat = 60.0 / float(rng.integers(96, 128))
    vocals = _vocals(rng, seconds, sample_rate, root)
    harmony_l, harmony_r = _harmony(rng, seconds, sample_rate, root, beat)
    bass = _bass(rng, seconds, sample_rate, root, beat)
    drums_l, drums_r = _drums(rng, seconds, sample_rate, beat)
    parts = {
        "vocals": np.stack([0.9 * vocals, 0.8 * vocals], axis=1),
        "other": np.stack([harmony_l, harmony_r], axis=1),
        "bass": np.stack([bass, 0.9 * bass], axis=1),
        "drums": np.stack([drums_l, drums_r], axis=1),
    }
    if channels == 1:
        parts = {name: part.mean(axis=1, keepdims=True) for name, part in parts.items()}
    mix = parts["vocals"] + parts["other"] + parts["bass"] + parts["drums"]
    peak = np.max(np.abs(mix)) or 1.0
    return parts, 10 ** (-1 / 20) / peak


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> Path:
    """Write float ``[n, channels]`` samples in [-1, 1] as a 16-bit PCM WAV file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.clip(np.round(np.asarray(samples, np.float64) * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(pcm.shape[1])
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return path


def make_track(path: str | Path, seconds: float = 30.0, seed: int = 0, sample_rate: int = 44100,
               channels: int = 2) -> Path:
    """Render a synthetic music track to a 16-bit WAV file at ``path``; returns the path."""
    return write_wav(path, synthesize(seconds, seed, sample_rate, channels), sample_rate)


def make_catalogue(folder: str | Path, tracks: int = 4, seconds: float = 20.0) -> Path:
    """A small catalogue: ``tracks`` WAV files and ``manifest.csv`` over them; returns the manifest."""
    folder = Path(folder)
    rows = ["track_id,uri,title"]
    for i in range(tracks):
        name = f"demo-{i + 1:02d}"
        if not (folder / f"{name}.wav").exists():
            make_track(folder / f"{name}.wav", seconds=seconds, seed=i)
        rows.append(f"{name},{name}.wav,Demo song {i + 1}")
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest
