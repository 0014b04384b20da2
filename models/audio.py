"""Audio decoding and encoding through ffmpeg, streamed in blocks.

Decoding gives float32 stereo ``[n_samples, 2]`` at the model's sample rate,
the way Spleeter prepares its input (mono duplicated, channels past the second
dropped); encoding takes the same layout. Neither ever holds a whole track.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import ffmpeg
import numpy as np

from models.errors import AudioError, EncodeError

BLOCK_SAMPLES = 1 << 16
FLOAT_BYTES = 4

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


def partial_path(path: str) -> str:
    """The temporary name a file is written under before it is renamed to ``path``."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.part")


def is_partial(name: str) -> bool:
    """Whether a file name is one of ``partial_path``'s (left behind by a killed writer)."""
    return name.startswith(".") and name.endswith(".part")


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
    source_sample_rate: int = 0
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
    if p.stat().st_size == 0:
        raise AudioError(f"{name or path}: empty file")
    missing = _declared_wav_shortfall(p)
    if missing:
        raise AudioError(f"{name or path}: truncated WAV file ({missing} bytes of audio missing)")


def decode(
    path: str,
    sample_rate: int,
    offset: float = 0.0,
    duration: float | None = None,
    info: DecodedInfo | None = None,
    block_samples: int = BLOCK_SAMPLES,
    name: str | None = None,
) -> Iterator[np.ndarray]:
    """Yield float32 stereo blocks ``[<=block_samples, 2]`` of ``path`` at ``sample_rate`` Hz.

    ``offset`` and ``duration`` are in seconds; ``duration=None`` decodes to the
    end. Raises ``AudioError`` naming ``path`` for a missing, unreadable, empty,
    truncated or non-audio input, or as ``name`` when ``path`` is a local copy of
    it. ``info``, if given, is filled in as decoding goes.
    """
    check_readable(path, name)
    name = name or path
    info = info if info is not None else DecodedInfo()
    output = {"vn": None, "f": "wav", "acodec": "pcm_f32le", "ar": sample_rate}
    # Seeking on the output side (after -i), as Spleeter does, is sample-exact.
    if offset:
        output["ss"] = f"{offset:.6f}"
    if duration is not None:
        output["t"] = f"{duration:.6f}"
    cmd = ffmpeg.input(path).output("pipe:1", **output).global_args("-nostdin", "-hide_banner", "-nostats")
    cmd = cmd.compile(cmd=ffmpeg_binary())
    process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stderr = _StderrReader(process.stderr)
    stderr.start()
    finished = False
    try:
        channels = _read_wav_header(process.stdout)
        if channels is None:
            process.wait()
            stderr.join()
            raise AudioError(f"{name}: not decodable audio ({stderr.cause(path)})")
        info.source_channels = channels
        frame_bytes = channels * FLOAT_BYTES
        pending = b""
        while True:
            data = process.stdout.read(block_samples * frame_bytes)
            if not data:
                break
            data = pending + data
            usable = len(data) - len(data) % frame_bytes
            pending = data[usable:]
            block = np.frombuffer(data[:usable], dtype="<f4").reshape(-1, channels)
            info.samples += len(block)
            yield to_stereo(block)
        returncode = process.wait()
        stderr.join()
        if returncode != 0:
            raise AudioError(f"{name}: decoding failed ({stderr.cause(path)})")
        if info.samples == 0:
            raise AudioError(f"{name}: contains no audio samples")
        declared = _parse_duration(stderr.lines)
        if declared is not None:
            expected = declared - offset if duration is None else min(duration, declared - offset)
            decoded = info.samples / sample_rate
            if decoded < expected - max(0.1, 0.01 * expected):
                raise AudioError(f"{name}: truncated (declares {expected:.2f} s, decodes to {decoded:.2f} s)")
        finished = True
    finally:
        if not finished and process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()


def _read_wav_header(stream) -> int | None:
    """Consume a streamed RIFF header up to the data chunk; return the channel count."""
    head = stream.read(12)
    if len(head) < 12 or head[:4] != b"RIFF":
        return None
    channels = None
    while True:
        header = stream.read(8)
        if len(header) < 8:
            return None
        chunk_id, size = header[:4], struct.unpack("<I", header[4:])[0]
        if chunk_id == b"data":
            return channels
        body = stream.read(size + (size & 1))
        if chunk_id == b"fmt ":
            channels = struct.unpack("<H", body[2:4])[0]


def load(path: str, sample_rate: int, offset: float = 0.0, duration: float | None = None) -> np.ndarray:
    """The whole of ``path`` as float32 stereo ``[n_samples, 2]`` (for short inputs and tests)."""
    blocks = list(decode(path, sample_rate, offset, duration))
    return np.concatenate(blocks) if blocks else np.zeros((0, 2), np.float32)


@dataclass(frozen=True)
class EncodeOptions:
    """How stems are encoded: ``codec`` (CODECS), ``bitrate`` of lossy codecs, ``sample_format`` of wav/flac."""

    codec: str = "wav"
    bitrate: str | None = "128k"
    sample_format: str = "s16"


class Encoder:
    """Streams float32 stereo blocks into an audio file, published atomically.

    The file is written under a temporary name in the destination folder and
    renamed into place by ``close()``; ``abort()`` (or leaving a ``with`` block
    by an exception) removes it, so a half-written stem never exists under its
    final name.
    """

    def __init__(self, path: str, sample_rate: int, codec: str = "wav", bitrate: str | None = "128k",
                 sample_format: str = "s16"):
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
        cmd = (ffmpeg.input("pipe:0", f="f32le", ar=sample_rate, ac=2)
               .output(self._temp, **output)
               .global_args("-nostdin", "-hide_banner", "-nostats", "-v", "error")
               .overwrite_output()
               .compile(cmd=ffmpeg_binary()))
        self._process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._stderr = _StderrReader(self._process.stderr)
        self._stderr.start()
        self.samples = 0
        self.published = False

    def write(self, block: np.ndarray) -> None:
        try:
            self._process.stdin.write(np.ascontiguousarray(block, dtype="<f4").tobytes())
        except (BrokenPipeError, OSError):
            self.abort()
            raise EncodeError(f"{self.path}: encoding failed ({self._stderr.cause(self._temp)})") from None
        self.samples += len(block)

    def close(self) -> None:
        """Finish the file and move it to its final name."""
        try:
            self._process.stdin.close()
        except OSError:
            pass
        returncode = self._process.wait()
        self._stderr.join()
        if returncode != 0:
            self.abort()
            raise EncodeError(f"{self.path}: encoding failed ({self._stderr.cause(self._temp)})")
        os.replace(self._temp, self.path)
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
