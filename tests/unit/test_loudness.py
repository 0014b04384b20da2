"""Loudness measured by the encoder (ffmpeg's ebur128) and the vocal activity rule, on short signals."""

import numpy as np
import pytest

from models import encoding
from models.chunking import ChunkGeometry
from models.config import load_config
from models.encoding import EncodeOptions
from models.errors import EncodeError
from models.stems import StemWriter
from models.vocal_activity import FLOOR_DBFS, RELATIVE_DB, VocalActivity, is_instrumental

RATE = 44100


def sine(seconds: float, dbfs: float, hz: float = 997.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    wave = (10 ** (dbfs / 20) * np.sin(2 * np.pi * hz * t)).astype(np.float32)
    return np.stack([wave, wave], axis=1)


def encode(path, samples, codec="wav", measure=True) -> encoding.Encoder:
    with encoding.Encoder(str(path), RATE, codec=codec, measure_loudness=measure) as encoder:
        for start in range(0, len(samples), 65536):
            encoder.write(samples[start:start + 65536])
    return encoder


@pytest.mark.parametrize("codec", ["wav", "mp3"])
def test_a_sine_reads_as_bs1770_says_and_the_file_is_the_same(tmp_path, codec):
    # BS.1770: a 997 Hz sine at 0 dBFS peak in both channels of a stereo signal reads 0 LUFS.
    samples = sine(10.0, -20.0)
    measured = encode(tmp_path / f"a.{codec}", samples, codec).loudness
    assert measured.integrated_lufs == pytest.approx(-20.0, abs=0.1)
    assert measured.range_lu == pytest.approx(0.0, abs=0.1)
    assert measured.true_peak_dbtp == pytest.approx(-20.0, abs=0.1)
    assert encode(tmp_path / f"b.{codec}", samples, codec, measure=False).loudness is None
    assert (tmp_path / f"a.{codec}").read_bytes() == (tmp_path / f"b.{codec}").read_bytes()


def test_silence_has_no_loudness(tmp_path):
    measured = encode(tmp_path / "silence.wav", np.zeros((5 * RATE, 2), np.float32)).loudness
    assert (measured.integrated_lufs, measured.range_lu, measured.true_peak_dbtp) == (None, None, None)
    # Below the -70 LUFS gate, but not digital silence: no loudness, a true peak.
    measured = encode(tmp_path / "hiss.wav", sine(5.0, -80.0)).loudness
    assert (measured.integrated_lufs, measured.range_lu) == (None, None)
    assert measured.true_peak_dbtp == pytest.approx(-80.0, abs=0.1)


def test_a_failing_encoder_names_ffmpegs_error_as_without_the_measurement(tmp_path):
    """ffmpeg logs at info level for the summary: its error is still the one told, not its chatter."""
    messages = []
    for measure in (False, True):
        with pytest.raises(EncodeError) as raised:
            with encoding.Encoder(str(tmp_path / "a.flac"), 1_000_000, "flac", measure_loudness=measure) as encoder:
                encoder.write(np.zeros((RATE, 2), np.float32))
        messages.append(str(raised.value))
    assert messages[0] == messages[1]
    assert messages[1].endswith("encoding failed (Error initializing output stream 0:0 -- Error while opening encoder "
                                "for output stream #0:0 - maybe incorrect parameters such as bit_rate, rate, width or height)")
    assert list(tmp_path.iterdir()) == []


def frames(levels_db: list[float], seconds: float = 1.0, hz: float = 440.0) -> np.ndarray:
    """A stereo sine in 1 s frames (the last ``seconds`` long) at each RMS level, -inf for silence."""
    parts = []
    for n, level in enumerate(levels_db):
        length = int((seconds if n == len(levels_db) - 1 else 1.0) * RATE)
        parts.append(sine(length / RATE, level + 3.0103, hz) if level > -np.inf
                     else np.zeros((length, 2), np.float32))
    return np.concatenate(parts)


def test_a_frame_is_vocal_within_30_db_of_the_mix_and_above_the_floor():
    accompaniment = frames([-20.0] * 6, seconds=0.5, hz=1000.0)
    vocals = frames([-20.0 + RELATIVE_DB + 0.5, -20.0 + RELATIVE_DB - 0.5, -np.inf, -10.0, -np.inf, -30.0],
                    seconds=0.5)
    quiet = frames([FLOOR_DBFS + 0.5, FLOOR_DBFS - 0.5])  # a quiet song: no accompaniment, vocals alone
    whole = VocalActivity(RATE)
    whole.add(vocals, vocals + accompaniment)
    assert whole.share() == pytest.approx(3 / 6)  # frames 0, 3 and the last, half-second one
    pieces = VocalActivity(RATE)  # fed in blocks that straddle the frames: the same frames
    for start in range(0, len(vocals), 30000):
        pieces.add(vocals[start:start + 30000], (vocals + accompaniment)[start:start + 30000])
    assert pieces.share() == whole.share()
    alone = VocalActivity(RATE)
    alone.add(quiet, quiet)
    assert alone.share() == 0.5
    assert VocalActivity(RATE).share() is None


def test_instrumental_below_a_tenth():
    assert (is_instrumental(0.0), is_instrumental(0.099), is_instrumental(0.1), is_instrumental(None)) == (
        True, True, False, None)


def test_models_without_a_vocals_stem_give_no_vocal_presence(tmp_path):
    geometry = ChunkGeometry.of(load_config("spleeter:2stems"))
    stems = {name: str(tmp_path / f"{name}.wav") for name in ("drums", "bass")}
    writer = StemWriter(stems, geometry, RATE, EncodeOptions(), measure=True)
    writer.close()
    assert writer.vocal_presence() == (None, None)
    unmeasured = StemWriter({"vocals": str(tmp_path / "vocals.wav")}, geometry, RATE, EncodeOptions())
    unmeasured.close()
    assert unmeasured.vocal_presence() == (None, None) and unmeasured.loudness("vocals") is None
