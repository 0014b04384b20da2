"""Limits a catalogue owner sets (issue 17, item 7): the longest track, the decoding deadline, and what a
killed writer leaves behind."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import demo
from pipeline.run import run
from tests.conftest import kill_while_writing, running_ffmpeg, write_silent_flac
from tests.pipeline.conftest import write_manifest
from tests.services import descendants

pytestmark = pytest.mark.slow  # a two-hour file decoded until killed, a source dripping until its deadline


def stem_folder(prefix: Path) -> Path:
    (model,) = (prefix / "stems").iterdir()
    return model


def failure_rows(prefix: Path) -> list[list[str]]:
    return pq.read_table(prefix / "failures").to_pandas()[["track_id", "stage", "message"]].values.tolist()


def test_a_93_kb_file_of_two_hours_is_a_failure_row_and_a_killed_writer_leaves_nothing(tmp_path, checkpoint_2stems):
    """Two hours of digital silence fit in 93 KB of FLAC. With no limit a run writes 1.3 GB per WAV stem
    of it; killed, it leaves its temporary files. The next run, under the default --max_duration,
    removes them and makes the file a failure row before decoding it; the other track is done."""
    folder = tmp_path / "cat"
    folder.mkdir()
    silence = write_silent_flac(folder / "silence.flac", 7200.0)
    assert silence.stat().st_size < 96_000
    demo.make_track(folder / "song.wav", seconds=14.0, seed=7)
    write_manifest(folder / "m.csv", [("silence", "silence.flac", "a"), ("song", "song.wav", "b")])
    prefix = tmp_path / "out"
    args = ["--manifest", str(folder / "m.csv"), "--output", str(prefix), "--checkpoint", str(checkpoint_2stems)]
    left = kill_while_writing([str(Path(sys.executable).parent / "beamsplitter"), "run", *args, "--max_duration=0"],
                              prefix)
    assert [p.parent.name for p in left] == ["silence"] * 2, "the run should have been killed mid-track"

    assert run(args).exit_status == 1
    assert failure_rows(prefix) == [
        ["silence", "decode", f"{silence}: lasts 7200.0 s, longer than --max_duration 5400 s; not decoded"]]
    assert os.listdir(stem_folder(prefix) / "silence") == []
    assert sorted(os.listdir(stem_folder(prefix) / "song")) == ["_SUCCESS.json", "accompaniment.wav", "vocals.wav"]
    assert [p for p in prefix.rglob("*") if p.name.endswith(".part")] == []


def test_a_source_that_drips_slower_than_it_plays_fails_by_its_deadline(tmp_path, checkpoint_2stems,
                                                                        dripping_source):
    """Never quiet for --stall_timeout, so only the deadline stops it: a failure row, and the run ends."""
    folder = tmp_path / "cat"
    folder.mkdir()
    demo.make_track(folder / "song.wav", seconds=14.0, seed=8)
    dripping = dripping_source(folder / "dripping.wav", seconds=2)
    write_manifest(folder / "m.csv", [("dripping", "dripping.wav", "a"), ("song", "song.wav", "b")])
    prefix = tmp_path / "out"
    assert run(["--manifest", str(folder / "m.csv"), "--output", str(prefix), "--checkpoint", str(checkpoint_2stems),
                "--stall_timeout=3"]).exit_status == 1
    ((track_id, stage, message),) = failure_rows(prefix)
    assert (track_id, stage) == ("dripping", "decode")
    assert re.fullmatch(re.escape(f"{dripping.path}: past its decoding deadline of ") + r"\d+ s \(--stall_timeout 3 s "
                        r"plus the [\d.]+ s of audio decoded\): the source delivers slower than it plays; "
                        r"decoding stopped", message), message
    assert sorted(p.parent.name for p in prefix.glob("stems/*/*/_SUCCESS.json")) == ["song"]
    assert not any(p.is_file() for p in (stem_folder(prefix) / "dripping").rglob("*"))
    assert running_ffmpeg(descendants(os.getpid())) == []
