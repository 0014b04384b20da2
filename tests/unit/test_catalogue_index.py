"""The local runner's catalogue index: read once, first row of a track id wins, every row kept in order."""

from __future__ import annotations

import os
import re

import pytest

from models.errors import InputError
from transforms.catalogue.index import CatalogueIndex, entries
from transforms.catalogue.manifest import Failure, Track


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
    """'music/**/*.mp3', the README's example, missed the files directly in music/ (Beam's ** needs a folder)."""
    for name in ("top.mp3", "a/one.mp3", "a/b/two.mp3", "a/skip.wav"):
        (tmp_path / "music" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "music" / name).write_bytes(b"x")
    monkeypatch.chdir(tmp_path)  # and a relative glob starts in the working folder
    found = [e.track_id for e in entries(input_glob="music/**/*.mp3")]
    assert found == ["a/b/two.mp3", "a/one.mp3", "top.mp3"]
    assert all(e.uri.startswith(str(tmp_path)) for e in entries(input_glob="music/**/*.mp3"))
    with pytest.raises(InputError, match=re.escape("--input music/**/*.flac: no file matches")):
        list(entries(input_glob="music/**/*.flac"))
