"""Parquet manifests read within bounds: a small file cannot make the reader hold gigabytes.

Parquet compresses and dictionary-encodes: a 1.5 KB file can hold fifty rows sharing one
10 MB string, half a gigabyte once each row is plain text. So, before any row is read, the
pages of every row group are walked: their headers say what each decompresses to and how
many values it holds, whatever the footer claims, and a file with a row group that would take
more than a catalogue owner's limit to decode is refused. Text columns are then read as
dictionaries, so that a value many rows share is held once, and every row's size is known
before it becomes Python values: ``manifest`` makes a row over its limit a failure row.
"""

from __future__ import annotations

from typing import BinaryIO, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from models.errors import InputError

#: Rows decoded at a time.
BATCH_ROWS = 1024
#: What a decoded value costs besides its own bytes (levels, offsets, a dictionary index).
VALUE_BYTES = 8
#: Arrow's own limit on a page header (statistics included); most take a few dozen bytes.
MAX_PAGE_HEADER = 16 << 20
_HEADER_WINDOW = 64 << 10
_READ_BLOCK = 1 << 20
_TAIL = 8  # a Parquet file ends with its footer's length (4 bytes, little-endian) and b"PAR1"


def open_file(stream: BinaryIO, name: str, max_row_group_bytes: int) -> pq.ParquetFile:
    """``stream`` as a Parquet file whose row groups each decode within ``max_row_group_bytes``.

    Raises ``InputError`` naming ``name`` for a file that is not Parquet, or
    one with a footer or a row group over the limit (counted as the row group's
    pages uncompressed, plus ``VALUE_BYTES`` for every value they hold, or the
    width of a fixed-size one).
    """
    stream.seek(0, 2)
    size = stream.tell()
    if size >= _TAIL:
        stream.seek(size - _TAIL)
        tail = stream.read(_TAIL)
        footer = int.from_bytes(tail[:4], "little")
        if tail[4:] == b"PAR1" and max_row_group_bytes < footer <= size - _TAIL:  # else not Parquet: pyarrow says so
            raise InputError(f"{name}: a Parquet footer of {footer} bytes, over the {max_row_group_bytes} a row "
                             f"group may take to read (--max_manifest_row_group_bytes)")
    stream.seek(0)
    try:
        plain = pq.ParquetFile(stream)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise InputError(f"{name}: not a Parquet file ({one_line(exc)})") from None
    meta = plain.metadata
    widths = [max(VALUE_BYTES, column.length or 0, 12 if column.physical_type == "INT96" else 0)
              for column in plain.schema]
    window, first = _Window(stream), 1
    for group in range(meta.num_row_groups):
        rows = meta.row_group(group).num_rows
        where = f"row group {group + 1} (rows {first} to {first + rows - 1})"
        first += rows
        needed = _row_group_bytes(window, meta.row_group(group), widths, f"{name}: {where}")
        if needed > max_row_group_bytes:
            raise InputError(
                f"{name}: {where} takes {needed} bytes to read, over the {max_row_group_bytes} "
                f"a row group may take (--max_manifest_row_group_bytes); write the manifest with smaller row "
                f"groups (e.g. pyarrow's row_group_size=100000)")
    text = [column.path for column in plain.schema if column.physical_type == "BYTE_ARRAY"]
    # Read through a small buffer: without one, pyarrow holds each column's whole compressed chunk.
    return pq.ParquetFile(stream, metadata=meta, read_dictionary=text, buffer_size=_READ_BLOCK)


def batches(file: pq.ParquetFile) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    """``(batch, sizes)``: the file's rows ``BATCH_ROWS`` at a time, and what each row holds in bytes."""
    # A row group at a time: each has its own dictionaries, which pyarrow cannot join in a nested column.
    for group in range(file.num_row_groups):
        for batch in file.iter_batches(batch_size=BATCH_ROWS, row_groups=[group]):
            sizes = np.zeros(batch.num_rows, dtype=np.int64)
            for column in batch.columns:
                sizes += _sizes(column)
            yield batch, sizes


def _sizes(array: pa.Array) -> np.ndarray:
    """The bytes each element of ``array`` holds: text by its length, lists and structs by their parts.

    Every value counts at least one byte, so that a list of a million nulls
    weighs what a million values take to hold. Text read as a dictionary is
    measured from the dictionary's offsets, never expanded.
    """
    kind = array.type
    if isinstance(array, pa.ExtensionArray):
        return _sizes(array.storage)
    if pa.types.is_dictionary(kind):
        dictionary, valid = array.dictionary, array.is_valid().to_numpy(zero_copy_only=False)
        indices = array.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        # pyarrow takes a file's dictionary indices as they are: a corrupt one would read any memory.
        if valid.any() and not 0 <= indices[valid].min() <= indices[valid].max() < len(dictionary):
            raise pa.ArrowInvalid("a dictionary index out of its dictionary's range")
        indices = np.where(valid, indices, 0)
        if not len(dictionary):
            sizes = np.zeros(len(array), dtype=np.int64)
        elif _is_text(dictionary.type):
            offsets = _offsets(dictionary)
            sizes = np.where(valid, offsets[indices + 1] - offsets[indices], 0)
        else:
            sizes = np.where(valid, _sizes(dictionary.take(pa.array(indices))), 0)
    elif _is_text(kind):
        sizes = pc.binary_length(array).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind) \
            or pa.types.is_map(kind):
        parents = pc.list_parent_indices(array).to_numpy(zero_copy_only=False)
        sizes = np.bincount(parents, weights=_sizes(array.flatten()), minlength=len(array)).astype(np.int64)
    elif pa.types.is_struct(kind):
        sizes = np.zeros(len(array), dtype=np.int64)
        for field in array.flatten():
            sizes += _sizes(field)
    else:
        try:
            width = (kind.bit_width + 7) // 8
        except ValueError:  # no fixed width (null, or a type a manifest has no use for)
            width = 1
        sizes = np.full(len(array), width, dtype=np.int64)
    return np.maximum(sizes, 1)


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_binary(kind) or pa.types.is_large_string(kind) \
        or pa.types.is_large_binary(kind)


