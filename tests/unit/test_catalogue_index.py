"""The local runner's catalogue index: read once, first row of a track id wins, every row kept in order."""

from __future__ import annotations

import os
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.errors import InputError
from transforms.catalogue.index import CatalogueIndex, entries
from transforms.catalogue.manifest import Failure, Track
from transforms.write import FAILURE_SCHEMA, failure_row


def test_first_row_wins_and_every_row_stays_in_order(tmp_path):
    (tmp_path / "m.csv").write_text("track_id,uri,artist\n"
                                    "a,a.wav,x\n"
                                    "b,b.wav,y\n"
                                    "../up,c.wav,z\n"
                                    "a,other.wav,w\n"
                                    "c,,v\n"
                                    "b,b.wav,y\n")
    with CatalogueIndex.build(str(tmp_path / "m.csv")) as index:
        entries = list(index)
        assert (index.rows, index.tracks) == (6, 2)
    assert [type(e) for e in entries] == [Track, Track, Failure, Failure, Failure, Failure]
    assert entries[0] == Track("a", str(tmp_path / "a.wav"), 1) and entries[0].extra == {"artist": "x"}
    assert [(e.track_id, e.stage) for e in entries[2:]] == [("../up", "validate"), ("a", "validate"),
                                                             ("c", "validate"), ("b", "validate")]
    assert entries[3].message == "row 4: duplicate track_id 'a' (first at row 1)"
    assert entries[3].source_uri == str(tmp_path / "other.wav")
    assert entries[5].message == "row 6: duplicate track_id 'b' (first at row 2)"


def test_glob_input_and_unusable_manifest(tmp_path):
    for name in ("x.wav", "y.wav", ".hidden.wav"):
        (tmp_path / name).write_bytes(b"")
    with CatalogueIndex.build(input_glob=str(tmp_path / "*.wav")) as index:
        assert [(e.track_id, type(e).__name__) for e in index] == [
            (".hidden.wav", "Failure"), ("x.wav", "Track"), ("y.wav", "Track")]
    (tmp_path / "bad.csv").write_text("track,uri\nx,y\n")
    with pytest.raises(InputError, match="lacks the column"):
        CatalogueIndex.build(str(tmp_path / "bad.csv"))


