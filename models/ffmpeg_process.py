"""ffmpeg as a process: finding the binary, starting it so that it dies with us, reading its stderr.

Every ffmpeg reads or writes only through the file protocol it is given, and is
killed when it moves no data for a stall timeout (``DEFAULT_STALL_TIMEOUT``).
"""

from __future__ import annotations

import math
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
from concurrent.futures import Future
from dataclasses import dataclass

from models.errors import AudioError, InputError

# Samples per block that decoding yields and saving writes through ffmpeg's pipes.
BLOCK_SAMPLES = 1 << 16
# Seconds ffmpeg may deliver (decoding) or accept (encoding) no data before it is killed.
DEFAULT_STALL_TIMEOUT = 60.0


@dataclass(frozen=True)
class IOLimits:
    """What reading and writing one track through ffmpeg may cost.

    ``stall_timeout``: seconds ffmpeg may deliver (decoding) or take (encoding)
    no data; ``max_duration``: seconds of audio decoded per track, 0 for no
    limit (see models.decoding.decode).
    """

    stall_timeout: float = DEFAULT_STALL_TIMEOUT
    max_duration: float = 0.0


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


def file_url(path: str) -> str:
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


spawner = _Spawner()
os.register_at_fork(after_in_child=spawner.forget_thread)  # a forked copy has no spawning thread


def wait_or_kill(process: subprocess.Popen, timeout: float) -> int | None:
    """``process``'s exit status, or None after killing it when it does not end within ``timeout`` s."""
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


# A line of ffmpeg run with ``-loglevel level+info``: its component, its level, the message.
_LEVELLED = re.compile(r"((?:\[[^\]]+ @ 0x[0-9a-f]+\] )?)\[(quiet|panic|fatal|error|warning|info)\] ?(.*)")


class StderrReader(threading.Thread):
    """Drains ffmpeg's stderr so the pipe never fills and blocks the process.

    ``levelled``: ffmpeg logs at info level with each message's level named
    (``-loglevel level+info``, for a filter's report such as ebur128's
    summary); its errors go to ``lines``, as under ``-v error``, and the rest
    to ``info``. A message of several lines names its level on its first.
    """

    def __init__(self, stream, levelled: bool = False):
        super().__init__(daemon=True)
        self.stream, self.levelled, self.lines, self.info = stream, levelled, [], []

    def run(self):
        error = False
        for raw in self.stream:
            line = raw.decode("utf-8", "replace").rstrip()
            if self.levelled:
                match = _LEVELLED.match(line)
                if match:
                    error, line = match[2] in ("panic", "fatal", "error"), match[1] + match[3]
                if not error:
                    self.info.append(line)
                    continue
            self.lines.append(line)

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

