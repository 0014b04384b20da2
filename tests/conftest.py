"""Session-wide fixtures shared by every test package (unit, parity, pipeline).

* ``models_cache``: the checkpoint cache folder, exported as ``BEAMSPLITTER_CACHE``;
* ``checkpoint_2stems``: the official 2stems checkpoint (fetched once into the cache);
* ``random_checkpoint``: factory of random-weight checkpoints in Spleeter's format;
* ``music_track``: 30 s of synthetic stereo music at 44.1 kHz (three model chunks);
* ``reference_venv``: the virtual environment holding spleeter==2.4.2;
* ``stalled_source``: factory of FIFOs that deliver a WAV's first minutes, then stall;
* ``dripping_source``: factory of FIFOs that deliver a WAV's first seconds, then drip it slower than it plays;
* ``write_silent_flac``: digital silence as FLAC, 18 bytes per 1.5 s (93 KB for two hours);
* ``flink_jar``: Beam's Flink job server jar (scripts/fetch-flink-jobserver), for every Flink test.

Order: the unit tests run first, then infra's and the pipeline's, then the ``slow`` ones (minutes-long
tracks, Flink clusters, Spleeter's own runs), each group in file order, so that a quick failure shows at
once. ``scripts/test --quick`` leaves the ``slow`` ones out.
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import subprocess
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from pipeline import demo

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = REPO_ROOT / ".cache" / "models"

# Scale of the random weights (see models.checkpoint.random_weights). At 0.4 the
# masks span most of [0, 1] (1st to 99th percentile of 4stems' sigmoid outputs
# about 0.01..0.89 on the demo's music) while fewer than 3 % of them saturate at 0
# or 1, where errors would be invisible; at 0.6, 5 to 10 % do.
RANDOM_WEIGHT_SCALE = 0.4


# The order of the groups of tests (see ``pytest_collection_modifyitems``), by folder under tests/.
_FOLDER_ORDER = ("unit", "infra", "pipeline", "parity")


# Among the slow tests, those that take longest start first: with two workers (scripts/test), one started
# last would leave the other idle while it runs alone.
_LONGEST_FIRST = ("test_runners.py", "test_flink_faults.py", "test_parity.py", "test_names.py")


def _order(item: pytest.Item) -> tuple[bool, int, int]:
    folder = Path(item.path).relative_to(REPO_ROOT / "tests").parts[0]
    rank = _FOLDER_ORDER.index(folder) if folder in _FOLDER_ORDER else len(_FOLDER_ORDER)
    slow = item.get_closest_marker("slow") is not None
    longest = _LONGEST_FIRST.index(item.path.name) if slow and item.path.name in _LONGEST_FIRST else len(_LONGEST_FIRST)
    return (slow, longest, rank)


def pytest_collection_modifyitems(session, config, items):
    """Fast tests first: unit, infra, pipeline, then the ``slow`` ones; a stable sort keeps each file's tests
    together (module fixtures are set up once) and in their own order."""
    items.sort(key=_order)


def random_weight_seed(model_dir: str) -> int:
    """A fixed seed per model directory (4stems and 4stems-16kHz share one)."""
    return zlib.crc32(model_dir.encode()) & 0x7FFFFFFF


@pytest.fixture(scope="session")
def models_cache() -> Path:
    """The model cache; sets ``BEAMSPLITTER_CACHE`` (to the repository's .cache/models unless already set)."""
    cache = Path(os.environ.get("BEAMSPLITTER_CACHE") or DEFAULT_CACHE)
    os.environ["BEAMSPLITTER_CACHE"] = str(cache)
    cache.mkdir(parents=True, exist_ok=True)
    return cache


@pytest.fixture(scope="session")
def checkpoint_2stems(models_cache) -> Path:
    """The folder of the official 2stems checkpoint (MODEL_PATH, the cache, or fetched into the cache)."""
    from models.config import load_config
    from models.provider import resolve_checkpoint

    return resolve_checkpoint(load_config("spleeter:2stems"))


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory):
    """Factory: ``random_checkpoint("spleeter:4stems") -> <root>/4stems``, a random-weight checkpoint.

    Each model directory gets its own root (so ``MODEL_PATH=<root>`` works for
    Spleeter) and is written once per session: configurations sharing a
    ``model_dir`` (4stems and 4stems-16kHz) share the same folder and weights.
    """
    from models.checkpoint import random_weights, write_checkpoint
    from models.config import load_config

    made: dict[str, Path] = {}

    def make(model: str) -> Path:
        config = load_config(model)
        if config.model_dir not in made:
            root = tmp_path_factory.mktemp(f"random-{config.model_dir}")
            directory = root / config.model_dir
            weights = random_weights(config, seed=random_weight_seed(config.model_dir), scale=RANDOM_WEIGHT_SCALE)
            write_checkpoint(directory, weights)
            made[config.model_dir] = directory
        return made[config.model_dir]

    return make