def test_the_index_leaves_no_file_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("SQLITE_TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    (tmp_path / "m.csv").write_text("track_id,uri\n" + "".join(f"t{i},t{i}.wav\n" for i in range(20000)))
    with CatalogueIndex.build(str(tmp_path / "m.csv")) as index:
        assert index.tracks == 20000
        assert os.listdir(tmp_path / "tmp") == []  # SQLite's temporary file is unlinked as it is opened
        assert sum(1 for _ in index) == 20000


def test_ids_equal_but_for_case_are_one_track(tmp_path):
    """A store that folds case (macOS, Windows volumes) keeps 'Song' and 'SONG', or two spellings of 'é', in one folder."""
    (tmp_path / "m.csv").write_text("track_id,uri\nSong,a.wav\nSONG,b.wav\nCafe\u0301,c.wav\nCaf\u00e9,d.wav\nsongs,e.wav\n",
                                    encoding="utf-8")
    with CatalogueIndex.build(str(tmp_path / "m.csv")) as index:
        entries = list(index)
    assert [(e.track_id, type(e).__name__) for e in entries] == [
        ("Song", "Track"), ("SONG", "Failure"), ("Cafe\u0301", "Track"), ("Caf\u00e9", "Failure"), ("songs", "Track")]
    assert entries[1].message == ("row 2: duplicate track_id 'SONG' (first at row 1 as 'Song', "
                                  "one folder on stores that fold case)")


def test_an_input_glob_takes_every_file_below_its_folder(tmp_path, monkeypatch):
    """'music/**/*.mp3', docs/catalogue.md's example, missed the files directly in music/ (Beam's ** needs a folder)."""
    for name in ("top.mp3", "a/one.mp3", "a/b/two.mp3", "a/skip.wav"):
        (tmp_path / "music" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "music" / name).write_bytes(b"x")
    monkeypatch.chdir(tmp_path)  # and a relative glob starts in the working folder
    found = [e.track_id for e in entries(input_glob="music/**/*.mp3")]
    assert found == ["a/b/two.mp3", "a/one.mp3", "top.mp3"]
    assert all(e.uri.startswith(str(tmp_path)) for e in entries(input_glob="music/**/*.mp3"))
    with pytest.raises(InputError, match=re.escape("--input music/**/*.flac: no file matches")):
        list(entries(input_glob="music/**/*.flac"))


def test_text_no_utf8_store_can_hold_is_a_failure_row_not_a_crash(tmp_path):
    """A track_id "bad\\ud800" (JSON's escape of a lone surrogate) ended every run with a UnicodeEncodeError in
    the index; with an unsupported scheme too, in writing the failure table. Names that are not UTF-8 on disk
    (os.listdir gives their bytes as lone surrogates) fail their rows too, and every failure can be written."""
    (tmp_path / "m.jsonl").write_bytes(b'{"track_id": "a", "uri": "a.wav"}\n'
                                       b'{"track_id": "bad\\ud800", "uri": "x.wav"}\n'
                                       b'{"track_id": "bad\\ud800", "uri": "ftp://x/a.wav"}\n')
    with CatalogueIndex.build(str(tmp_path / "m.jsonl")) as index:
        found = list(index)
    assert [(e.track_id, type(e).__name__) for e in found] == [("a", "Track"), ("<row 2>", "Failure"),
                                                                ("<row 3>", "Failure")]
    assert found[1].message == (f"{tmp_path}/m.jsonl row 2: column 'track_id' holds a lone surrogate ('\\ud800'), "
                                "text that no UTF-8 file, path or table can hold")
    music = os.fsencode(tmp_path / "music")
    os.makedirs(music + b"/caf\xe9")
    for name in (b"/ok.wav", b"/caf\xe9.wav", b"/caf\xe9/in.wav"):
        open(music + name, "wb").close()
    with CatalogueIndex.build(input_glob=str(tmp_path / "music" / "**" / "*.wav")) as index:
        globbed = list(index)
    assert [(e.track_id, type(e).__name__) for e in globbed] == [
        ("caf\udce9.wav", "Failure"), ("caf\udce9/in.wav", "Failure"), ("ok.wav", "Track")]
    assert globbed[0].message == "track_id 'caf\\udce9.wav' holds a lone surrogate ('\\udce9'), which no file name can"
    folder = os.fsdecode(music + b"/caf\xe9")
    (below,) = entries(input_glob=folder + "/*.wav")  # the id is fine, its folder is not
    assert (below.track_id, below.message) == (
        "in.wav", f"{folder + '/in.wav'!r}: a path that is not UTF-8, which metadata cannot hold; rename it")

    failures = [*found[1:], *globbed[:2], Failure("x\ud800", "y\udc80", "decode", "AudioError", "z\ud800 failed")]
    table = pa.Table.from_pylist([failure_row(f, "run") for f in failures], schema=FAILURE_SCHEMA)
    pq.write_table(table, tmp_path / "failures.parquet")
    written = pq.read_table(tmp_path / "failures.parquet").to_pylist()
    assert [row["track_id"] for row in written] == ["<row 2>", "<row 3>", "caf\\udce9.wav", "caf\\udce9/in.wav",
                                                    "x\\ud800"]
    assert written[-1] == {"track_id": "x\\ud800", "source_uri": "y\\udc80", "stage": "decode",
                           "error_type": "AudioError", "message": "z\\ud800 failed", "run_id": "run"}


def test_a_track_id_with_a_component_over_255_bytes_fails_at_validation(tmp_path):
    """It failed only when its stems were encoded, after decoding and separating the track."""
    (tmp_path / "m.csv").write_text("track_id,uri\n" + "a/" + "x" * 300 + ",a.wav\nb,b.wav\n")
    with CatalogueIndex.build(str(tmp_path / "m.csv")) as index:
        found = list(index)
    assert [(type(e).__name__, getattr(e, "stage", None)) for e in found] == [("Failure", "validate"), ("Track", None)]
    assert found[0].message.startswith("track_id has a path component of 300 bytes (UTF-8), longer than the 255")
