"""Decoding and encoding through ffmpeg: layouts, rates, codecs, atomic writes, bad inputs, stalls, names."""

import os
import re
import signal
import subprocess
import sys
import time
import wave

import numpy as np
import pytest

from models import decoding, encoding
from models.errors import AudioError, EncodeError, InputError
from models.ffmpeg_process import BLOCK_SAMPLES, check_stall_timeout, ffmpeg_binary

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
    decoded = decoding.load(write_pcm(tmp_path / "a.wav", samples), RATE)
    assert decoded.dtype == np.float32 and decoded.shape == (30000, 2)
    np.testing.assert_allclose(decoded, np.round(samples * 32767) / 32768, atol=1e-4)


def test_mono_is_duplicated_and_extra_channels_dropped(tmp_path):
    mono = decoding.load(write_pcm(tmp_path / "m.wav", tone(5000, 1)), RATE)
    np.testing.assert_array_equal(mono[:, 0], mono[:, 1])
    surround = tone(5000, 4)
    decoded = decoding.load(write_pcm(tmp_path / "s.wav", surround), RATE)
    np.testing.assert_allclose(decoded, surround[:, :2], atol=1e-4)


def test_resampled_to_the_model_rate(tmp_path):
    decoded = decoding.load(write_pcm(tmp_path / "low.wav", tone(22050, 2, 22050), 22050), RATE)
    assert abs(len(decoded) - RATE) <= 2


def test_offset_and_duration_in_seconds(tmp_path):
    samples = tone(RATE * 3, 2)
    decoded = decoding.load(write_pcm(tmp_path / "a.wav", samples), RATE, offset=1.0, duration=0.5)
    assert len(decoded) == RATE // 2
    np.testing.assert_allclose(decoded, samples[RATE:RATE + RATE // 2], atol=1e-4)


def test_blocks_stream_without_holding_the_track(tmp_path):
    path = write_pcm(tmp_path / "a.wav", tone(100000, 2))
    info = decoding.DecodedInfo()
    sizes = [len(b) for b in decoding.decode(path, RATE, info=info, block_samples=4096)]
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
    (lambda d: "/dev/zero", "not a regular file"),
    (lambda d: (open(d / "empty.mp3", "wb").close(), str(d / "empty.mp3"))[1], "empty file"),
    (lambda d: ((d / "notes.mp3").write_text("these are not sounds\n" * 50), str(d / "notes.mp3"))[1],
     "not decodable audio"),
    (lambda d: _truncated(write_pcm(d / "long.wav", tone(RATE * 2, 2)), "wav"), "truncated"),
])
def test_bad_inputs_fail_naming_the_file(tmp_path, make, cause):
    path = make(tmp_path)
    with pytest.raises(AudioError, match=cause) as raised:
        decoding.load(path, RATE)
    assert str(raised.value).startswith(f"{path}: ")
    assert "\n" not in str(raised.value)


def test_truncated_flac_is_refused(tmp_path):
    source = write_pcm(tmp_path / "a.wav", tone(RATE * 4, 2))
    flac = str(tmp_path / "a.flac")
    subprocess.run([ffmpeg_binary(), "-v", "error", "-i", source, flac], check=True)
    with pytest.raises(AudioError, match="truncated"):
        decoding.load(_truncated(flac, "flac"), RATE)


@pytest.mark.parametrize("sample_format,tolerance", [("s16", 1 / 32768), ("s24", 2 ** -23), ("f32", 0)])
def test_wav_sample_formats(tmp_path, sample_format, tolerance):
    samples = tone(20000, 2).astype(np.float32)
    path = str(tmp_path / "out.wav")
    encoding.save(path, samples, RATE, sample_format=sample_format)
    np.testing.assert_allclose(decoding.load(path, RATE), samples, atol=tolerance * 1.01)


@pytest.mark.parametrize("codec", ["flac", "mp3", "ogg", "m4a", "wma"])
def test_every_codec_round_trips(tmp_path, codec):
    samples = tone(RATE, 2).astype(np.float32)
    path = str(tmp_path / f"out.{codec}")
    encoding.save(path, samples, RATE, codec=codec, bitrate="192k")
    decoded = decoding.load(path, RATE)
    assert abs(len(decoded) - RATE) < 0.1 * RATE  # lossy codecs add priming/padding
    if codec == "flac":
        np.testing.assert_allclose(decoded, samples, atol=1 / 32768 * 1.01)
    assert np.sqrt(np.mean(decoded ** 2)) == pytest.approx(np.sqrt(np.mean(samples ** 2)), rel=0.1)


