"""Loudness and vocal presence in `beamsplitter run`'s metadata, on real-length tracks.

The loudness columns are checked against ffmpeg's ``ebur128`` run on the stems
as written; the vocal activity against where the tracks' vocals are.
"""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest

from models.ffmpeg_process import ffmpeg_binary
from pipeline.run import run
from tests import music
from tests.pipeline.conftest import write_manifest

pytestmark = pytest.mark.slow  # minutes-long songs measured against ffmpeg's ebur128

TRACKS = ("late", "mono", "silence")


@pytest.fixture(scope="module")
def metadata(tmp_path_factory, checkpoint_2stems):
    """The metadata rows of a run over: a 4-minute song whose vocals enter in its last minute, a 3-minute
    instrumental from a mono source, and 30 s of digital silence."""
    folder = tmp_path_factory.mktemp("loudness")
    music.make_song(folder / "late.wav", 240.0, seed=21, vocals_from=180.0)
    music.make_song(folder / "mono.wav", 180.0, seed=22, vocals_from=None, channels=1)
    music.write_wav(folder / "silence.wav", np.zeros((30 * 44100, 2)), 44100)
    manifest = write_manifest(folder / "manifest.csv", [(t, f"{t}.wav", "x") for t in TRACKS])
    assert run(["--manifest", str(manifest), "--output", str(folder / "out"),
                "--checkpoint", str(checkpoint_2stems)]).exit_status == 0
    rows = pq.read_table(folder / "out" / "metadata").to_pylist()
    assert sorted((r["track_id"], r["instrument"]) for r in rows) == [
        (t, i) for t in TRACKS for i in ("accompaniment", "vocals")]
    return {(r["track_id"], r["instrument"]): r for r in rows}


def ebur128(path: str) -> dict[str, float]:
    """ffmpeg's own reading of a written stem: integrated loudness, loudness range, true peak."""
    result = subprocess.run([ffmpeg_binary(), "-nostdin", "-hide_banner", "-nostats", "-i", path,
                             "-af", "ebur128=peak=true:framelog=verbose", "-f", "null", "-"],
                            capture_output=True, text=True, check=True)
    summary = result.stderr[result.stderr.rindex("Summary:"):]
    patterns = {"I": r"I:\s+(\S+) LUFS", "LRA": r"LRA:\s+(\S+) LU\n", "Peak": r"Peak:\s+(\S+) dBFS"}
    return {name: float(re.search(pattern, summary)[1]) for name, pattern in patterns.items()}


def test_loudness_matches_ffmpegs_ebur128_on_every_written_stem(metadata):
    for key, row in metadata.items():
        written = ebur128(row["uri"])
        if written["I"] <= -70.0:  # nothing passed the absolute gate: silence, no loudness
            assert (row["loudness_lufs"], row["loudness_range_lu"]) == (None, None), key
        else:
            assert abs(row["loudness_lufs"] - written["I"]) <= 0.1 + 1e-9, (key, row["loudness_lufs"], written)
            assert abs(row["loudness_range_lu"] - written["LRA"]) <= 0.1 + 1e-9, (key, row["loudness_range_lu"],
                                                                                  written)
        if written["Peak"] == -np.inf:
            assert row["true_peak_dbtp"] is None, key
        else:
            assert abs(row["true_peak_dbtp"] - written["Peak"]) <= 0.1 + 1e-9, (key, row["true_peak_dbtp"], written)
    for track in ("late", "mono"):  # the music is measured, and not silent
        assert -40 < metadata[(track, "accompaniment")]["loudness_lufs"] < -5
        assert metadata[(track, "accompaniment")]["loudness_range_lu"] >= 0
    assert -40 < metadata[("late", "vocals")]["loudness_lufs"] < -5
    for instrument in ("accompaniment", "vocals"):  # silence: nulls, never -inf or -70
        row = metadata[("silence", instrument)]
        assert (row["loudness_lufs"], row["loudness_range_lu"], row["true_peak_dbtp"]) == (None, None, None)


def test_vocal_activity_and_instrumentals(metadata):
    late = metadata[("late", "vocals")]
    assert 0.2 <= late["vocal_activity"] <= 0.26 and late["instrumental"] is False  # 60 s of 240
    mono = metadata[("mono", "vocals")]
    assert mono["vocal_activity"] < 0.05 and mono["instrumental"] is True
    silence = metadata[("silence", "vocals")]
    assert silence["vocal_activity"] == 0.0 and silence["instrumental"] is True
    for track in TRACKS:  # the track's figures, on each of its rows
        rows = metadata[(track, "accompaniment")], metadata[(track, "vocals")]
        assert len({(row["vocal_activity"], row["instrumental"]) for row in rows}) == 1, track
