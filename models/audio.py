"""Audio decoding and encoding through ffmpeg, streamed in blocks.

Decoding gives float32 stereo ``[n_samples, 2]`` at the model's sample rate,
the way Spleeter prepares its input (mono duplicated, channels past the second
dropped); encoding takes the same layout. Neither ever holds a whole track.

ffmpeg reads only the file it is given (no other protocol, no playlist or
other indirection format), is killed when it delivers or takes no data for a
stall timeout, or when it delivers audio slower than it plays (the decoding
deadline), and dies with the process that started it. A decode may be capped
at a longest duration: a source declaring more is refused before decoding,
and one that decodes to more is stopped at the limit.
"""

from __future__ import annotations

import functools
import math
import os
import queue
import re
import select
import shutil
import stat
import struct
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import ffmpeg
import numpy as np

from models.errors import AudioError, EncodeError, InputError

BLOCK_SAMPLES = 1 << 16
FLOAT_BYTES = 4
# Seconds ffmpeg may deliver (decoding) or accept (encoding) no data before it is killed.
DEFAULT_STALL_TIMEOUT = 60.0
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

# codec -> (ffmpeg muxer, ffmpeg audio encoder); wav's encoder depends on the sample format.
CODECS = {
    "wav": ("wav", None),
    "flac": ("flac", "flac"),
    "mp3": ("mp3", "libmp3lame"),
    "ogg": ("ogg", "libvorbis"),
    "m4a": ("ipod", "aac"),
    "wma": ("asf", "wmav2"),
}
LOSSY = {"mp3", "ogg", "m4a", "wma"}
SAMPLE_FORMATS = {  # --sample-format -> (wav encoder, flac sample_fmt)
    "s16": ("pcm_s16le", "s16"),
    "s24": ("pcm_s24le", "s32"),
    "f32": ("pcm_f32le", None),
}


def ffmpeg_binary() -> str:
    """ffmpeg from PATH, else the one the imageio-ffmpeg wheel ships."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError:
        raise AudioError("ffmpeg not found: install it on PATH or `pip install imageio-ffmpeg`") from None
    return imageio_ffmpeg.get_ffmpeg_exe()


def check_stall_timeout(seconds: float, option: str) -> float:
    """``seconds`` if it is a usable stall timeout, else an InputError naming ``option``."""
    if not (math.isfinite(seconds) and seconds > 0):
        raise InputError(f"{option} {seconds:g}: give the seconds ffmpeg may go without data, above 0")
    return seconds


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


def _file_url(path: str) -> str:
    """``path`` for ffmpeg: only the file protocol, so ``-``, ``a:b.mp3`` or ``concat:x|y`` are plain names."""
    return "file:" + os.path.abspath(path)


class _Spawner:
    """Starts ffmpeg processes that die with this process, also when it is SIGKILLed.

    A process killed outright runs no clean-up, and an ffmpeg blocked reading a
    stalled source never notices that its reader is gone; only the kernel can
    end it, through the parent-death signal (Linux's PR_SET_PDEATHSIG). That
    signal fires when the *thread* that forked the child ends, not the process,
    and Beam and pipeline/separate.py start ffmpeg on worker threads that may end
    while their ffmpeg must go on. So every ffmpeg is started by this one
    thread, which lives as long as the process.

    The signal is armed by util-linux's ``setpriv``, which then execs ffmpeg:
    arming it in Python between fork and exec (``preexec_fn``) forces a full
    fork of this multi-threaded process, where gRPC's fork handlers (Beam's
    workers) could kill the child before ffmpeg started. (Without setpriv, as
    elsewhere than Linux, ffmpeg starts without the signal.)
    """

    def __init__(self):
        found = shutil.which("setpriv") if sys.platform.startswith("linux") else None
        self._prefix = [found, "--pdeathsig", "KILL", "--"] if found else None
        self.forget_thread()

    def forget_thread(self):
        self._lock, self._requests = threading.Lock(), None

    def popen(self, cmd: list[str], **kwargs) -> subprocess.Popen:
        if self._prefix is None:
            return subprocess.Popen(cmd, **kwargs)
        with self._lock:
            if self._requests is None:
                self._requests = queue.SimpleQueue()
                threading.Thread(target=self._serve, args=(self._requests,), name="beamsplitter-ffmpeg",
                                 daemon=True).start()
        started: Future = Future()
        self._requests.put((cmd, kwargs, started))
        return started.result()

    def _serve(self, requests: queue.SimpleQueue):
        while True:
            cmd, kwargs, started = requests.get()
            try:
                started.set_result(subprocess.Popen(self._prefix + cmd, **kwargs))
            except BaseException as exc:
                started.set_exception(exc)


_spawner = _Spawner()
os.register_at_fork(after_in_child=_spawner.forget_thread)  # a forked copy has no spawning thread


def _wait(process: subprocess.Popen, timeout: float) -> int | None:
    """``process``'s exit status, or None after killing it when it does not end within ``timeout`` s."""
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


def partial_path(path: str) -> str:
    """The temporary name a file is written under before it is renamed to ``path``."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.part")


def is_partial(name: str) -> bool:
    """Whether a file name is one of ``partial_path``'s (left behind by a killed writer)."""
    return name.startswith(".") and name.endswith(".part")