def test_writes_are_atomic_and_repeatable(tmp_path):
    samples = tone(10000, 2).astype(np.float32)
    first, second = tmp_path / "a" / "x.mp3", tmp_path / "b" / "x.mp3"
    encoding.save(str(first), samples, RATE, codec="mp3")
    encoding.save(str(second), samples, RATE, codec="mp3")
    assert first.read_bytes() == second.read_bytes()  # a retried write rewrites the same bytes
    assert sorted(os.listdir(first.parent)) == ["x.mp3"]

    encoder = encoding.Encoder(str(tmp_path / "c" / "y.wav"), RATE)
    encoder.write(samples)
    assert not (tmp_path / "c" / "y.wav").exists()  # not under its name until closed
    encoder.abort()
    assert os.listdir(tmp_path / "c") == []


def test_exception_inside_with_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with encoding.Encoder(str(tmp_path / "z.flac"), RATE, codec="flac") as encoder:
            encoder.write(tone(1000, 2))
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_unwritable_destination_names_the_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(EncodeError, match=f"{blocker}/sub/out.wav: cannot create folder"):
        encoding.Encoder(str(blocker / "sub" / "out.wav"), RATE)


def test_unknown_codec(tmp_path):
    with pytest.raises(EncodeError, match="unknown codec 'aiff'"):
        encoding.Encoder(str(tmp_path / "a.aiff"), RATE, codec="aiff")


def test_errors_name_the_source_not_its_local_copy(tmp_path):
    copy = tmp_path / "beamsplitter-1234.mp3"
    copy.write_text("not audio at all\n" * 20)
    with pytest.raises(AudioError) as raised:
        list(decoding.decode(str(copy), RATE, name="gs://bucket/album/song.mp3"))
    assert str(raised.value).startswith("gs://bucket/album/song.mp3: not decodable audio (")
    assert str(copy) not in str(raised.value)


@pytest.mark.parametrize("name", ["-", "-x.wav", "Artist: Title.wav", "concat:a.wav|b.wav"])
def test_any_file_name_is_read_as_that_file(tmp_path, monkeypatch, name):
    """ffmpeg reads '-' as stdin and 'Artist: Title.wav' as a protocol unless told it is a file."""
    samples = tone(RATE, 2)
    write_pcm(tmp_path / name, samples)
    monkeypatch.chdir(tmp_path)
    decoded = decoding.load(name, RATE)
    np.testing.assert_allclose(decoded, np.round(samples * 32767) / 32768, atol=1e-4)


def _indirection(tmp_path, kind):
    """A small file of ``kind`` that would make ffmpeg open a real WAV beside it."""
    wav = write_pcm(tmp_path / "real.wav", tone(RATE, 2))
    if kind == "concat":
        path = tmp_path / "list.txt"
        path.write_text(f"ffconcat version 1.0\nfile '{wav}'\n")
    elif kind == "hls":
        path = tmp_path / "playlist.m3u8"
        path.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\n{wav}\n#EXT-X-ENDLIST\n")
    elif kind == "sdp":
        path = tmp_path / "session.sdp"
        path.write_text("v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\n"
                        "m=audio 5004 RTP/AVP 97\na=rtpmap:97 L16/44100/2\n")
    else:  # image2: a name with a frame-number pattern makes ffmpeg read frame1.png, frame2.png...
        path = tmp_path / "frame%d.png"
        subprocess.run([ffmpeg_binary(), "-v", "error", "-f", "lavfi", "-i", "color=red:size=16x16",
                        "-frames:v", "1", str(tmp_path / "frame1.png")], check=True)
        path.write_bytes((tmp_path / "frame1.png").read_bytes())
    return str(path)


