"""The completion record: what the writer writes is what SkipDone and plan read; anything else is no record."""

from __future__ import annotations

import datetime
import json

import pytest

from models.encoding import EncodeOptions
from transforms.catalogue.completion import CompletionRecord

WAV = EncodeOptions()

ROW = {"track_id": "pop/one", "instrument": "vocals", "uri": "/out/stems/m/pop/one/vocals.wav",
       "processed_at": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc), "peak": 0.5}


def record() -> CompletionRecord:
    return CompletionRecord.of("pop/one", "/music/one.wav", {"size": 1234, "mtime": 1700000000.5},
                               "spleeter:2stems@sha256:ab", WAV.as_written(), {"vocals": ROW["uri"]}, "run1",
                               "run1-w0001", [ROW])


def test_a_written_record_reads_back_with_its_rows(tmp_path):
    path = tmp_path / "_SUCCESS.json"
    path.write_bytes(record().to_json())
    read = CompletionRecord.read(str(path))
    assert read == record()
    assert read.metadata_rows() == [ROW]
    assert read.is_done_for("/music/one.wav", {"size": 1234, "mtime": 1700000000.5}, WAV)
    assert not read.is_done_for("/music/one.wav", {"size": 1234, "mtime": 1700000001.0}, WAV)
    assert not read.is_done_for("/music/other.wav", {"size": 1234, "mtime": 1700000000.5}, WAV)
    for other in (EncodeOptions("flac"), EncodeOptions(sample_format="s24"), EncodeOptions("mp3")):
        assert not read.is_done_for("/music/one.wav", {"size": 1234, "mtime": 1700000000.5}, other)
        assert read.is_from("/music/one.wav", {"size": 1234, "mtime": 1700000000.5})
    # What wav stems do not depend on changes nothing.
    assert read.is_done_for("/music/one.wav", {"size": 1234, "mtime": 1700000000.5}, EncodeOptions(bitrate="320k"))


def test_the_metadata_commit_is_read_and_written_under_its_former_key_too():
    """Records from before the metadata commit was so named are read; older versions read new records."""
    fields = json.loads(record().to_json())
    assert fields["metadata_commit"] == fields["metadata_batch"] == "run1-w0001"
    del fields["metadata_commit"]
    assert CompletionRecord.from_json(json.dumps(fields).encode()) == record()


def test_a_record_from_before_encodings_were_recorded_is_done_for_its_stems_codec():
    """Its bitrate is unknown: a 320k run is not redone by a default run, nor by another 320k run."""
    fields = json.loads(record().to_json())
    del fields["encoding"]
    fields["stems"] = {"vocals": "/out/stems/m/pop/one/vocals.mp3"}
    legacy = CompletionRecord.from_json(json.dumps(fields).encode())
    source = ("/music/one.wav", {"size": 1234, "mtime": 1700000000.5})
    assert legacy.encoding == {"codec": "mp3"}
    assert legacy.is_done_for(*source, EncodeOptions("mp3", "320k"))
    assert legacy.is_done_for(*source, EncodeOptions("mp3"))
    assert not legacy.is_done_for(*source, EncodeOptions("flac"))


def _valid() -> dict:
    return json.loads(record().to_json())


@pytest.mark.parametrize("content", [
    b"",
    record().to_json()[:-20],  # truncated
    b"[1, 2, 3]",
    b"\xff\xfe garbage",
    b"null",
    json.dumps({k: v for k, v in _valid().items() if k != "source_fingerprint"}).encode(),
    json.dumps(dict(_valid(), source_fingerprint={"size": "big"})).encode(),
    json.dumps(dict(_valid(), stems={})).encode(),
    json.dumps(dict(_valid(), run_id=7)).encode(),
    json.dumps(dict(_valid(), metadata=[{"instrument": "vocals"}])).encode(),
    json.dumps(dict(_valid(), metadata=[dict(_valid()["metadata"][0], processed_at="yesterday")])).encode(),
    json.dumps(dict(_valid(), encoding="wav")).encode(),
], ids=["empty", "truncated", "list", "garbage", "null", "no-fingerprint", "bad-fingerprint", "no-stems",
        "run-id-number", "row-without-time", "row-bad-time", "bad-encoding"])
def test_anything_but_a_valid_record_is_no_record(tmp_path, content):
    path = tmp_path / "_SUCCESS.json"
    path.write_bytes(content)
    assert CompletionRecord.read(str(path)) is None
    with pytest.raises(ValueError):
        CompletionRecord.from_json(content)


def test_a_missing_record_is_no_record(tmp_path):
    assert CompletionRecord.read(str(tmp_path / "none" / "_SUCCESS.json")) is None


def test_a_track_is_done_for_the_stems_its_record_lists_and_its_commit_rows_are_its_own():
    source = ("/music/one.wav", {"size": 1234, "mtime": 1700000000.5})
    accompaniment = dict(ROW, instrument="accompaniment", uri="/out/stems/m/pop/one/accompaniment.wav")
    both = CompletionRecord.of("pop/one", *source, "spleeter:2stems@sha256:ab", WAV.as_written(),
                               {"accompaniment": accompaniment["uri"], "vocals": ROW["uri"]}, "run2", "run2",
                               [accompaniment, ROW], commit_stems=("vocals",))
    read = CompletionRecord.from_json(both.to_json())
    assert read == both and read.commit_rows() == [ROW]  # accompaniment's row landed with its own run
    assert read.is_done_for(*source, WAV, ("vocals", "accompaniment")) and read.is_done_for(*source, WAV, ("vocals",))
    assert not read.is_done_for(*source, WAV, ("vocals", "no_vocals")) and read.missing(("no_vocals",)) == ["no_vocals"]
    assert record().is_encoded_for(*source, WAV) and not record().is_done_for(*source, WAV, ("accompaniment",))
    # A record of every stem's rows writes no commit_stems, as records always were.
    assert "commit_stems" not in json.loads(record().to_json()) and record().commit_rows() == [ROW]
    fields = json.loads(both.to_json())
    fields["commit_stems"] = ["drums"]  # not a stem of the record
    with pytest.raises(ValueError):
        CompletionRecord.from_json(json.dumps(fields).encode())
