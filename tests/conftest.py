"""Session-wide fixtures shared by every test package (unit, parity, pipeline).

* ``models_cache``: the checkpoint cache folder, exported as ``BEAMSPLITTER_CACHE``;
* ``checkpoint_2stems``: the official 2stems checkpoint (fetched once into the cache);
* ``random_checkpoint``: factory of random-weight checkpoints in Spleeter's format;
* ``music_track``: 30 s of synthetic stereo music at 44.1 kHz (three model chunks);
* ``reference_venv``: the virtual environment holding spleeter==2.4.2;
* ``stalled_source``: factory of FIFOs that deliver a WAV's first minutes, then stall.
"""

from __future__ import annotations

import os
import struct
import subprocess
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest

from pipeline import demo

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = REPO_ROOT / ".cache" / "models"

# Scale of the random weights (see models.checkpoint.random_weights). At 0.3 the
# stems are distinct, but every mask stays within about +-0.1 of 1/n, so the
# network's output hardly matters; at 0.6 the masks span most of [0, 1] (1st to
# 99th percentile of the sigmoid outputs about 0.03..0.99 for 4stems) while
# fewer than 5 % of them saturate at 0 or 1, where errors would be invisible.
RANDOM_WEIGHT_SCALE = 0.6


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
                self._release.wait()
        except OSError:  # the reader went away
            pass

    def release(self):
        # A writer still waiting for a reader gets one, whose going away ends it.
        reader = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self._release.set()
        os.close(reader)
        self._writer.join(10)


@pytest.fixture
def stalled_source():
    """Factory: ``stalled_source(path, seconds)`` -> a ``StalledSource``; each is released after the test."""
    made: list[StalledSource] = []

    def make(path: Path, seconds: float) -> StalledSource:
        made.append(StalledSource(path, seconds))
        return made[-1]

    yield make
    for source in made:
        source.release()
