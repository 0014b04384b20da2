"""WriteParquet: rows to Parquet files under a prefix, through Beam's file sinks.

Beam writes the rows into files under a temporary folder, ``.temp-<name>/``
beside the final ones; a later step, once it has gathered every temporary
file (a GroupByKey), renames them all into place. A final name thus appears
only once all the rows are written, and a retried bundle leaves nothing but
temporary files, never a partial or duplicate final file; no rows, no file at
all. The pipeline removes the temporary folder once the files are in place.
"""

from __future__ import annotations

import dataclasses
import json
import logging

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io import fileio
from apache_beam.options.value_provider import StaticValueProvider

from transforms.catalogue import lease, storage
from transforms.catalogue.manifest import Failure, storable

log = logging.getLogger(__name__)

# Counted by a commit step that found its run's lease lost, and so wrote no commit marker.
COMMITS_REFUSED = "commits_refused"

FAILURE_SCHEMA = pa.schema([
    ("track_id", pa.string()), ("source_uri", pa.string()), ("stage", pa.string()),
    ("error_type", pa.string()), ("message", pa.string()), ("run_id", pa.string()),
])

METADATA_SCHEMA = pa.schema([
    ("track_id", pa.string()), ("instrument", pa.string()), ("uri", pa.string()), ("source_uri", pa.string()),
    ("duration_s", pa.float64()), ("sample_rate", pa.int32()), ("channels", pa.int32()), ("codec", pa.string()),
    ("bitrate", pa.string()), ("sample_format", pa.string()), ("model", pa.string()), ("peak", pa.float32()), ("rms", pa.float32()),
    # models/loudness.py, models/vocal_activity.py; null for silence, and for models without a vocals stem.
    ("loudness_lufs", pa.float64()), ("loudness_range_lu", pa.float64()), ("true_peak_dbtp", pa.float64()),
    ("vocal_activity", pa.float64()), ("instrumental", pa.bool_()), ("run_id", pa.string()),
    ("processed_at", pa.timestamp("us", tz="UTC")),
])


# A WriteParquet of ``<folder>/<name>`` writes into ``<folder>/.temp-<name>/`` first; a run that died
# leaves that folder behind (the next run removes it: pipeline/run.py).
TEMP_PREFIX = ".temp-"


def schema_with_extras(base: pa.Schema, rows: list[dict]) -> pa.Schema:
    """``base`` plus every other column seen in ``rows``, as nullable text (manifest columns)."""
    extras = sorted({k for row in rows for k in row} - set(base.names))
    return pa.schema(list(base) + [(name, pa.string()) for name in extras])


class _ParquetSink(fileio.FileSink):
    def __init__(self, schema: pa.Schema):
        self.schema = schema

    def open(self, fh):
        self._fh, self._rows = fh, []

    def write(self, row):
        self._rows.append(row)

    def flush(self):
        schema = schema_with_extras(self.schema, self._rows)
        table = pa.Table.from_pylist(self._rows, schema=schema)
        pq.write_table(table, self._fh)
        self._rows = []


class WriteParquet(beam.PTransform):
    """Rows (dicts) -> ``<path_prefix>-<shard>.parquet`` files with ``schema`` (+ extra text columns)."""

    def __init__(self, path_prefix: str, schema: pa.Schema):
        super().__init__()
        self.path_prefix, self.schema = path_prefix, schema

    def expand(self, rows):
        folder, name = self.path_prefix.rsplit("/", 1)
        schema = self.schema
        # Beam's own default would be a .temp<uuid>/ folder beside the files, left behind empty.
        temp = storage.join(folder, f"{TEMP_PREFIX}{name}")
        written = rows | fileio.WriteToFiles(
            path=folder,
            file_naming=fileio.default_file_naming(prefix=name, suffix=".parquet"),
            sink=lambda destination: _ParquetSink(schema),
            shards=1,
            temp_directory=StaticValueProvider(str, temp),
        )
        # Once every file is moved into place (on whichever worker, whichever runner), its temporary folder goes.
        _ = (written
             | "CountMoved" >> beam.combiners.Count.Globally()
             | "RemoveTemp" >> beam.Map(lambda _: storage.delete_tree(temp)))
        return written


def failure_row(failure: Failure, run_id: str) -> dict:
    """A row of the failure table (``FAILURE_SCHEMA``); ``failure_of`` reads it back.

    Whatever text a failure names (an id or a message quoting a manifest or a
    file name) is written: a lone surrogate, which Parquet cannot hold, as its
    escape.
    """
    return {name: storable(value) if isinstance(value, str) else value
            for name, value in {**dataclasses.asdict(failure), "run_id": run_id}.items()}


def failure_of(row: dict) -> Failure:
    return Failure(**{field.name: row[field.name] for field in dataclasses.fields(Failure)})


class CommitMarker(beam.PTransform):
    """After the files of a ``WriteParquet`` are in place, a small JSON object at ``marker`` says so.

    Part of the pipeline, not of the launcher, so it holds on runners whose
    launcher does not wait for the job (Dataflow templates, schedulers).
    Nothing is marked when nothing was written. With a ``lease`` (its URI and
    the run's token) the marker is written only while the run still holds it
    (``lease.fence``): a run that lost its lease commits nothing, and counts
    ``COMMITS_REFUSED`` for its driver.
    """

    def __init__(self, marker: str, lease: tuple[str, str] | None = None):
        super().__init__()
        self.marker, self.lease = marker, lease

    def expand(self, written):
        marker, held = self.marker, self.lease

        def mark(files: int) -> None:
            if not files:  # not empty: S3 refuses to complete an upload of no bytes
                return
            if held:
                try:
                    lease.fence(*held)
                except lease.LeaseHeld as lost:
                    log.error("%s not written: %s", marker, lost)
                    beam.metrics.Metrics.counter("beamsplitter", COMMITS_REFUSED).inc()
                    return
            storage.publish_bytes(json.dumps({"files": files}).encode(), marker)

        return written | "CountFiles" >> beam.combiners.Count.Globally() | "Mark" >> beam.Map(mark)
