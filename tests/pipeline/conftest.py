"""A test catalogue: good tracks in several formats, and one bad row of every kind."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest

from models.ffmpeg_process import ffmpeg_binary
from pipeline import demo

GOOD = {  # track_id -> file under the catalogue folder
    "pop/one": "one.wav",
    "pop/two": "two.flac",
    "rock/three": "three.mp3",
    "four": "four.ogg",
}
BAD = [  # (track_id, uri, stage, message fragment)
    ("", "one.wav", "validate", "missing track_id"),
    ("no-uri", "", "validate", "missing uri"),
    ("pop/one", "two.flac", "validate", "duplicate track_id 'pop/one' (first at row 1)"),
    ("../escape", "one.wav", "validate", "'..' path component"),
    ("/etc/passwd", "one.wav", "validate", "absolute path"),
    ("bell\x07", "one.wav", "validate", "control characters"),
    ("web", "https://example.invalid/a.mp3", "validate", "unsupported scheme https://"),
    ("gone", "missing.wav", "decode", "no such file"),
    ("text", "notes.mp3", "decode", "not decodable audio"),
    ("empty", "empty.flac", "decode", "empty file"),
    ("cut", "cut.wav", "decode", "truncated WAV file"),
    # Fails after its first chunk has been separated: nothing of it may be published.
    ("half", "cut.flac", "decode", "truncated (declares 30.00 s"),
]


def write_manifest(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["track_id", "uri", "artist"])
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def catalogue(tmp_path_factory) -> Path:
    """``<folder>/manifest.csv`` over 14 s tracks (two model chunks) and broken files."""
    folder = tmp_path_factory.mktemp("catalogue")
    master = demo.make_track(folder / "master.wav", seconds=14.0, seed=3)
    for seed, name in enumerate(GOOD.values()):
        source = demo.make_track(folder / f"src{seed}.wav", seconds=14.0, seed=10 + seed)
        if name.endswith(".wav"):
            source.rename(folder / name)
        else:
            subprocess.run([ffmpeg_binary(), "-v", "error", "-i", str(source), str(folder / name)], check=True)
            source.unlink()
    (folder / "notes.mp3").write_text("no music here\n" * 40)
    (folder / "empty.flac").write_bytes(b"")
    (folder / "cut.wav").write_bytes(master.read_bytes()[: master.stat().st_size // 3])
    master.unlink()
    long = demo.make_track(folder / "long.wav", seconds=30.0, seed=5)
    subprocess.run([ffmpeg_binary(), "-v", "error", "-i", str(long), str(folder / "long.flac")], check=True)
    flac = (folder / "long.flac").read_bytes()
    (folder / "cut.flac").write_bytes(flac[: len(flac) * 2 // 3])  # decodes to 20 s, then fails
    for path in (long, folder / "long.flac"):
        path.unlink()
    rows = [(track_id, uri, f"artist {i}") for i, (track_id, uri) in enumerate(GOOD.items())]
    rows.insert(2, BAD[2][:2] + ("dup",))  # the duplicate comes after the original row
    rows += [(t, u, "bad") for t, u, _, _ in BAD if t != "pop/one"]
    write_manifest(folder / "manifest.csv", rows)
    return folder



class OpenCounter:
    """Counts the opens of one file as Linux's inotify reports them (IN_OPEN): seen by the kernel,
    from outside the code that opens it. Use as a context manager; ``opens()`` reads the events so far.

    Closes are watched too: the kernel merges identical consecutive events not yet read, so two
    opens in a row would count as one, while open, close, open, close stay four events.
    """

    IN_OPEN, IN_CLOSE_NOWRITE = 0x20, 0x10

    def __init__(self, path: Path):
        import ctypes
        import os

        libc = ctypes.CDLL(None, use_errno=True)
        self._fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        watch = self.IN_OPEN | self.IN_CLOSE_NOWRITE
        if self._fd < 0 or libc.inotify_add_watch(self._fd, os.fsencode(path), watch) < 0:
            raise OSError(ctypes.get_errno(), f"inotify on {path}")
        self._count = 0

    def opens(self) -> int:
        import os
        import struct

        while True:
            try:
                events = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                return self._count
            offset = 0
            while offset < len(events):  # struct inotify_event: wd, mask, cookie, len, name[len]
                _, mask, _, length = struct.unpack_from("iIII", events, offset)
                self._count += bool(mask & self.IN_OPEN)
                offset += 16 + length

    def __enter__(self) -> "OpenCounter":
        return self

    def __exit__(self, *exc) -> None:
        import os

        os.close(self._fd)