@pytest.mark.parametrize("kind", ["concat", "hls", "sdp", "image2"])
def test_playlists_and_other_indirections_are_refused(tmp_path, kind):
    path = _indirection(tmp_path, kind)
    with pytest.raises(AudioError) as raised:
        decoding.load(path, RATE)
    assert str(raised.value) == f"{path}: a playlist/indirection format ({kind}) is not an audio file"


@pytest.mark.parametrize("extension", ["wav", "flac", "mp3", "ogg", "m4a"])
def test_audio_formats_still_decode(tmp_path, extension):
    source = write_pcm(tmp_path / "source.wav", tone(RATE * 2, 2))
    path = str(tmp_path / f"song.{extension}")
    if extension != "wav":
        subprocess.run([ffmpeg_binary(), "-v", "error", "-i", source, path], check=True)
    else:
        path = source
    assert abs(len(decoding.load(path, RATE)) - 2 * RATE) < 0.05 * RATE


def test_a_stalled_source_fails_with_the_timeout_and_its_ffmpeg_is_killed(tmp_path, stalled_source):
    from tests.conftest import running_ffmpeg
    from tests.services import descendants

    source = stalled_source(tmp_path / "stalled.wav", seconds=120)
    started, decoded = time.monotonic(), 0
    with pytest.raises(AudioError) as raised:
        for block in decoding.decode(str(source.path), RATE, stall_timeout=3):
            decoded += len(block)
    assert str(raised.value) == (f"{source.path}: no data from the source for 3 s (--stall_timeout); "
                                 "decoding stopped")
    assert decoded > 115 * RATE  # what the source sent, less what ffmpeg still held in its buffers
    assert time.monotonic() - started < 30
    assert running_ffmpeg(descendants(os.getpid())) == []


def test_a_slow_consumer_never_trips_the_timeout(tmp_path):
    """The clock measures ffmpeg's silence while we wait on it, not the time we spend elsewhere."""
    path = write_pcm(tmp_path / "a.wav", tone(RATE * 3, 2))
    blocks = 0
    # A timeout of 2 s, not less: on a machine busy with two test workers ffmpeg may wait that long
    # for a core (at 0.5 s it failed so); each block's wait is longer still.
    for _ in decoding.decode(path, RATE, block_samples=RATE, stall_timeout=2.0):
        blocks += 1
        time.sleep(2.5)
    assert blocks == 3


def test_an_encoder_that_takes_no_data_fails_with_the_timeout(tmp_path):
    encoder = encoding.Encoder(str(tmp_path / "out.flac"), RATE, codec="flac", stall_timeout=2)
    os.kill(encoder._process.pid, signal.SIGSTOP)  # as stuck as ffmpeg on a stalled destination
    block = tone(RATE, 2).astype(np.float32)
    started = time.monotonic()
    with pytest.raises(EncodeError) as raised:
        for _ in range(100):  # 35 MB, far more than a pipe holds
            encoder.write(block)
    assert str(raised.value) == (f"{tmp_path / 'out.flac'}: the encoder took no data for 2 s (--stall_timeout); "
                                 "encoding stopped")
    assert time.monotonic() - started < 20
    assert encoder._process.poll() is not None and os.listdir(tmp_path) == []


def test_stall_timeout_must_be_positive():
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(InputError, match="--stall_timeout"):
            check_stall_timeout(bad, "--stall_timeout")
    assert check_stall_timeout(0.5, "--stall_timeout") == 0.5



def test_a_source_that_drips_slower_than_it_plays_fails_by_its_deadline(tmp_path, dripping_source):
    """Never quiet for the stall timeout, but slower than real time: the deadline stops it."""
    from tests.conftest import running_ffmpeg
    from tests.services import descendants

    source = dripping_source(tmp_path / "dripping.wav", seconds=2)
    decoded = 0
    with pytest.raises(AudioError) as raised:
        for block in decoding.decode(str(source.path), RATE, stall_timeout=3):
            decoded += len(block)
    message = str(raised.value)
    assert re.fullmatch(re.escape(f"{source.path}: past its decoding deadline of ") + r"\d+ s \(--stall_timeout 3 s "
                        r"plus the [\d.]+ s of audio decoded\): the source delivers slower than it plays; "
                        r"decoding stopped", message), message
    assert 2 * RATE < decoded < 20 * RATE  # it went on after its first seconds, for a while only
    assert running_ffmpeg(descendants(os.getpid())) == []


