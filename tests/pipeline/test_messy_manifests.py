"""Manifests the job cannot parse, and track ids the output layout cannot hold, through `beamsplitter run` and `plan`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from models.errors import InputError
from pipeline.run import run
from tests.pipeline.conftest import write_manifest
from pipeline import demo
from tests.unit.test_manifest import WIDE, corrupt_parquet
from transforms.catalogue.manifest import MAX_ROW_BYTES

pytestmark = pytest.mark.slow  # catalogue jobs and plans over broken manifests

UNPARSEABLE = [  # (file name, content, the start of the one error both commands give)
    ("quote.csv", b'track_id,uri\na,a.wav\nb,"b.wav\nc,c.wav\n',
     "quote.csv line 3: a quote opened in the row starting here is never closed"),
    ("field.csv", b"track_id,uri\na," + b"x" * 200_000 + b"\n",
     "field.csv line 2: a field longer than the CSV reader's limit of 131072 characters"),
    ("latin1.csv", b"track_id,uri,caf\xe9\n", "latin1.csv header line 1: invalid UTF-8 (byte 0xe9 at byte offset 16"),
    ("cut.parquet", None, "cut.parquet: row group 2 (rows 10001 to 20000) has an unreadable page header"),
    # 100,000 columns for one track made a metadata file of 100,015 columns (775 MB).
    ("wide.csv", WIDE, "wide.csv: the manifest would carry 100000 columns into the metadata besides track_id and uri, "
                       "over the 256 it may (--max_manifest_columns)"),
    ("both.csv", b"track_id,uri,instrument,manifest_instrument\na,a.wav,x,y\n",
     "both.csv: the columns 'instrument' and 'manifest_instrument' would both be the metadata's column "
     "'manifest_instrument'"),
]


@pytest.mark.parametrize("name,content,message", UNPARSEABLE)
def test_unparseable_manifest_is_one_line_from_run_and_plan(tmp_path, checkpoint_2stems, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if content is not None else corrupt_parquet())
    args = ["--manifest", str(path), "--output", str(tmp_path / "out"), "--checkpoint", str(checkpoint_2stems)]
    with pytest.raises(InputError, match=re.escape(f"{tmp_path}/{message}")):
        run(args)
    assert not (tmp_path / "out" / "metadata").exists()  # nothing ran

    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "plan", *args], capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, cwd=Path(__file__).parents[2])
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: {tmp_path}/{message}")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # no traceback


def test_bad_lines_and_unusable_ids_fail_alone(tmp_path, catalogue, checkpoint_2stems):
    """A JSON Lines manifest saved with a BOM, with lines no parser takes and ids the layout cannot hold."""
    def line(track_id, uri="x.wav"):
        return json.dumps({"track_id": track_id, "uri": uri}).encode()

    lines = [
        b"\xef\xbb\xbf" + line("one", str(catalogue / "one.wav")),  # line 1: the BOM is not part of the row
        b'{"track_id": "caf\xe9", "uri": "x.wav"}',  # 2: Latin-1, not UTF-8
        b'{"track_id": "deep", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # 3
        b'{"track_id": "long", "x": "' + b"x" * MAX_ROW_BYTES + b'"}',  # 4
        line("_SUCCESS.json"),  # 5
        line("one/_MODEL.json"),  # 6
        line("two", str(catalogue / "two.flac")),  # 7
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(b"\n".join(lines) + b"\n")
    prefix = tmp_path / "out"
    assert run(["--manifest", str(manifest), "--output", str(prefix),
                "--checkpoint", str(checkpoint_2stems)]).exit_status == 1

    assert sorted(p.parent.name for p in prefix.glob("stems/*/*/_SUCCESS.json")) == ["one", "two"]
    failures = pq.read_table(prefix / "failures").to_pandas()
    assert set(failures.stage) == {"validate"}
    messages = dict(zip(failures.track_id, failures.message))
    offset = lines[0].__len__() + 1 + lines[1].index(b"\xe9")
    assert messages == {
        "<row 2>": f"{manifest} line 2: invalid UTF-8 (byte 0xe9 at byte offset {offset} of the file; "
                   "save the manifest as UTF-8)",
        "<row 3>": f"{manifest} line 3: invalid JSON (nested too deep)",
        "<row 4>": f"{manifest} line 4: longer than {MAX_ROW_BYTES} bytes (--max_manifest_row_bytes)",
        "_SUCCESS.json": "track_id '_SUCCESS.json' has the path component '_SUCCESS.json', "
                         "a name the output layout reserves for its own files",
        "one/_MODEL.json": "track_id 'one/_MODEL.json' has the path component '_MODEL.json', "
                           "a name the output layout reserves for its own files",
    }



def test_ids_that_differ_only_in_case_are_one_track(tmp_path, catalogue, checkpoint_2stems):
    """'Song' and 'SONG' share a folder where the store folds case (macOS, Windows volumes and their mounts)."""
    write_manifest(tmp_path / "m.csv", [("Song", str(catalogue / "one.wav"), "a"),
                                        ("SONG", str(catalogue / "two.flac"), "b")])
    assert run(["--manifest", str(tmp_path / "m.csv"), "--output", str(tmp_path / "out"),
                "--checkpoint", str(checkpoint_2stems)]).exit_status == 1
    assert [p.parent.name for p in (tmp_path / "out").glob("stems/*/*/_SUCCESS.json")] == ["Song"]
    failures = pq.read_table(tmp_path / "out" / "failures").to_pandas()
    assert failures[["track_id", "stage", "message"]].values.tolist() == [[
        "SONG", "validate", "row 2: duplicate track_id 'SONG' (first at row 1 as 'Song', "
                            "one folder on stores that fold case)"]]


def test_a_folder_holding_another_ids_record_fails_the_track(tmp_path, catalogue, checkpoint_2stems):
    """Across runs, a store that folds case gives 'SONG' the folder of 'Song': neither skipped nor written over."""
    args = ["--output", str(tmp_path / "out"), "--checkpoint", str(checkpoint_2stems)]
    write_manifest(tmp_path / "m.csv", [("Song", str(catalogue / "one.wav"), "a")])
    assert run(["--manifest", str(tmp_path / "m.csv"), *args]).exit_status == 0
    (model,) = (tmp_path / "out" / "stems").iterdir()
    (model / "SONG").symlink_to("Song")  # what a case-folding store does
    done = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (model / "Song").iterdir()}
    # The same source as 'Song': its record would otherwise read as done for 'SONG' too.
    write_manifest(tmp_path / "m2.csv", [("SONG", str(catalogue / "one.wav"), "b")])
    for force in ([], ["--force"]):
        assert run(["--manifest", str(tmp_path / "m2.csv"), *args, *force]).exit_status == 1
        failures = pd.concat(pd.read_parquet(p) for p in (tmp_path / "out" / "failures").glob("*.parquet"))
        assert failures[["track_id", "stage", "message"]].values.tolist() == [[
            "SONG", "validate", "track_id 'SONG' finds the completion record of track 'Song' in its folder: "
                                "the store folds case, so the two would share their stems; rename one of them"]]
        shutil.rmtree(tmp_path / "out" / "failures")
        assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (model / "Song").iterdir()} == done


def test_an_id_below_another_tracks_stem_fails_alone(tmp_path, catalogue, checkpoint_2stems):
    """Track "one/vocals.wav" needs a folder where track "one" wrote its vocals: on a local disk the later of
    the two fails with a failure row, the run goes on. Ids that are only named like stems are ordinary."""
    write_manifest(tmp_path / "m.csv", [("one", str(catalogue / "one.wav"), "a"),
                                        ("one/vocals.wav", str(catalogue / "two.flac"), "b"),
                                        ("album/Piano.wav", str(catalogue / "three.mp3"), "c")])
    assert run(["--manifest", str(tmp_path / "m.csv"), "--output", str(tmp_path / "out"),
                "--checkpoint", str(checkpoint_2stems)]).exit_status == 1
    (model,) = (tmp_path / "out" / "stems").iterdir()
    done = sorted(str(p.parent.relative_to(model)) for p in model.rglob("_SUCCESS.json"))
    failures = pq.read_table(tmp_path / "out" / "failures").to_pandas()
    assert len(done) == 2 and "album/Piano.wav" in done
    (failed,) = failures.track_id
    assert {failed, *done} == {"one", "one/vocals.wav", "album/Piano.wav"}
    assert failures.stage[0] == "encode" and failures.message[0].startswith(str(model / "one"))


def test_text_no_store_holds_and_sources_outside_the_manifest_fail_alone(tmp_path, checkpoint_2stems):
    """A track_id "bad\\ud800" ended every run: in the index, or, with an unsupported URI, after the good
    tracks' stems were written, in writing the failure table, so that their metadata never landed. A relative
    uri leading out of the manifest's folder was read and its stems published."""
    folder = tmp_path / "catalogue" / "sub"
    folder.mkdir(parents=True)
    demo.make_track(folder / "one.wav", seconds=3.0, seed=1)
    demo.make_track(tmp_path / "x.wav", seconds=3.0, seed=2)
    manifest = folder / "m.jsonl"
    manifest.write_bytes(b'{"track_id": "one", "uri": "one.wav"}\n'
                         b'{"track_id": "bad\\ud800", "uri": "one.wav"}\n'
                         b'{"track_id": "bad\\ud800", "uri": "ftp://x/a.wav"}\n'
                         b'{"track_id": "outside", "uri": "../../x.wav"}\n')
    prefix = tmp_path / "out"
    args = ["--manifest", str(manifest), "--output", str(prefix), "--checkpoint", str(checkpoint_2stems)]
    surrogate = "column 'track_id' holds a lone surrogate ('\\ud800'), text that no UTF-8 file, path or table can hold"
    for rerun in range(2):  # the same again: the failures fail, nothing else happens
        result = run(args)
        assert (result.summary.done, result.summary.skipped, result.summary.failed) == (1 - rerun, rerun, 3)
        assert sorted((f.track_id, f.stage, f.message) for f in result.failures()) == [
            ("<row 2>", "validate", f"{manifest} row 2: {surrogate}"),
            ("<row 3>", "validate", f"{manifest} row 3: {surrogate}"),
            ("outside", "validate", "uri '../../x.wav' leads outside the manifest's folder "
                                    f"{folder}/ (--allow_source_outside_manifest allows it)")]
        assert sorted(pq.read_table(prefix / "metadata").to_pandas().track_id) == ["one", "one"]

    allowed = run(args + ["--allow_source_outside_manifest"])
    assert (allowed.summary.done, allowed.summary.skipped, allowed.summary.failed) == (1, 1, 2)
    metadata = pq.read_table(prefix / "metadata").to_pandas()
    assert sorted(metadata.track_id) == ["one", "one", "outside", "outside"]
    assert set(metadata[metadata.track_id == "outside"].source_uri) == {str(tmp_path / "x.wav")}
