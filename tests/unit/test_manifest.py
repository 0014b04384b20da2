"""Manifest parsing and row validation, without Beam."""

import io
import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.errors import InputError
from transforms.catalogue import manifest
from transforms.catalogue.layout import RESERVED

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
    tracks = [manifest.to_track(n, fields, manifest.Sources(f"/cat/m.{kind}")) for n, fields in rows]
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


@pytest.mark.parametrize("data,message", [
    (b'track_id,uri\na,a.wav\nb,"b.wav\nc,c.wav\n',
     "m.csv line 3: a quote opened in the row starting here is never closed (it runs to the end of the file)"),
    (b"track_id,uri\na," + b"x" * 200_000 + b"\nb,b.wav\n",
     "m.csv line 2: a field longer than the CSV reader's limit of 131072 characters"),
    # In a large file an unclosed quote swallows rows until the field is too long: named from its first line.
    (b'track_id,uri\na,a.wav\nb,"b.wav\n' + b"c,c.wav\n" * 20_000,
     "m.csv line 3: a field longer than the CSV reader's limit of 131072 characters; the row runs on to line"),
    (b"track_id,uri\n" + b"a," * 600_000 + b"\n", "m.csv line 2: longer than 1048576 bytes (--max_manifest_row_bytes)"),
    (b'track_id,uri\n"a"b,a.wav\n', "m.csv line 2: malformed CSV"),
    (b"track_id,caf\xe9\n", "m.csv header line 1: invalid UTF-8 (byte 0xe9 at byte offset 12 of the file"),
])
def test_csv_that_cannot_be_parsed_is_one_error_naming_the_line(data, message):
    with pytest.raises(InputError) as caught:
        list(manifest.read_rows(io.BytesIO(data), "csv", "m.csv"))
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize("kind,data", [
    ("csv", b"track_id,uri\na,a.wav\nb,caf\xe9.wav\nc,c.wav\n"),
    ("jsonl", b'{"track_id": "a", "uri": "a.wav"}\n{"track_id": "b", "uri": "caf\xe9.wav"}\n'
              b'{"track_id": "c", "uri": "c.wav"}\n'),
])
def test_invalid_utf8_fails_its_row_and_is_never_replaced(kind, data):
    rows = list(manifest.read_rows(io.BytesIO(data), kind, f"m.{kind}"))
    assert [fields["track_id"] for _, fields in rows if isinstance(fields, dict)] == ["a", "c"]
    (bad,) = [fields for _, fields in rows if isinstance(fields, InputError)]
    offset = data.index(b"\xe9")
    where = "row 2, line 3" if kind == "csv" else "line 2"
    assert str(bad) == (f"m.{kind} {where}: invalid UTF-8 (byte 0xe9 at byte offset {offset} of the file; "
                        "save the manifest as UTF-8)")


@pytest.mark.parametrize("kind,data", [
    ("csv", b"\xef\xbb\xbftrack_id,uri\na,a.wav\n"),
    ("jsonl", b'\xef\xbb\xbf{"track_id": "a", "uri": "a.wav"}\n'),
])
def test_a_utf8_bom_is_not_part_of_the_first_column(kind, data):
    assert list(manifest.read_rows(io.BytesIO(data), kind, f"m.{kind}")) == [(1, {"track_id": "a", "uri": "a.wav"})]


def test_json_lines_too_deep_or_too_long_fail_alone():
    data = (b'{"track_id": "a", "uri": "a.wav"}\n'
            + b'{"track_id": "deep", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"
            + b'{"track_id": "long", "x": "' + b"x" * (manifest.MAX_ROW_BYTES + 10) + b'"}\n'
            + b'{"track_id": "b", "uri": "b.wav"}\n')
    rows = list(manifest.read_rows(io.BytesIO(data), "jsonl", "m.jsonl"))
    assert [(n, f["track_id"]) for n, f in rows if isinstance(f, dict)] == [(1, "a"), (4, "b")]
    assert [(n, str(f)) for n, f in rows if isinstance(f, InputError)] == [
        (2, "m.jsonl line 2: invalid JSON (nested too deep)"),
        (3, f"m.jsonl line 3: longer than {manifest.MAX_ROW_BYTES} bytes (--max_manifest_row_bytes)")]


