"""Probing and decoding audio through ffmpeg, streamed in blocks.

Decoding gives float32 stereo ``[n_samples, 2]`` at the model's sample rate,
the way Spleeter prepares its input (mono duplicated, channels past the second
dropped), and never holds a whole track.

ffmpeg reads only the file it is given (no other protocol, no playlist or
other indirection format), is killed when it delivers no data for a stall
timeout, or when it delivers audio slower than it plays (the decoding
deadline), and dies with the process that started it. A decode may be capped
at a longest duration: a source declaring more is refused before decoding,
and one that decodes to more is stopped at the limit.
"""

from __future__ import annotations

import functools
import math
import os
import re
import select
import stat
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import ffmpeg
import numpy as np

from models.errors import AudioError, InputError
from models.ffmpeg_process import (BLOCK_SAMPLES, DEFAULT_STALL_TIMEOUT, StderrReader, ffmpeg_binary, file_url,
                                   spawner, wait_or_kill)

FLOAT_BYTES = 4
# Longest audio the commands decode per track, in seconds (--max_duration; 0: no limit). Longer
# than a CD and most concerts; a catalogue of long DJ mixes raises it. Two hours of digital
# silence is a 93 KB FLAC that writes 1.3 GB per WAV stem: the limit is what bounds a row's cost.
DEFAULT_MAX_DURATION = 5400.0

# Demuxers that open other files or URLs named inside the input (playlists, file
# lists, session descriptions, file-name patterns, scripts): a catalogue entry
# must never make a worker read anything but itself. Every other demuxer of the
# ffmpeg at hand is allowed (``separate`` reads "anything ffmpeg reads").
INDIRECT_FORMATS = frozenset({
    "concat", "hls", "dash", "imf", "sdp", "rtp", "rtsp", "sap", "image2", "avisynth", "vapoursynth", "lavfi",
})


def check_max_duration(seconds: float, option: str) -> float:
    """``seconds`` if it is a usable --max_duration (0: no limit), else an InputError naming ``option``."""
    if not (math.isfinite(seconds) and seconds >= 0):
        raise InputError(f"{option} {seconds:g}: give the longest track to decode in seconds, or 0 for no limit")
    return seconds


@functools.lru_cache(maxsize=None)
def _allowed_formats(binary: str) -> str:
    """``-format_whitelist`` for ``binary``: its demuxers less INDIRECT_FORMATS."""
    listing = subprocess.run([binary, "-hide_banner", "-demuxers"], capture_output=True, text=True).stdout
    names = set()
    for line in listing.split("--", 1)[-1].splitlines():
        match = re.match(r"\s*D\S*\s+(\S+)", line)
        if match:
            names.update(match[1].split(","))  # "mov,mp4,m4a,..." is one demuxer
    if not names:
        raise AudioError(f"{binary} -demuxers listed no formats: is it ffmpeg?")
    return ",".join(sorted(names - INDIRECT_FORMATS))


def to_stereo(samples: np.ndarray) -> np.ndarray:
    """``[n, c]`` -> ``[n, 2]``: mono is duplicated, channels past the second are dropped."""
    if samples.shape[1] == 1:
        return np.repeat(samples, 2, axis=1)
    return samples[:, :2]


