"""The catalogue is read once per run, however many waves the local runner goes in (issue 10, "Scale").

The kernel counts the opens of each manifest here (inotify, conftest.OpenCounter):
every wave re-reading the manifest, as each local wave did before, shows as
more than one open.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from pipeline import demo
from pipeline.plan import plan
from pipeline.run import run
from tests.pipeline.conftest import OpenCounter

TRACKS = [f"t{i}" for i in range(5)]


def write_csv(path, rows):
    path.write_text("track_id,uri,artist\n" + "".join(f"{t},{u},{a}\n" for t, u, a in rows))
    return path


@pytest.fixture(scope="module")
def music(tmp_path_factory):
    folder = tmp_path_factory.mktemp("music")
    for i, track_id in enumerate(TRACKS):
        demo.make_track(folder / f"{track_id}.wav", seconds=3.0, seed=300 + i)
    rows = [(t, str(folder / f"{t}.wav"), f"artist {i}") for i, t in enumerate(TRACKS)]
    rows.insert(2, ("t0", str(folder / "t3.wav"), "again"))  # row 3 repeats row 1's track_id
    rows.insert(4, ("../up", str(folder / "t1.wav"), "bad"))  # row 5
    rows.append(("gone", str(folder / "gone.wav"), "missing"))  # row 8
    return folder, rows


def test_a_run_in_waves_reads_the_manifest_once(tmp_path, music, checkpoint_2stems, capsys):
    folder, rows = music
    prefix = tmp_path / "out"
    manifest = write_csv(tmp_path / "m.csv", rows)
    args = ["--manifest", str(manifest), "--output", str(prefix), "--checkpoint", str(checkpoint_2stems),
            "--local_wave_tracks=2"]
    with OpenCounter(manifest) as counter:
        status = run(args).exit_status
        assert counter.opens() == 1
    assert status == 1
    assert "5 tracks done, 0 skipped, 3 failed (decode: 1, validate: 2)" in capsys.readouterr().out

    records = {p.parent.name: json.loads(p.read_text()) for p in prefix.glob("stems/*/*/_SUCCESS.json")}
    assert sorted(records) == TRACKS
    assert records["t0"]["source_uri"] == str(folder / "t0.wav")  # the first row of t0 won
    # Five tracks in waves of two: three waves, each committing its own metadata.
    markers = sorted(p.name for p in prefix.glob("metadata/*/_committed/run-*"))
    assert len(markers) == 3 and all(m.endswith(f"-w{i:04d}") for i, m in enumerate(markers))
    metadata = pq.read_table(prefix / "metadata").to_pandas()
    assert sorted(metadata.track_id) == sorted(t for t in TRACKS for _ in range(2))
    assert set(metadata[metadata.track_id == "t0"].artist) == {"artist 0"}

    failures = pq.read_table(prefix / "failures").to_pandas().sort_values("track_id")
    assert failures[["track_id", "stage"]].values.tolist() == [["../up", "validate"], ["gone", "decode"],
                                                              ["t0", "validate"]]
    assert list(failures.message)[2] == "row 3: duplicate track_id 't0' (first at row 1)"
    assert list(failures.source_uri)[2] == str(folder / "t3.wav")

    # Again, on the same prefix: every track is done, the bad rows fail again, still one read.
    with OpenCounter(manifest) as counter:
        status = run(args).exit_status
        assert (counter.opens(), status) == (1, 1)
    assert "0 tracks done, 5 skipped, 3 failed (decode: 1, validate: 2)" in capsys.readouterr().out
    assert len(list(prefix.glob("metadata/*/_committed/run-*"))) == 3  # nothing new to commit
    assert {p.parent.name: json.loads(p.read_text())["run_id"] for p in prefix.glob("stems/*/*/_SUCCESS.json")} \
        == {t: r["run_id"] for t, r in records.items()}


def test_plan_reads_the_manifest_once_and_lists_first_rows_in_order(tmp_path, music, checkpoint_2stems, capsys):
    folder, rows = music
    manifest = write_csv(tmp_path / "m.csv", rows)
    target = tmp_path / "plan.jsonl"
    with OpenCounter(manifest) as counter:
        assert plan(["--manifest", str(manifest), "--output", str(tmp_path / "out"),
                     "--checkpoint", str(checkpoint_2stems), "--plan_output", str(target)]) == 0
        assert counter.opens() == 1
    # The missing file is counted as the run counts it, not planned.
    assert ("5 tracks to separate (5 new, 0 changed, 0 new-model, 0 new-encoding, 0 missing-stems, 0 forced), 0 up to date, "
            "3 would fail (decode: 1, validate: 2)") in capsys.readouterr().out
    planned = [json.loads(line) for line in target.read_text().splitlines()]
    assert [(r["track_id"], r["uri"], r["artist"]) for r in planned] == [
        ("t0", str(folder / "t0.wav"), "artist 0"), ("t1", str(folder / "t1.wav"), "artist 1"),
        ("t2", str(folder / "t2.wav"), "artist 2"), ("t3", str(folder / "t3.wav"), "artist 3"),
        ("t4", str(folder / "t4.wav"), "artist 4")]
