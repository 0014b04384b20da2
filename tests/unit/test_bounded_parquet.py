"""Parquet manifests read within bounds: what a small file unpacks to cannot exhaust memory."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.errors import InputError
from transforms.catalogue import manifest

REPO = Path(__file__).resolve().parents[2]

# The index built in a process of its own, reporting its peak RSS (KiB) before and after: the kernel's
# VmHWM, which starts afresh with the program (getrusage's ru_maxrss keeps the forking test's).
INDEX = """
import json, re, sys
from transforms.catalogue.index import CatalogueIndex

def peak():
    with open("/proc/self/status") as status:
        return int(re.search(r"VmHWM:\\s*(\\d+) kB", status.read())[1])

before, found = peak(), []
for path in sys.argv[1:]:
    with CatalogueIndex.build(path) as index:
        found.append([[entry.track_id, getattr(entry, "message", None)] for entry in index])
print(json.dumps({"before": before, "after": peak(), "found": found}))
"""


def shared_string_bomb(path: Path) -> Path:
    """50 rows sharing one dictionary-encoded 10 MB string: half a gigabyte as Python text."""
    note = pa.DictionaryArray.from_arrays(pa.array(np.zeros(50, dtype=np.int32)), pa.array(["x" * 10_000_000]))
    table = pa.table({"track_id": [f"t{i}" for i in range(50)], "uri": [f"t{i}.wav" for i in range(50)],
                      "note": note})
    pq.write_table(table, path, compression="zstd", store_schema=False)
    return path


def list_bomb(path: Path) -> Path:
    """Row 1 lists one 10 MB dictionary string 100,000 times (a terabyte as text); row 2 is fine."""
    values = pa.DictionaryArray.from_arrays(pa.array(np.zeros(100_001, dtype=np.int32)), pa.array(["y" * 10_000_000]))
    tags = pa.ListArray.from_arrays(pa.array([0, 100_000, 100_000], pa.int32()), values)
    pq.write_table(pa.table({"track_id": ["a", "b"], "uri": ["a.wav", "b.wav"], "tags": tags}), path,
                   compression="zstd", store_schema=False)
    return path


def test_a_small_parquet_manifest_cannot_unpack_into_memory(tmp_path):
    """The 1.5 KB manifest took the index to 823 MB (1.5 GB here); a row over the row limit is a failure row,
    never made Python values."""
    bomb, listed = shared_string_bomb(tmp_path / "bomb.parquet"), list_bomb(tmp_path / "list.parquet")
    assert bomb.stat().st_size < 1600 and listed.stat().st_size < 1600
    result = subprocess.run([sys.executable, "-c", INDEX, str(bomb), str(listed)], capture_output=True, text=True,
                            cwd=REPO)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    bomb_rows, list_rows = report["found"]
    assert bomb_rows == [[f"<row {n}>", f"{bomb} row {n}: {10_000_006 + 2 * len(str(n - 1))} bytes, over the 1048576 a "
                                        "row may hold (--max_manifest_row_bytes)"] for n in range(1, 51)]
    assert list_rows == [["<row 1>", f"{listed} row 1: 1000000000006 bytes, over the 1048576 a row may hold "
                                     "(--max_manifest_row_bytes)"], ["b", None]]
    # KiB. What the imports take before the index varies by machine (244 MB on CI, with apache_beam); the
    # unpacked bomb once added 600 MB on top, so the growth is the measure.
    assert report["after"] - report["before"] < 100 * 1024, report
    assert report["after"] < 512 * 1024, report


def test_a_row_group_that_unpacks_past_the_limit_is_refused_before_any_row():
    out = io.BytesIO()
    table = pa.table({"track_id": ["a", "b"], "uri": ["a.wav", "b.wav"], "note": ["x" * 2_000_000, "y"]})
    pq.write_table(table, out, compression="zstd", use_dictionary=False)
    assert len(out.getvalue()) < 2000
    limits = manifest.Limits(row_group_bytes=1 << 20, row_bytes=4 << 20)
    with pytest.raises(InputError, match=r"^m.parquet: row group 1 \(rows 1 to 2\) takes 2000\d\d\d bytes to read, "
                                         r"over the 1048576 a row group may take \(--max_manifest_row_group_bytes\); "
                                         r"write the manifest with smaller row groups"):
        list(manifest.read_rows(io.BytesIO(out.getvalue()), "parquet", "m.parquet", limits=limits))
    rows = list(manifest.read_rows(io.BytesIO(out.getvalue()), "parquet", "m.parquet",
                                   limits=manifest.Limits(row_bytes=4 << 20)))
    assert [fields["track_id"] for _, fields in rows] == ["a", "b"]


def test_invalid_utf8_in_a_parquet_cell_fails_its_row():
    """pyarrow does not check text as it reads it: the row fails, as invalid UTF-8 in CSV or JSON Lines does."""
    out = io.BytesIO()
    table = pa.table({"track_id": ["a", "b", "c"], "uri": ["a.wav", "PLACEHOLDER", "c.wav"]})
    pq.write_table(table, out, compression="none", use_dictionary=False, write_statistics=False)
    data = out.getvalue().replace(b"PLACEHOLDER", b"caf\xe9 XX.wav")
    rows = list(manifest.read_rows(io.BytesIO(data), "parquet", "m.parquet"))
    assert [fields["track_id"] for _, fields in rows if isinstance(fields, dict)] == ["a", "c"]
    assert [(n, str(f)) for n, f in rows if isinstance(f, InputError)] == [
        (2, "m.parquet row 2: column 'uri' holds invalid UTF-8 (save the manifest's text as UTF-8)")]


def test_wide_and_nested_parquet_rows_are_measured_by_what_they_hold():
    rows = [{"track_id": "a", "uri": "a.wav", "tags": ["x" * 600_000, "y" * 600_000], "m": {"k": "v"}},
            {"track_id": "b", "uri": "b.wav", "tags": None, "m": {"k": "z" * 2_000_000}},
            {"track_id": "c", "uri": "c.wav", "tags": ["ok"], "m": None}]
    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), out)
    found = list(manifest.read_rows(io.BytesIO(out.getvalue()), "parquet", "m.parquet"))
    assert [(n, str(f)) for n, f in found if isinstance(f, InputError)] == [
        (1, "m.parquet row 1: 1200007 bytes, over the 1048576 a row may hold (--max_manifest_row_bytes)"),
        (2, "m.parquet row 2: 2000007 bytes, over the 1048576 a row may hold (--max_manifest_row_bytes)")]
    assert found[2] == (3, rows[2])


@pytest.mark.parametrize("data", [b"not parquet", b"", b"PAR1" + b"\xff" * 8 + b"PAR1"])
def test_what_is_not_parquet_is_named_so(data):
    with pytest.raises(InputError, match=r"^m.parquet: not a Parquet file \("):
        list(manifest.read_rows(io.BytesIO(data), "parquet", "m.parquet"))


def test_a_footer_bigger_than_a_row_group_may_be_is_refused_unread():
    data = b"PAR1" + b"\x00" * (2 << 20) + (2 << 20).to_bytes(4, "little") + b"PAR1"
    with pytest.raises(InputError, match=r"^m.parquet: a Parquet footer of 2097152 bytes, over the 1048576 a row "
                                         r"group may take to read \(--max_manifest_row_group_bytes\)$"):
        list(manifest.read_rows(io.BytesIO(data), "parquet", "m.parquet",
                                limits=manifest.Limits(row_group_bytes=1 << 20)))