def test_a_two_hour_file_of_93_kb_is_refused_before_decoding(tmp_path):
    from tests.conftest import write_silent_flac

    path = write_silent_flac(tmp_path / "silence.flac", 7200.0)
    assert 90_000 < path.stat().st_size < 96_000
    assert decoding.probe_duration(str(path)) == 7200.0
    blocks = decoding.decode(str(path), RATE, max_duration=decoding.DEFAULT_MAX_DURATION)
    with pytest.raises(AudioError) as raised:
        next(blocks)
    assert str(raised.value) == f"{path}: lasts 7200.0 s, longer than --max_duration 5400 s; not decoded"
    # The span to decode is what counts, and 0 is no limit.
    assert len(decoding.load(str(path), RATE, offset=7190.0)) == 10 * RATE
    assert len(next(decoding.decode(str(path), RATE, max_duration=0))) == BLOCK_SAMPLES


def test_a_file_that_decodes_past_what_it_declares_stops_at_the_limit(tmp_path):
    from tests.conftest import write_silent_flac

    path = write_silent_flac(tmp_path / "lies.flac", 30.0, declared=5.0)
    assert decoding.probe_duration(str(path)) == 5.0
    decoded = 0
    with pytest.raises(AudioError) as raised:
        for block in decoding.decode(str(path), RATE, max_duration=10):
            decoded += len(block)
    assert str(raised.value) == f"{path}: decodes to more than --max_duration 10 s; decoding stopped"
    assert 10 * RATE - BLOCK_SAMPLES < decoded <= 10 * RATE  # never a sample past the limit
    assert len(decoding.load(str(path), RATE)) == 30 * RATE  # without a limit, all of it


def test_a_track_as_long_as_the_limit_passes(tmp_path):
    path = write_pcm(tmp_path / "a.wav", tone(3 * RATE, 2))
    assert sum(len(b) for b in decoding.decode(path, RATE, max_duration=3)) == 3 * RATE
    with pytest.raises(AudioError, match="lasts 3.0 s, longer than --max_duration 2.5 s"):
        list(decoding.decode(path, RATE, max_duration=2.5))


def test_max_duration_must_be_zero_or_more():
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(InputError, match="--max_duration"):
            decoding.check_max_duration(bad, "--max_duration")
    assert decoding.check_max_duration(0, "--max_duration") == 0

# Run as a separate process by the test below: decodes a source that stalls and encodes what it
# delivers, each ffmpeg started on a thread that then ends (as Beam's and the engine's worker
# threads do); once the source has gone quiet, its decoder waits on it, as on a stalled mount.
_VICTIM = """
import sys, threading, time
from models import decoding, encoding

source, output = sys.argv[1:]
blocks = decoding.decode(source, 44100, block_samples=4410)
first, encoders = [], []
starter = threading.Thread(target=lambda: first.append(next(blocks)))
starter.start(); starter.join()
starter = threading.Thread(target=lambda: encoders.append(encoding.Encoder(output, 44100, codec="flac")))
starter.start(); starter.join()
encoders[0].write(first[0])
last = [time.monotonic()]

def consume():
    for block in blocks:
        encoders[0].write(block)
        last[0] = time.monotonic()

threading.Thread(target=consume, daemon=True).start()
while time.monotonic() - last[0] < 2:
    time.sleep(0.1)
print("ready", flush=True)
time.sleep(600)
"""


def test_no_ffmpeg_outlives_a_killed_process(tmp_path, stalled_source):
    from tests.conftest import REPO_ROOT, running_ffmpeg
    from tests.services import descendants

    source = stalled_source(tmp_path / "stalled.wav", seconds=60)
    victim = subprocess.Popen([sys.executable, "-c", _VICTIM, str(source.path), str(tmp_path / "out.flac")],
                              cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert victim.stdout.readline() == "ready\n"
        children = running_ffmpeg(descendants(victim.pid))
        assert len(children) == 2  # the decoder and the encoder, alive after the threads that started them
        victim.kill()
        victim.wait()
        deadline = time.monotonic() + 5
        while running_ffmpeg(children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert running_ffmpeg(children) == []
    finally:
        victim.kill()
        victim.wait()