def _offsets(text: pa.Array) -> np.ndarray:
    """The value offsets of a string or binary array, as numpy, without copying its data."""
    dtype = np.int64 if pa.types.is_large_string(text.type) or pa.types.is_large_binary(text.type) else np.int32
    return np.frombuffer(text.buffers()[1], dtype=dtype, count=len(text) + 1,
                         offset=text.offset * np.dtype(dtype).itemsize).astype(np.int64)


def _row_group_bytes(window: "_Window", group, widths: list[int], where: str) -> int:
    """What a row group (``where``, for errors) takes to decode, from its pages' headers (see ``open_file``)."""
    total = 0
    for index in range(group.num_columns):
        chunk = group.column(index)
        # Where pyarrow starts reading the chunk, and how far (parquet's column_reader.cc).
        start = chunk.data_page_offset
        if chunk.has_dictionary_page and 0 < chunk.dictionary_page_offset < start:
            start = chunk.dictionary_page_offset
        position, end = start, start + chunk.total_compressed_size
        while position < end:
            header, length = _page_header(window, position, where)
            uncompressed, compressed = _count(header, 2), _count(header, 3)
            # num_values of a data page, a dictionary page or a version 2 data page
            values = max(_count(header.get(field, {}), 1) for field in (5, 7, 8))
            if min(uncompressed, compressed, values) < 0:
                raise InputError(f"{where} has a malformed page header at byte {position}")
            total += uncompressed + values * widths[index]
            position += length + compressed
    return total


def _count(fields, field: int) -> int:
    """Field ``field`` of a decoded struct as a count: 0 when absent, -1 when it is no count at all."""
    if not isinstance(fields, dict):
        return -1
    value = fields.get(field, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else -1


def _page_header(window: "_Window", position: int, where: str) -> tuple[dict, int]:
    """The page header at ``position`` (parquet.thrift ``PageHeader``'s numeric fields) and its length."""
    for size in (_HEADER_WINDOW, MAX_PAGE_HEADER):
        reader = _Thrift(window.at(position, size))
        try:
            return reader.struct(), reader.position
        except (IndexError, ValueError, RecursionError):
            if len(reader.data) < size:  # the file ends inside the header, or it is garbage
                break
    raise InputError(f"{where} has an unreadable page header at byte {position}")


class _Window:
    """Reads of a seekable stream a block at a time, so that page headers a few bytes apart cost one read."""

    def __init__(self, stream: BinaryIO):
        self.stream, self.start, self.data = stream, 0, b""

    def at(self, position: int, size: int) -> memoryview:
        """At least ``size`` bytes from ``position`` (fewer at the end of the stream)."""
        if not (self.start <= position and position + size <= self.start + len(self.data)):
            self.stream.seek(position)
            self.start, self.data = position, self.stream.read(max(size, _READ_BLOCK))
        return memoryview(self.data)[position - self.start:position - self.start + size]


class _Thrift:
    """Just enough of Thrift's compact protocol to read a Parquet page header.

    ``struct`` gives a struct's integer fields by field id (nested structs as
    dicts) and skips everything else; running past the data is an IndexError.
    """

    def __init__(self, data: memoryview):
        self.data, self.position = data, 0

    def byte(self) -> int:
        value = self.data[self.position]
        self.position += 1
        return value

    def varint(self) -> int:
        value = shift = 0
        while True:
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")

    def zigzag(self) -> int:
        value = self.varint()
        return (value >> 1) ^ -(value & 1)

    def skip(self, size: int) -> None:
        if size < 0 or self.position + size > len(self.data):
            raise IndexError("past the data")
        self.position += size

    def struct(self) -> dict:
        fields, field = {}, 0
        while True:
            head = self.byte()
            if head == 0:  # STOP
                return fields
            delta = head >> 4
            field = field + delta if delta else self.zigzag()
            fields[field] = self.value(head & 0x0F)

    def value(self, kind: int):
        if kind in (1, 2):  # a boolean field: its value is its type
            return kind == 1
        if kind in (4, 5, 6):  # i16, i32, i64
            return self.zigzag()
        if kind == 12:
            return self.struct()
        if kind == 3:  # byte
            self.skip(1)
        elif kind == 7:  # double
            self.skip(8)
        elif kind == 8:  # binary
            self.skip(self.varint())
        elif kind in (9, 10):  # list, set
            head = self.byte()
            count = self.varint() if head >> 4 == 15 else head >> 4
            for _ in range(count):
                self.element(head & 0x0F)
        elif kind == 11:  # map
            count = self.varint()
            if count:
                types = self.byte()
                for _ in range(count):
                    self.element(types >> 4)
                    self.element(types & 0x0F)
        else:
            raise ValueError(f"unknown Thrift type {kind}")
        return None

    def element(self, kind: int) -> None:
        if kind in (1, 2):  # a boolean in a container takes a byte
            self.skip(1)
        else:
            self.value(kind)


def one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