def remove_partials_of(path: str) -> None:
    """Remove what killed writers of ``path`` left beside it: its ``partial_path`` names, no other file's."""
    folder, name = os.path.split(os.path.abspath(path))
    mine = re.compile(re.escape(f".{name}.") + r"[0-9a-f]{12}\.part")
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in names:
        if mine.fullmatch(entry):
            try:
                os.unlink(os.path.join(folder, entry))
            except FileNotFoundError:
                pass


def to_stereo(samples: np.ndarray) -> np.ndarray:
    """``[n, c]`` -> ``[n, 2]``: mono is duplicated, channels past the second are dropped."""
    if samples.shape[1] == 1:
        return np.repeat(samples, 2, axis=1)
    return samples[:, :2]


class _StderrReader(threading.Thread):
    """Drains ffmpeg's stderr so the pipe never fills and blocks the process."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream, self.lines = stream, []

    def run(self):
        for raw in self.stream:
            self.lines.append(raw.decode("utf-8", "replace").rstrip())

    def refused_format(self) -> str | None:
        """The demuxer ffmpeg detected, when -format_whitelist refused it."""
        for line in self.lines:
            match = re.match(r"\[(\S+) @ 0x[0-9a-f]+\] Format not on whitelist", line)
            if match:
                return match[1]
        return None

    def cause(self, path: str) -> str:
        """The last meaningful line ffmpeg wrote, without the path it repeats."""
        ignored = ("Conversion failed", "Press [q]", "size=", "video:", "Error closing", "Error writing trailer")
        meaningful = [l.strip() for l in self.lines if l.strip() and not l.strip().startswith(ignored)]
        if not meaningful:
            return "ffmpeg failed without a message"
        cause = meaningful[-1]
        cause = cause.replace(f"{path}: ", "").replace(path, "")
        return re.sub(r"^\[[^\]]+ @ 0x[0-9a-f]+\] ", "", cause)


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
           "-format_whitelist", _allowed_formats(binary), "-i", _file_url(path)]
    process = _spawner.popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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
    url = _file_url(path)
    output = {"vn": None, "f": "wav", "acodec": "pcm_f32le", "ar": sample_rate}
    # Seeking on the output side (after -i), as Spleeter does, is sample-exact.
    if offset:
        output["ss"] = f"{offset:.6f}"
    if duration is not None:
        output["t"] = f"{duration:.6f}"
    binary = ffmpeg_binary()
    cmd = (ffmpeg.input(url, protocol_whitelist="file", format_whitelist=_allowed_formats(binary))
           .output("pipe:1", **output).global_args("-nostdin", "-hide_banner", "-nostats"))
    process = _spawner.popen(cmd.compile(cmd=binary), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    stderr = _StderrReader(process.stderr)
    stderr.start()
    read = _PipeReader(process.stdout.fileno(), stall_timeout, skipped=offset)
    finished = False
    try:
        channels = _read_wav_header(read)
        if channels is None:
            if _wait(process, stall_timeout) is None:
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
        returncode = _wait(process, stall_timeout)
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


# A bitrate as ffmpeg's option parser reads one (av_strtod): a decimal number with an optional
# SI prefix; the exponent (1e5), binary (Ki) and byte (B) forms it also takes are refused, as
# more surprising than useful in a bitrate.
_BITRATE = re.compile(r"(\d+(\.\d*)?|\.\d+)([kKMG])?")
_PREFIXES = {None: 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}


def parse_bitrate(bitrate: str) -> float:
    """Bits per second of a bitrate that ``_BITRATE`` matches (``128k`` -> 128000.0)."""
    match = _BITRATE.fullmatch(str(bitrate))
    return float(match[1]) * _PREFIXES[match[3]]


@dataclass(frozen=True)
class EncodeOptions:
    """How stems are encoded: ``codec`` (CODECS), ``bitrate`` of lossy codecs, ``sample_format`` of wav/flac."""

    codec: str = "wav"
    bitrate: str | None = "128k"
    sample_format: str = "s16"

    def check(self) -> "EncodeOptions":
        """These options, if ffmpeg can write stems with them; else an InputError naming the option.

        Run before anything is decoded, so that a typo never costs a whole run's separation.
        """
        if self.codec not in CODECS:
            raise InputError(f"--codec {self.codec}: unknown codec (choose from {', '.join(CODECS)})")
        if self.sample_format not in SAMPLE_FORMATS:
            raise InputError(f"--sample-format {self.sample_format}: unknown sample format "
                             f"(choose from {', '.join(SAMPLE_FORMATS)})")
        if self.codec == "flac" and SAMPLE_FORMATS[self.sample_format][1] is None:
            raise InputError(f"--sample-format {self.sample_format} cannot go with --codec flac: FLAC has no float "
                             "samples (use s16 or s24, or --codec wav for f32)")
        if self.bitrate is not None and not _BITRATE.fullmatch(str(self.bitrate)):
            raise InputError(f"--bitrate {self.bitrate}: give bits per second as digits with an optional "
                             "k or M (128k, 320000, 1.5M)")
        if self.bitrate is not None and not parse_bitrate(self.bitrate) >= 1:
            raise InputError(f"--bitrate {self.bitrate}: give a bitrate above 0")
        return self

    def as_written(self) -> dict:
        """What the stem files depend on: the bitrate of lossy codecs, the sample format of the others.

        Recorded with each track, so that a run asking for other stems redoes it.
        """
        lossy = self.codec in LOSSY
        return {"codec": self.codec, "bitrate": self.bitrate if lossy else None,
                "sample_format": None if lossy else self.sample_format}


class Encoder:
    """Streams float32 stereo blocks into an audio file, published atomically.

    The file is written under a temporary name in the destination folder and
    renamed into place by ``close()``; ``abort()`` (or leaving a ``with`` block
    by an exception) removes it, so a half-written stem never exists under its
    final name.
    """

    def __init__(self, path: str, sample_rate: int, codec: str = "wav", bitrate: str | None = "128k",
                 sample_format: str = "s16", stall_timeout: float = DEFAULT_STALL_TIMEOUT):
        if codec not in CODECS:
            raise EncodeError(f"{path}: unknown codec {codec!r} (choose from {', '.join(CODECS)})")
        if sample_format not in SAMPLE_FORMATS:
            raise EncodeError(f"{path}: unknown sample format {sample_format!r} (choose from {', '.join(SAMPLE_FORMATS)})")
        self.path = path
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise EncodeError(f"{path}: cannot create folder ({exc.strerror})") from None
        self._temp = partial_path(path)
        self._url = _file_url(self._temp)
        muxer, encoder = CODECS[codec]
        wav_encoder, flac_format = SAMPLE_FORMATS[sample_format]
        output = {"acodec": wav_encoder if codec == "wav" else encoder, "ar": sample_rate, "f": muxer,
                  "map_metadata": "-1", "fflags": "+bitexact", "flags:a": "+bitexact"}
        if codec == "flac" and flac_format:
            output["sample_fmt"] = flac_format
        if codec in LOSSY and bitrate:
            output["b:a"] = bitrate
        # bitexact: no encoder version or timestamps in the file, so a retried
        # write produces the same bytes.
        cmd = (ffmpeg.input("pipe:0", f="f32le", ar=sample_rate, ac=2, protocol_whitelist="pipe")
               .output(self._url, **output)
               .global_args("-nostdin", "-hide_banner", "-nostats", "-v", "error")
               .overwrite_output()
               .compile(cmd=ffmpeg_binary()))
        self._process = _spawner.popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._stderr = _StderrReader(self._process.stderr)
        self._stderr.start()
        # Non-blocking, so that a write waits for ffmpeg at most stall_timeout.
        self._stdin = self._process.stdin.fileno()
        os.set_blocking(self._stdin, False)
        self._writable = select.poll()
        self._writable.register(self._stdin, select.POLLOUT)
        self.stall_timeout = stall_timeout
        self.samples = 0
        self.published = False

    def write(self, block: np.ndarray) -> None:
        data = memoryview(np.ascontiguousarray(block, dtype="<f4")).cast("B")
        try:
            while data:
                if not self._writable.poll(self.stall_timeout * 1000):
                    self.abort()
                    raise EncodeError(f"{self.path}: the encoder took no data for {self.stall_timeout:g} s "
                                      "(--stall_timeout); encoding stopped")
                try:
                    data = data[os.write(self._stdin, data):]
                except BlockingIOError:
                    pass
        except OSError:  # BrokenPipeError above all: ffmpeg has failed, its message says why
            self.abort()
            raise EncodeError(f"{self.path}: encoding failed ({self._stderr.cause(self._url)})") from None
        self.samples += len(block)

    def close(self) -> None:
        """Finish the file and move it to its final name."""
        try:
            self._process.stdin.close()
        except OSError:
            pass
        # Finishing (a trailer, a header rewritten) is quick; longer means a stalled destination.
        returncode = _wait(self._process, self.stall_timeout)
        if returncode is None:
            self.abort()
            raise EncodeError(f"{self.path}: the encoder did not finish within {self.stall_timeout:g} s "
                              "(--stall_timeout); encoding stopped")
        self._stderr.join()
        if returncode != 0:
            self.abort()
            raise EncodeError(f"{self.path}: encoding failed ({self._stderr.cause(self._url)})")
        try:
            os.replace(self._temp, self.path)
        except OSError as exc:
            self.abort()
            raise EncodeError(f"{self.path}: cannot publish the stem ({exc.strerror})") from None
        self.published = True

    def abort(self) -> None:
        """Stop encoding and remove the file, even if ``close()`` already published it."""
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        for path in (self._temp, self.path if self.published else None):
            if path:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
        self.published = False

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def save(path: str, samples: np.ndarray, sample_rate: int, **kwargs) -> None:
    """Write a whole ``[n_samples, 2]`` array (for short outputs and tests)."""
    with Encoder(path, sample_rate, **kwargs) as encoder:
        for start in range(0, len(samples), BLOCK_SAMPLES):
            encoder.write(samples[start:start + BLOCK_SAMPLES])