@pytest.fixture(scope="session")
def music_track(tmp_path_factory) -> Path:
    """30 s of synthetic stereo music, 16-bit 44.1 kHz WAV (spans three 11.9 s model chunks)."""
    return demo.make_track(tmp_path_factory.mktemp("audio") / "music.wav", seconds=30.0, seed=0)


@pytest.fixture(scope="session")
def flink_jar() -> str:
    """Beam's Flink job server jar, fetched once (scripts/fetch-flink-jobserver prints its path)."""
    result = subprocess.run([str(REPO_ROOT / "scripts" / "fetch-flink-jobserver")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def reference_venv() -> Path:
    """The venv holding spleeter==2.4.2 (created by scripts/reference-venv on first use)."""
    result = subprocess.run([str(REPO_ROOT / "scripts" / "reference-venv")], capture_output=True, text=True,
                            cwd=REPO_ROOT)
    if result.returncode != 0:
        pytest.fail(f"scripts/reference-venv failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    venv = Path(result.stdout.strip().splitlines()[-1])
    assert (venv / "bin" / "spleeter").is_file(), f"{venv}: no bin/spleeter"
    return venv


def running_ffmpeg(pids) -> list[int]:
    """Those of ``pids`` that are ffmpeg processes still running (not zombies), from /proc."""
    running = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:  # gone
            continue
        comm, state = stat[stat.index(b"(") + 1:stat.rindex(b")")], stat[stat.rindex(b")") + 2:].split()[0]
        if comm == b"ffmpeg" and state != b"Z":
            running.append(pid)
    return running


class StalledSource:
    """A FIFO at ``path`` that sends a 16-bit stereo WAV's header and ``seconds`` of a tone, then stalls.

    The header declares ten minutes, as a file on a stalled network mount would.
    The writer keeps the FIFO open until ``release()``: a reader waits for more.
    """

    def __init__(self, path: Path, seconds: float, sample_rate: int = 44100):
        os.mkfifo(path)
        self.path, self.seconds, self.sample_rate = path, seconds, sample_rate
        self.stalled = threading.Event()  # everything was sent (taken by the reader, or queued in the FIFO)
        self._release = threading.Event()
        self._writer = threading.Thread(target=self._feed, daemon=True)
        self._writer.start()

    def _feed(self):
        rate, declared = self.sample_rate, 600 * self.sample_rate * 4
        header = (b"RIFF" + struct.pack("<I", 36 + declared) + b"WAVE"
                  + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 2, rate, rate * 4, 4, 16)
                  + b"data" + struct.pack("<I", declared))
        t = np.arange(rate) / rate
        second = (np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)], axis=1) * 8000)
        second = second.astype("<i2").tobytes()
        try:
            with open(self.path, "wb") as fifo:  # waits for a reader
                fifo.write(header)
                for _ in range(int(self.seconds)):
                    fifo.write(second)
                fifo.flush()
                self.stalled.set()
                self._after_sending(fifo, second)
        except OSError:  # the reader went away
            pass

    def _after_sending(self, fifo, second: bytes):
        self._release.wait()

    def release(self):
        # A writer still waiting for a reader gets one, whose going away ends it.
        reader = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self._release.set()
        os.close(reader)
        self._writer.join(10)