def corrupt_parquet(rows: int = 30_000, skip: int = 0) -> bytes:
    """A Parquet manifest of three row groups whose second one's first data page is garbage from ``skip``
    bytes in (0: its header)."""
    out = io.BytesIO()
    table = pa.Table.from_pylist([{"track_id": f"t{i}", "uri": f"t{i}.wav"} for i in range(rows)])
    pq.write_table(table, out, row_group_size=rows // 3, compression="none")
    data = bytearray(out.getvalue())
    page = pq.ParquetFile(io.BytesIO(bytes(data))).metadata.row_group(1).column(1).data_page_offset + skip
    data[page:page + 64] = b"\xff" * 64
    return bytes(data)


@pytest.mark.parametrize("skip,message", [
    (0, r"^m.parquet: row group 2 \(rows 10001 to 20000\) has an unreadable page header at byte \d+$"),
    (100, r"^m.parquet: unreadable after row 10000 \(.*\)$"),
])
def test_parquet_corrupt_part_way_is_one_error_naming_the_row(skip, message):
    with pytest.raises(InputError, match=message):
        list(manifest.read_rows(io.BytesIO(corrupt_parquet(skip=skip)), "parquet", "m.parquet"))


@pytest.mark.parametrize("track_id", [*sorted(RESERVED), "a/_SUCCESS.json", "a/_success.json", "x/_committed/y"])
def test_track_ids_with_the_layouts_own_names_are_refused(track_id):
    with pytest.raises(InputError, match="a name the output layout reserves for its own files"):
        manifest.check_track_id(track_id)


def test_ids_a_case_folding_store_keeps_in_one_folder_share_a_key():
    assert manifest.folder_key("Album/Song") == manifest.folder_key("album/SONG")
    assert manifest.folder_key("Caf\u00e9") == manifest.folder_key("cafe\u0301")  # composed and decomposed é
    assert manifest.folder_key("a/1") != manifest.folder_key("a/2")


def test_manifest_cells_reach_the_metadata_as_bare_text():
    """A Parquet manifest's timestamp came through as '"2020-01-02 03:04:05"', quotes included."""
    import datetime

    table = pa.Table.from_pylist([{
        "track_id": "a", "uri": "a.wav", "released": datetime.datetime(2020, 1, 2, 3, 4, 5),
        "day": datetime.date(2020, 1, 2), "plays": 12, "score": 0.5, "tags": ["pop", "live"], "label": "Ÿ",
    }])
    out = io.BytesIO()
    pq.write_table(table, out)
    ((number, fields),) = manifest.read_rows(io.BytesIO(out.getvalue()), "parquet", "/cat/m.parquet")
    assert manifest.to_track(number, fields, manifest.Sources("/cat/m.parquet")).extra == {
        "released": "2020-01-02T03:04:05", "day": "2020-01-02", "plays": "12", "score": "0.5",
        "tags": '["pop", "live"]', "label": "Ÿ"}


SURROGATE_ROWS = (b'{"track_id": "a", "uri": "a.wav"}\n'
                  b'{"track_id": "bad\\ud800", "uri": "x.wav"}\n'  # JSON's escape of a lone surrogate
                  b'{"track_id": "b", "uri": "b.wav", "note": ["ok", {"k": "\\udc80"}]}\n'
                  b'{"track_id": "c", "uri": "c.wav", "\\ud83d": "key"}\n'
                  b'{"track_id": "d", "uri": "d.wav", "emoji": "\\ud83c\\udfb5"}\n')  # a pair is a character


def test_text_no_utf8_store_can_hold_fails_its_row():
    rows = list(manifest.read_rows(io.BytesIO(SURROGATE_ROWS), "jsonl", "m.jsonl"))
    assert [(n, f["track_id"]) for n, f in rows if isinstance(f, dict)] == [(1, "a"), (5, "d")]
    assert rows[4][1]["emoji"] == "\U0001f3b5"
    assert [(n, str(f)) for n, f in rows if isinstance(f, InputError)] == [
        (2, r"m.jsonl row 2: column 'track_id' holds a lone surrogate ('\ud800'), text that no UTF-8 file, path "
            "or table can hold"),
        (3, r"m.jsonl row 3: column 'note' holds a lone surrogate ('\udc80'), text that no UTF-8 file, path "
            "or table can hold"),
        (4, r"m.jsonl row 4: column '\ud83d' holds a lone surrogate ('\ud83d'), text that no UTF-8 file, path "
            "or table can hold")]
    for _, fields in rows:
        str(fields).encode()  # every message can be written anywhere
    with pytest.raises(InputError, match=r"track_id 'caf\\udce9' holds a lone surrogate"):
        manifest.check_track_id("caf\udce9")  # a file name that is not UTF-8, as os.listdir gives it


def test_a_path_component_longer_than_a_file_name_fails_validation():
    manifest.check_track_id("a/" + "x" * 255)
    manifest.check_track_id("a/" + "é" * 127)  # 254 bytes
    with pytest.raises(InputError, match=r"track_id has a path component of 300 bytes \(UTF-8\), longer than the 255"):
        manifest.check_track_id("album/" + "é" * 150)  # 150 characters, under MAX_TRACK_ID


WIDE = b"track_id,uri," + b",".join(b"c%d" % i for i in range(100_000)) + b"\na,a.wav" + b",x" * 100_000 + b"\n"


def test_a_csv_with_more_columns_than_the_metadata_may_carry_is_refused():
    """100,000 columns for one track made a metadata file of 100,015 columns (775 MB)."""
    with pytest.raises(InputError, match=r"^m.csv: the manifest would carry 100000 columns into the metadata besides "
                                         r"track_id and uri, over the 256 it may \(--max_manifest_columns\)$"):
        list(manifest.read_rows(io.BytesIO(WIDE), "csv", "m.csv"))
    limits = manifest.Limits(columns=100_000)
    ((_, fields),) = manifest.read_rows(io.BytesIO(WIDE), "csv", "m.csv", limits=limits)
    assert len(fields) == 100_002


def test_json_lines_bringing_more_columns_than_the_metadata_may_carry_fail_alone():
    lines = [{"track_id": "a", "uri": "a.wav", "x": 1}, {"track_id": "b", "uri": "b.wav", "y": 1, "z": 1},
             {"track_id": "c", "uri": "c.wav", "x": 2, "y": 2}, {"track_id": "d", "uri": "d.wav", "w": 1}]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    rows = list(manifest.read_rows(io.BytesIO(data), "jsonl", "m.jsonl", limits=manifest.Limits(columns=2)))
    assert [f["track_id"] for _, f in rows if isinstance(f, dict)] == ["a", "c"]
    assert [(n, str(f)) for n, f in rows if isinstance(f, InputError)] == [
        (2, "m.jsonl line 2: the manifest would carry 3 columns into the metadata besides track_id and uri, "
            "over the 2 it may (--max_manifest_columns)"),
        (4, "m.jsonl line 4: the manifest would carry 3 columns into the metadata besides track_id and uri, "
            "over the 2 it may (--max_manifest_columns)")]


BOTH = "the columns 'instrument' and 'manifest_instrument' would both be the metadata's column 'manifest_instrument'"


def test_a_column_and_its_metadata_name_both_present_are_refused():
    """'instrument' is carried as manifest_instrument: a manifest_instrument column too lost one of the two."""
    with pytest.raises(InputError, match=f"^m.csv: {BOTH}"):
        list(manifest.read_rows(io.BytesIO(b"track_id,uri,instrument,manifest_instrument\na,a.wav,x,y\n"), "csv",
                                "m.csv"))
    rows = list(manifest.read_rows(io.BytesIO(
        b'{"track_id": "a", "uri": "a.wav", "instrument": "x", "manifest_instrument": "y"}\n'
        b'{"track_id": "b", "uri": "b.wav", "instrument": "x"}\n'), "jsonl", "m.jsonl"))
    assert str(rows[0][1]).startswith(f"m.jsonl line 1: {BOTH}")
    assert manifest.carried_columns(manifest.to_track(*rows[1], manifest.Sources("/m.jsonl")).extra) == {
        "manifest_instrument": "x"}
    # Named as the metadata's own columns are, whatever the encoding: a WAV run has no bitrate of its own.
    assert manifest.carried_columns({"bitrate": "320k", "label": "x"}) == {"manifest_bitrate": "320k", "label": "x"}
    with pytest.raises(InputError, match="the column\\(s\\) 'x' appear more than once"):
        list(manifest.read_rows(io.BytesIO(b"track_id,uri,x,x\na,a.wav,1,2\n"), "csv", "m.csv"))


def test_the_metadata_columns_are_the_metadata_schemas():
    from transforms.write import METADATA_SCHEMA

    assert manifest.METADATA_COLUMNS == set(METADATA_SCHEMA.names)


def test_relative_sources_stay_inside_the_manifests_folder(tmp_path):
    folder = tmp_path / "cat" / "sub"
    (folder / "album").mkdir(parents=True)
    (tmp_path / "x.wav").write_bytes(b"")
    (folder / "album" / "in.wav").write_bytes(b"")
    (folder / "link.wav").symlink_to(tmp_path / "x.wav")
    (folder / "linked").symlink_to(tmp_path)
    sources = manifest.Sources(str(folder / "m.csv"))
    assert sources.resolve("album/in.wav") == str(folder / "album" / "in.wav")
    assert sources.resolve("album/../album/in.wav") == str(folder / "album" / "in.wav")
    assert sources.resolve(str(tmp_path / "x.wav")) == str(tmp_path / "x.wav")  # absolute: as given
    for uri in ("../../x.wav", "album/../../../x.wav", "link.wav", "linked/x.wav"):
        with pytest.raises(InputError, match=re.escape(f"uri {uri!r} leads outside the manifest's folder {folder}/ "
                                                       "(--allow_source_outside_manifest allows it)")):
            sources.resolve(uri)
    allowed = manifest.Sources(str(folder / "m.csv"), outside=True)
    assert allowed.resolve("../../x.wav") == str(tmp_path / "x.wav")
    assert allowed.resolve("link.wav") == str(folder / "link.wav")
    remote = manifest.Sources("gs://b/cat/m.csv")
    assert remote.resolve("a/../b.wav") == "gs://b/cat/a/../b.wav"
    with pytest.raises(InputError, match="leads outside the manifest's folder gs://b/cat/"):
        remote.resolve("a/../../x.wav")


def test_a_nul_in_a_uri_fails_its_row():
    with pytest.raises(InputError, match="row 3: uri 'a\\\\x00.wav' holds a NUL character"):
        manifest.to_track(3, {"track_id": "a", "uri": "a\x00.wav"}, manifest.Sources("/m.csv"))


def test_a_csv_row_running_over_many_lines_is_bounded_as_a_line_is():
    """Quoted newlines cannot make a row longer than a line may be."""
    row = b'a,a.wav,' + b",".join([b'"' + b"x" * 100_000 + b'\n"'] * 20) + b"\n"
    data = b"track_id,uri," + b",".join(b"c%d" % i for i in range(20)) + b"\n" + row
    with pytest.raises(InputError, match=r"^m.csv line 2: a row running on to line 12, longer than 1048576 bytes"):
        list(manifest.read_rows(io.BytesIO(data), "csv", "m.csv"))
