"""--stems on a catalogue of real-length tracks: half the bytes, then a full run completes only what is missing."""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest

from pipeline import demo
from pipeline.plan import plan
from pipeline.run import run
from tests.pipeline.conftest import write_manifest
from tests.pipeline.test_loudness import ebur128

pytestmark = pytest.mark.slow  # minutes-long tracks, three runs

TRACKS = {"first": 180.0, "second": 170.0}  # about 3 minutes each


def stem_files(out) -> dict[str, tuple[bytes, int]]:
    """Every stem file under the output: path -> (bytes, modification time in ns)."""
    found = {}
    for folder, _, names in os.walk(out / "stems"):
        for name in names:
            if name.endswith(".wav"):
                path = os.path.join(folder, name)
                with open(path, "rb") as f:
                    found[path] = (f.read(), os.stat(path).st_mtime_ns)
    return found


def test_accompaniment_only_then_a_full_run_completes_what_is_missing(tmp_path, checkpoint_2stems, capsys):
    folder = tmp_path / "catalogue"
    for seed, (track, seconds) in enumerate(TRACKS.items()):
        demo.make_track(folder / f"{track}.wav", seconds=seconds, seed=30 + seed)
    manifest = str(write_manifest(folder / "manifest.csv", [(t, f"{t}.wav", "x") for t in TRACKS]))
    out = tmp_path / "out"
    args = ["--manifest", manifest, "--output", str(out), "--checkpoint", str(checkpoint_2stems)]

    karaoke = run([*args, "--stems", "accompaniment"])
    assert karaoke.exit_status == 0 and karaoke.summary.done == len(TRACKS)
    before = stem_files(out)
    assert sorted(os.path.basename(path) for path in before) == ["accompaniment.wav"] * len(TRACKS)

    capsys.readouterr()
    assert plan(args) == 0
    printed = capsys.readouterr().out
    assert ("2 tracks to separate (0 new, 0 changed, 0 new-model, 0 new-encoding, 2 missing-stems, 0 forced), "
            "0 up to date") in printed
    with open(printed.strip().splitlines()[-1].split("plan: ", 1)[1]) as f:
        assert {row["track_id"]: row["plan_reason"] for row in map(json.loads, f)} == dict.fromkeys(
            TRACKS, "missing-stems")

    full = run(args)
    assert full.exit_status == 0 and full.summary.done == len(TRACKS)
    after = stem_files(out)
    assert all(after[path] == kept for path, kept in before.items())  # the same bytes, never rewritten
    assert sorted(os.path.basename(path) for path in after) == sorted(["accompaniment.wav", "vocals.wav"] * len(TRACKS))
    karaoke_bytes = sum(len(data) for data, _ in before.values())
    full_bytes = sum(len(data) for data, _ in after.values())  # what a full 2stems run holds
    assert 0.4 <= karaoke_bytes / full_bytes <= 0.6

    rows = pq.read_table(out / "metadata").to_pylist()
    assert sorted((r["track_id"], r["instrument"]) for r in rows) == sorted(
        (t, i) for t in TRACKS for i in ("accompaniment", "vocals"))  # one row per stem: none listed twice
    by_run = {(r["track_id"], r["instrument"]): r["run_id"] for r in rows}
    for track in TRACKS:
        assert by_run[(track, "accompaniment")] == karaoke.settings.job.run_id
        assert by_run[(track, "vocals")] == full.settings.job.run_id
        record = json.loads((out / "stems" / full.settings.job.layout.model / track / "_SUCCESS.json").read_text())
        assert sorted(record["stems"]) == ["accompaniment", "vocals"]
        assert sorted(row["instrument"] for row in record["metadata"]) == ["accompaniment", "vocals"]
    for row in rows:  # measured on the samples each run encoded
        written = ebur128(row["uri"])
        assert abs(row["loudness_lufs"] - written["I"]) <= 0.1 + 1e-9, (row["uri"], row["loudness_lufs"], written)
        assert abs(row["loudness_range_lu"] - written["LRA"]) <= 0.1 + 1e-9, (row["uri"], written)
        assert abs(row["true_peak_dbtp"] - written["Peak"]) <= 0.1 + 1e-9, (row["uri"], written)
        # Vocal presence is measured with the vocals stem; the accompaniment alone does not tell it.
        assert (row["vocal_activity"] is None) == (row["instrument"] == "accompaniment")

    vocals_only = run([*args, "--stems", "vocals"])
    assert vocals_only.exit_status == 0
    assert (vocals_only.summary.done, vocals_only.summary.skipped) == (0, len(TRACKS))
    assert stem_files(out) == after
