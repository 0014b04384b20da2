"""Decoding and encoding through ffmpeg: layouts, rates, codecs, atomic writes, bad inputs."""

import os
import subprocess
import wave

import numpy as np
import pytest

from models import audio
from models.errors import AudioError, EncodeError

RATE = 44100


def write_pcm(path, samples, rate=RATE):
    """A 16-bit WAV with any number of channels, without going through the code under test."""
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(samples.shape[1])
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())
    return str(path)


def tone(n, channels, rate=RATE):
    t = np.arange(n) / rate
    return np.stack([0.1 * (c + 1) * np.sin(2 * np.pi * 220 * (c + 1) * t) for c in range(channels)], axis=1)


def test_stereo_decodes_to_the_same_samples(tmp_path):
    samples = tone(30000, 2)
    decoded = audio.load(write_pcm(tmp_path / "a.wav", samples), RATE)
    assert decoded.dtype == np.float32 and decoded.shape == (30000, 2)
    np.testing.assert_allclose(decoded, np.round(samples * 32767) / 32768, atol=1e-4)


def test_mono_is_duplicated_and_extra_channels_dropped(tmp_path):
    mono = audio.load(write_pcm(tmp_path / "m.wav", tone(5000, 1)), RATE)
    np.testing.assert_array_equal(mono[:, 0], mono[:, 1])
    surround = tone(5000, 4)
    decoded = audio.load(write_pcm(tmp_path / "s.wav", surround), RATE)
    np.testing.assert_allclose(decoded, surround[:, :2], atol=1e-4)


def test_resampled_to_the_model_rate(tmp_path):
    decoded = audio.load(write_pcm(tmp_path / "low.wav", tone(22050, 2, 22050), 22050), RATE)
    assert abs(len(decoded) - RATE) <= 2


def test_offset_and_duration_in_seconds(tmp_path):
    samples = tone(RATE * 3, 2)
    decoded = audio.load(write_pcm(tmp_path / "a.wav", samples), RATE, offset=1.0, duration=0.5)
    assert len(decoded) == RATE // 2
    np.testing.assert_allclose(decoded, samples[RATE:RATE + RATE // 2], atol=1e-4)


def test_blocks_stream_without_holding_the_track(tmp_path):
    path = write_pcm(tmp_path / "a.wav", tone(100000, 2))
    info = audio.DecodedInfo()
    sizes = [len(b) for b in audio.decode(path, RATE, info=info, block_samples=4096)]
    assert max(sizes) <= 4096 and sum(sizes) == 100000
    assert info.samples == 100000 and info.source_channels == 2


def _truncated(path, kind):
    data = open(path, "rb").read()
    cut = tmp = str(path) + f".cut.{kind}"
    with open(cut, "wb") as f:
        f.write(data[: len(data) // 2])
    return tmp


@pytest.mark.parametrize("make,cause", [
    (lambda d: str(d / "missing.wav"), "no such file"),
    (lambda d: str(d), "is a directory"),
    (lambda d: (open(d / "empty.mp3", "wb").close(), str(d / "empty.mp3"))[1], "empty file"),
    (lambda d: ((d / "notes.mp3").write_text("these are not sounds\n" * 50), str(d / "notes.mp3"))[1],
     "not decodable audio"),
    (lambda d: _truncated(write_pcm(d / "long.wav", tone(RATE * 2, 2)), "wav"), "truncated"),
])
def test_bad_inputs_fail_naming_the_file(tmp_path, make, cause):
    path = make(tmp_path)
    with pytest.raises(AudioError, match=cause) as raised:
        audio.load(path, RATE)
    assert str(raised.value).startswith(f"{path}: ")
    assert "\n" not in str(raised.value)


def test_truncated_flac_is_refused(tmp_path):
    source = write_pcm(tmp_path / "a.wav", tone(RATE * 4, 2))
    flac = str(tmp_path / "a.flac")
    subprocess.run([audio.ffmpeg_binary(), "-v", "error", "-i", source, flac], check=True)
    with pytest.raises(AudioError, match="truncated"):
        audio.load(_truncated(flac, "flac"), RATE)


@pytest.mark.parametrize("sample_format,tolerance", [("s16", 1 / 32768), ("s24", 2 ** -23), ("f32", 0)])
def test_wav_sample_formats(tmp_path, sample_format, tolerance):
    samples = tone(20000, 2).astype(np.float32)
    path = str(tmp_path / "out.wav")
    audio.save(path, samples, RATE, sample_format=sample_format)
    np.testing.assert_allclose(audio.load(path, RATE), samples, atol=tolerance * 1.01)


@pytest.mark.parametrize("codec", ["flac", "mp3", "ogg", "m4a", "wma"])
def test_every_codec_round_trips(tmp_path, codec):
    samples = tone(RATE, 2).astype(np.float32)
    path = str(tmp_path / f"out.{codec}")
    audio.save(path, samples, RATE, codec=codec, bitrate="192k")
    decoded = audio.load(path, RATE)
    assert abs(len(decoded) - RATE) < 0.1 * RATE  # lossy codecs add priming/padding
    if codec == "flac":
        np.testing.assert_allclose(decoded, samples, atol=1 / 32768 * 1.01)
    assert np.sqrt(np.mean(decoded ** 2)) == pytest.approx(np.sqrt(np.mean(samples ** 2)), rel=0.1)


def test_writes_are_atomic_and_repeatable(tmp_path):
    samples = tone(10000, 2).astype(np.float32)
    first, second = tmp_path / "a" / "x.mp3", tmp_path / "b" / "x.mp3"
    audio.save(str(first), samples, RATE, codec="mp3")
    audio.save(str(second), samples, RATE, codec="mp3")
    assert first.read_bytes() == second.read_bytes()  # a retried write rewrites the same bytes
    assert sorted(os.listdir(first.parent)) == ["x.mp3"]

    encoder = audio.Encoder(str(tmp_path / "c" / "y.wav"), RATE)
    encoder.write(samples)
    assert not (tmp_path / "c" / "y.wav").exists()  # not under its name until closed
    encoder.abort()
    assert os.listdir(tmp_path / "c") == []


def test_exception_inside_with_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with audio.Encoder(str(tmp_path / "z.flac"), RATE, codec="flac") as encoder:
            encoder.write(tone(1000, 2))
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_unwritable_destination_names_the_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(EncodeError, match=f"{blocker}/sub/out.wav: cannot create folder"):
        audio.Encoder(str(blocker / "sub" / "out.wav"), RATE)


def test_unknown_codec(tmp_path):
    with pytest.raises(EncodeError, match="unknown codec 'aiff'"):
        audio.Encoder(str(tmp_path / "a.aiff"), RATE, codec="aiff")


def test_errors_name_the_source_not_its_local_copy(tmp_path):
    copy = tmp_path / "beamsplitter-1234.mp3"
    copy.write_text("not audio at all\n" * 20)
    with pytest.raises(AudioError) as raised:
        list(audio.decode(str(copy), RATE, name="gs://bucket/album/song.mp3"))
    assert str(raised.value).startswith("gs://bucket/album/song.mp3: not decodable audio (")
    assert str(copy) not in str(raised.value)
