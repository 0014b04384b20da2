"""Manifest parsing and row validation, without Beam."""

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.errors import InputError
from transforms import manifest

ROWS = [{"track_id": "a/1", "uri": "one.wav", "year": 1999}, {"track_id": "b", "uri": "gs://bucket/two.mp3", "year": None}]


def parquet_bytes() -> bytes:
    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(ROWS), out)
    return out.getvalue()


@pytest.mark.parametrize("kind,data", [
    ("csv", b"track_id,uri,year\na/1,one.wav,1999\nb,gs://bucket/two.mp3,\n"),
    ("jsonl", b'{"track_id": "a/1", "uri": "one.wav", "year": 1999}\n{"track_id": "b", "uri": "gs://bucket/two.mp3", "year": null}\n'),
    ("parquet", parquet_bytes()),
])
def test_every_format_gives_the_same_tracks(kind, data):
    rows = list(manifest.read_rows(io.BytesIO(data), kind, f"/cat/m.{kind}"))
    tracks = [manifest.to_track(n, fields, f"/cat/m.{kind}") for n, fields in rows]
    assert [(t.track_id, t.uri, t.row) for t in tracks] == [("a/1", "/cat/one.wav", 1), ("b", "gs://bucket/two.mp3", 2)]
    assert tracks[0].extra == {"year": "1999"}


def test_unreadable_rows_and_manifests():
    rows = list(manifest.read_rows(io.BytesIO(b'{"track_id": "a", "uri": "x"}\nnot json\n[1]\n'), "jsonl", "m.jsonl"))
    assert isinstance(rows[1][1], InputError) and "m.jsonl line 2: invalid JSON" in str(rows[1][1])
    assert "line 3: invalid JSON (not a JSON object)" in str(rows[2][1])
    extra_cell = list(manifest.read_rows(io.BytesIO(b"track_id,uri\na,x,surplus\n"), "csv", "m.csv"))
    assert str(extra_cell[0][1]) == "m.csv row 1: more cells than columns"
    with pytest.raises(InputError, match="m.csv: manifest lacks the column"):
        list(manifest.read_rows(io.BytesIO(b"id,path\n"), "csv", "m.csv"))
    with pytest.raises(InputError, match="m.jsonl: no rows"):
        list(manifest.read_rows(io.BytesIO(b"\n"), "jsonl", "m.jsonl"))
    with pytest.raises(InputError, match="unknown manifest format"):
        manifest.manifest_format("m.xlsx")


@pytest.mark.parametrize("track_id,problem", [
    ("", "empty"), ("../x", "'..' path component"), ("a//b", "empty, '.' or '..'"), ("/abs", "absolute"),
    ("C:/x", "absolute"), ("a\\\\b", "absolute"), ("tab\there", "control characters"), (".hidden/x", "hidden"),
    ("x" * 600, "longer than 512"),
])
def test_track_ids_that_could_escape_the_prefix(track_id, problem):
    with pytest.raises(InputError, match=problem):
        manifest.check_track_id(track_id)


def test_good_track_ids_and_uris():
    for track_id in ("abc", "album/01 - Song (live).mp3", "ünïcode/曲"):
        manifest.check_track_id(track_id)
    assert manifest.resolve_uri("file:///music/a.wav", "/m.csv") == "/music/a.wav"
    assert manifest.resolve_uri("s3://b/a.wav", "/m.csv") == "s3://b/a.wav"
    assert manifest.resolve_uri("a.wav", "gs://b/cat/m.csv") == "gs://b/cat/a.wav"
    with pytest.raises(InputError, match="unsupported scheme ftp://"):
        manifest.resolve_uri("ftp://x/a.wav", "/m.csv")