class DrippingSource(StalledSource):
    """A ``StalledSource`` that, once its ``seconds`` are sent, goes on with a tenth of a second of its
    tone every half second until ``release()``: slower than it plays, and never quiet for a second."""

    def _after_sending(self, fifo, second: bytes):
        tenth = second[:len(second) // 40 * 4]
        while not self._release.wait(0.5):
            fifo.write(tenth)
            fifo.flush()


def _sources(kind):
    made = []

    def make(path: Path, seconds: float):
        made.append(kind(path, seconds))
        return made[-1]

    yield make
    for source in made:
        source.release()


@pytest.fixture
def stalled_source():
    """Factory: ``stalled_source(path, seconds)`` -> a ``StalledSource``; each is released after the test."""
    yield from _sources(StalledSource)


@pytest.fixture
def dripping_source():
    """Factory: ``dripping_source(path, seconds)`` -> a ``DrippingSource``; each is released after the test."""
    yield from _sources(DrippingSource)


def kill_while_writing(command: list[str], folder: Path, stems: int = 2, timeout: float = 300) -> list[Path]:
    """Run ``command`` in a session of its own and SIGKILL it all once ``stems`` temporary stem files of
    over 1 MiB each are under ``folder`` (or when it ends, or after ``timeout`` s); the ones left then."""
    victim = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while victim.poll() is None and time.monotonic() < deadline:
            sizes = [p.stat().st_size for p in folder.rglob(".*.part")]
            if len(sizes) == stems and min(sizes) > 1 << 20:
                break
            time.sleep(0.2)
    finally:
        with contextlib.suppress(ProcessLookupError):  # none left: it ended by itself
            os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
    return list(folder.rglob(".*.part"))


def _crc_table(poly: int, width: int) -> list[int]:
    top, mask = 1 << (width - 1), (1 << width) - 1
    table = []
    for byte in range(256):
        crc = byte << (width - 8)
        for _ in range(8):
            crc = (crc << 1) ^ poly if crc & top else crc << 1
        table.append(crc & mask)
    return table


_CRC8, _CRC16 = _crc_table(0x07, 8), _crc_table(0x8005, 16)  # FLAC's frame header and frame checksums


def write_silent_flac(path: Path, seconds: float, declared: float | None = None, rate: int = 44100) -> Path:
    """``seconds`` of 16-bit stereo digital silence as FLAC, as small as FLAC allows: frames of 65,535
    samples (the format's largest) of one constant value per channel, 18 bytes each, and the 8 KiB of
    padding ffmpeg's encoder writes. Two hours take 93 KB. The header declares ``declared`` seconds
    (default: ``seconds``): a file that probes short and decodes long."""
    block, total = 65535, round(seconds * rate)
    declared_total = total if declared is None else round(declared * rate)
    info = struct.pack(">HH", block, block) + bytes(6)  # block sizes; frame sizes unknown
    info += ((rate << 44) | (1 << 41) | (15 << 36) | declared_total).to_bytes(8, "big") + bytes(16)  # no MD5
    parts = [b"fLaC", b"\x00" + len(info).to_bytes(3, "big"), info, b"\x81" + (8192).to_bytes(3, "big"), bytes(8192)]
    for number, start in enumerate(range(0, total, block)):
        # Fixed block size, size in 16 bits at the end, 44.1 kHz; left/right; 16-bit samples.
        coded = (bytes([number]) if number < 0x80 else bytes([0xC0 | number >> 6, 0x80 | number & 0x3F])
                 if number < 0x800 else bytes([0xE0 | number >> 12, 0x80 | number >> 6 & 0x3F, 0x80 | number & 0x3F]))
        header = b"\xff\xf8\x79\x18" + coded + struct.pack(">H", min(block, total - start) - 1)
        crc8 = 0
        for byte in header:
            crc8 = _CRC8[crc8 ^ byte]
        frame = header + bytes([crc8]) + bytes(6)  # two CONSTANT subframes of the value 0
        crc16 = 0
        for byte in frame:
            crc16 = ((crc16 << 8) & 0xFFFF) ^ _CRC16[(crc16 >> 8) ^ byte]
        parts.append(frame + struct.pack(">H", crc16))
    path.write_bytes(b"".join(parts))
    return path
