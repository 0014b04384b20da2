"""Encoding stems through ffmpeg: the codec tables, the encoding options, the encoder.

Encoding takes float32 stereo ``[n_samples, 2]`` blocks, never a whole track,
and publishes each file atomically: it is written under a partial name beside
its destination and renamed into place, so a half-written stem never exists
under its final name. ffmpeg is killed when it takes no data for a stall
timeout, and dies with the process that started it.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import uuid
from dataclasses import dataclass

import ffmpeg
import numpy as np

from models.errors import EncodeError, InputError
from models.ffmpeg_process import (BLOCK_SAMPLES, DEFAULT_STALL_TIMEOUT, StderrReader, ffmpeg_binary, file_url,
                                   spawner, wait_or_kill)
from models.loudness import FILTER as LOUDNESS_FILTER, Loudness

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
SAMPLE_FORMATS = {  # --sample_format -> (wav encoder, flac sample_fmt)
    "s16": ("pcm_s16le", "s16"),
    "s24": ("pcm_s24le", "s32"),
    "f32": ("pcm_f32le", None),
}


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
            raise InputError(f"--sample_format {self.sample_format}: unknown sample format "
                             f"(choose from {', '.join(SAMPLE_FORMATS)})")
        if self.codec == "flac" and SAMPLE_FORMATS[self.sample_format][1] is None:
            raise InputError(f"--sample_format {self.sample_format} cannot go with --codec flac: FLAC has no float "
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

    ``measure_loudness``: the samples also go through ebur128 (models/loudness.py),
    a second output of the same ffmpeg that leaves the file's bytes as they
    are; ``loudness`` holds its figures once ``close()`` has published the file.
    """

    def __init__(self, path: str, sample_rate: int, codec: str = "wav", bitrate: str | None = "128k",
                 sample_format: str = "s16", stall_timeout: float = DEFAULT_STALL_TIMEOUT,
                 measure_loudness: bool = False):
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
        self._url = file_url(self._temp)
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
        source = ffmpeg.input("pipe:0", f="f32le", ar=sample_rate, ac=2, protocol_whitelist="pipe")
        outputs = [source.output(self._url, **output)]
        if measure_loudness:  # ebur128 logs its summary at info level, errors are told apart by their level
            outputs.append(source.output("-", f="null", af=LOUDNESS_FILTER))
        cmd = (ffmpeg.merge_outputs(*outputs)
               .global_args("-nostdin", "-hide_banner", "-nostats",
                            "-loglevel", "level+info" if measure_loudness else "error")
               .overwrite_output()
               .compile(cmd=ffmpeg_binary()))
        self._process = spawner.popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._stderr = StderrReader(self._process.stderr, levelled=measure_loudness)
        self._stderr.start()
        # Non-blocking, so that a write waits for ffmpeg at most stall_timeout.
        self._stdin = self._process.stdin.fileno()
        os.set_blocking(self._stdin, False)
        self._writable = select.poll()
        self._writable.register(self._stdin, select.POLLOUT)
        self.stall_timeout = stall_timeout
        self.samples = 0
        self.published = False
        self.measure_loudness = measure_loudness
        self.loudness: Loudness | None = None

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
        returncode = wait_or_kill(self._process, self.stall_timeout)
        if returncode is None:
            self.abort()
            raise EncodeError(f"{self.path}: the encoder did not finish within {self.stall_timeout:g} s "
                              "(--stall_timeout); encoding stopped")
        self._stderr.join()
        if returncode != 0:
            self.abort()
            raise EncodeError(f"{self.path}: encoding failed ({self._stderr.cause(self._url)})")
        if self.measure_loudness:
            self.loudness = Loudness.from_summary(self._stderr.info)
            if self.loudness is None:
                self.abort()
                raise EncodeError(f"{self.path}: ffmpeg's ebur128 gave no loudness summary")
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