def _declared_wav_shortfall(path: Path) -> int | None:
    """Bytes a RIFF/WAVE header promises beyond the end of the file, if any.

    ffmpeg decodes a cut WAV file without complaint (it re-estimates the
    duration from the file size), so a truncated WAV is caught here instead.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            size = os.fstat(f.fileno()).st_size
            while True:
                header = f.read(8)
                if len(header) < 8:
                    return None
                chunk_id, chunk_size = header[:4], struct.unpack("<I", header[4:])[0]
                if chunk_id == b"data":
                    if chunk_size in (0, 0xFFFFFFFF):  # streamed WAV: length unknown by design
                        return None
                    missing = f.tell() + chunk_size - size
                    return missing if missing > 0 else None
                f.seek(chunk_size + (chunk_size & 1), os.SEEK_CUR)
    except OSError:
        return None


def _parse_duration(lines: list[str]) -> float | None:
    """The input duration ffmpeg reports, unless it only estimated it."""
    if any("Estimating duration from bitrate" in l for l in lines):
        return None
    for line in lines:
        match = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", line)
        if match:
            h, m, s = match.groups()
            return int(h) * 3600 + int(m) * 60 + float(s)
    return None


@dataclass
class DecodedInfo:
    """What a finished decode learnt about its source."""

    source_channels: int = 0
    samples: int = 0


def check_readable(path: str, name: str | None = None) -> None:
    """Fail early, naming the file (as ``name``, if given), for what ffmpeg would report obscurely."""
    if "://" in path:
        return
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{name or path}: no such file")
    if p.is_dir():
        raise AudioError(f"{name or path}: is a directory, not an audio file")
    if not os.access(p, os.R_OK):
        raise AudioError(f"{name or path}: permission denied")
    mode = p.stat().st_mode
    if stat.S_ISFIFO(mode):
        return  # a stream: it has no size, and reading its head here would take it from ffmpeg
    if not stat.S_ISREG(mode):
        raise AudioError(f"{name or path}: not a regular file")
    if p.stat().st_size == 0:
        raise AudioError(f"{name or path}: empty file")
    missing = _declared_wav_shortfall(p)
    if missing:
        raise AudioError(f"{name or path}: truncated WAV file ({missing} bytes of audio missing)")


def probe_duration(path: str, stall_timeout: float = DEFAULT_STALL_TIMEOUT, name: str | None = None) -> float | None:
    """The duration ``path`` declares, in seconds, as ffmpeg reads it from the file's headers.

    None when it declares none, when ffmpeg only estimated one from a bitrate,
    when ffmpeg cannot read the file (decoding then says why), and for a FIFO,
    whose head a probe would take from the decoder. Nothing is decoded. Raises
    ``AudioError`` when ffmpeg gets no answer from the source for
    ``stall_timeout`` seconds.
    """
    if "://" not in path and stat.S_ISFIFO(os.stat(path).st_mode):
        return None
    binary = ffmpeg_binary()
    cmd = [binary, "-nostdin", "-hide_banner", "-protocol_whitelist", "file",
           "-format_whitelist", _allowed_formats(binary), "-i", file_url(path)]
    process = spawner.popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, stderr = process.communicate(timeout=stall_timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise AudioError(_stalled_message(name or path, stall_timeout)) from None
    return _parse_duration(stderr.decode("utf-8", "replace").splitlines())


def _stalled_message(name: str, stall_timeout: float) -> str:
    return f"{name}: no data from the source for {stall_timeout:g} s (--stall_timeout); decoding stopped"


def decode(
    path: str,
    sample_rate: int,
    offset: float = 0.0,
    duration: float | None = None,
    info: DecodedInfo | None = None,
    block_samples: int = BLOCK_SAMPLES,
    name: str | None = None,
    stall_timeout: float = DEFAULT_STALL_TIMEOUT,
    max_duration: float = 0.0,
) -> Iterator[np.ndarray]:
    """Yield float32 stereo blocks ``[<=block_samples, 2]`` of ``path`` at ``sample_rate`` Hz.

    ``offset`` and ``duration`` are in seconds; ``duration=None`` decodes to the
    end. Raises ``AudioError`` naming ``path`` for a missing, unreadable, empty,
    truncated or non-audio input, for a playlist or other indirection format,
    when ffmpeg delivers nothing for ``stall_timeout`` seconds while we wait
    on it (a stalled mount, a stuck decoder), and when we have waited on it
    longer than ``stall_timeout`` plus the duration of the audio it decoded
    (the skipped ``offset`` included): a source that delivers slower than it
    plays, however steadily, fails by that deadline. Errors name ``name`` when ``path`` is a
    local copy of it. ``info``, if given, is filled in as decoding goes.

    ``max_duration`` (seconds; 0 for no limit) caps the audio to decode: a
    file that declares more (``probe_duration``, less ``offset``) fails before
    anything is decoded, and one that decodes to more fails at the limit,
    having yielded no sample past it.
    """
    check_readable(path, name)
    name = name or path
    info = info if info is not None else DecodedInfo()
    limit = round(max_duration * sample_rate) if max_duration else None
    if limit is not None:
        declared = probe_duration(path, stall_timeout, name)
        if declared is not None:
            span = declared - offset if duration is None else min(duration, declared - offset)
            if span > max_duration:
                raise AudioError(f"{name}: lasts {span:.1f} s, longer than --max_duration {max_duration:g} s; "
                                 "not decoded")
    url = file_url(path)
    output = {"vn": None, "f": "wav", "acodec": "pcm_f32le", "ar": sample_rate}
    # Seeking on the output side (after -i), as Spleeter does, is sample-exact.
    if offset:
        output["ss"] = f"{offset:.6f}"
    if duration is not None:
        output["t"] = f"{duration:.6f}"
    binary = ffmpeg_binary()
    cmd = (ffmpeg.input(url, protocol_whitelist="file", format_whitelist=_allowed_formats(binary))
           .output("pipe:1", **output).global_args("-nostdin", "-hide_banner", "-nostats"))
    process = spawner.popen(cmd.compile(cmd=binary), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    stderr = StderrReader(process.stderr)
    stderr.start()
    read = _PipeReader(process.stdout.fileno(), stall_timeout, skipped=offset)
    finished = False
    try:
        channels = _read_wav_header(read)
        if channels is None:
            if wait_or_kill(process, stall_timeout) is None:
                raise _Stalled()
            stderr.join()
            refused = stderr.refused_format()
            if refused:
                raise AudioError(f"{name}: a playlist/indirection format ({refused}) is not an audio file")
            raise AudioError(f"{name}: not decodable audio ({stderr.cause(url)})")
        info.source_channels = channels
        frame_bytes = channels * FLOAT_BYTES
        read.seconds_per_byte = 1 / (sample_rate * frame_bytes)
        pending = b""
        while True:
            data = read(block_samples * frame_bytes)
            if not data:
                break
            data = pending + data
            usable = len(data) - len(data) % frame_bytes
            pending = data[usable:]
            block = np.frombuffer(data[:usable], dtype="<f4").reshape(-1, channels)
            if limit is not None and info.samples + len(block) > limit:
                raise AudioError(f"{name}: decodes to more than --max_duration {max_duration:g} s; "
                                 "decoding stopped")
            info.samples += len(block)
            yield to_stereo(block)
        returncode = wait_or_kill(process, stall_timeout)
        if returncode is None:
            raise _Stalled()
        stderr.join()
        if returncode != 0:
            raise AudioError(f"{name}: decoding failed ({stderr.cause(url)})")
        if info.samples == 0:
            raise AudioError(f"{name}: contains no audio samples")
        declared = _parse_duration(stderr.lines)
        if declared is not None:
            expected = declared - offset if duration is None else min(duration, declared - offset)
            decoded = info.samples / sample_rate
            if decoded < expected - max(0.1, 0.01 * expected):
                raise AudioError(f"{name}: truncated (declares {expected:.2f} s, decodes to {decoded:.2f} s)")
        finished = True
    except _Stalled:
        raise AudioError(_stalled_message(name, stall_timeout)) from None
    except _Late:
        raise AudioError(f"{name}: past its decoding deadline of {read.allowed():.0f} s (--stall_timeout "
                         f"{stall_timeout:g} s plus the {read.earned():.1f} s of audio decoded): the source "
                         "delivers slower than it plays; decoding stopped") from None
    finally:
        if not finished and process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()


class _Stalled(Exception):
    pass


class _Late(Exception):
    pass


class _PipeReader:
    """``read(n)``: up to ``n`` bytes of a pipe, fewer only at its end.

    Raises ``_Stalled`` when the pipe brings nothing for ``timeout`` seconds,
    and ``_Late`` once the waits add up to more than ``allowed()``: ``timeout``
    plus the seconds of audio the pipe has brought (by ``seconds_per_byte``,
    once known) and the ``skipped`` seconds that ffmpeg decoded before them.
    The clock runs only while we wait on the pipe: a consumer that is slow
    between reads leaves data queued in it, and never trips either.
    """

    def __init__(self, fd: int, timeout: float, skipped: float = 0.0):
        self.fd, self.timeout, self.skipped = fd, timeout, skipped
        self.poll = select.poll()
        self.poll.register(fd, select.POLLIN)
        self.received, self.waited = 0, 0.0
        self.seconds_per_byte = 0.0

    def earned(self) -> float:
        """Seconds of audio ffmpeg has decoded so far, each of which it may take us a second to wait for."""
        return self.skipped + self.received * self.seconds_per_byte

    def allowed(self) -> float:
        return self.timeout + self.earned()

    def __call__(self, n: int) -> bytes:
        parts, have = [], 0
        while have < n:
            left = self.allowed() - self.waited
            if left <= 0:
                raise _Late()
            wait = min(self.timeout, left)
            started = time.monotonic()
            ready = self.poll.poll(wait * 1000)
            self.waited += time.monotonic() - started
            if not ready:
                raise _Stalled() if wait == self.timeout else _Late()
            data = os.read(self.fd, n - have)
            if not data:
                break
            parts.append(data)
            have += len(data)
            self.received += len(data)
        return b"".join(parts)


def _read_wav_header(read) -> int | None:
    """Consume a streamed RIFF header up to the data chunk with ``read(n)``; return the channel count."""
    head = read(12)
    if len(head) < 12 or head[:4] != b"RIFF":
        return None
    channels = None
    while True:
        header = read(8)
        if len(header) < 8:
            return None
        chunk_id, size = header[:4], struct.unpack("<I", header[4:])[0]
        if chunk_id == b"data":
            return channels
        body = read(size + (size & 1))
        if chunk_id == b"fmt ":
            channels = struct.unpack("<H", body[2:4])[0]


def load(path: str, sample_rate: int, offset: float = 0.0, duration: float | None = None) -> np.ndarray:
    """The whole of ``path`` as float32 stereo ``[n_samples, 2]`` (for short inputs and tests)."""
    blocks = list(decode(path, sample_rate, offset, duration))
    return np.concatenate(blocks) if blocks else np.zeros((0, 2), np.float32)


