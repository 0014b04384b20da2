"""The catalogue job: assemble the pipeline from its named steps, run it, summarise it."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import io
import json
import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from tqdm import tqdm

from models.checkpoint import checkpoint_digest
from models.config import load_config
from models.provider import resolve_checkpoint
from models.uris import normalize
from pipeline.options import BeamsplitterOptions, is_local, job_args, pin_local_runner
from pipeline.waves import Wave, waves
from transforms.catalogue import manifest, storage
from transforms.catalogue.index import CatalogueIndex, input_files
from transforms.catalogue.layout import Layout, commit_name, commit_of, marker_commit, model_folder
from transforms.catalogue.lease import Lease
from transforms.catalogue.manifest import Failure
from transforms.decode import DecodeChunks
from transforms.inference import SeparateChunks, SpleeterModelHandler
from transforms.read import ReadCatalogue
from transforms.reassemble import ReassembleTracks
from transforms.skip import SkipDone
from transforms.stash import Scratch, Stash
from transforms.write import FAILURE_SCHEMA, METADATA_SCHEMA, CommitMarker, WriteParquet, failure_of, failure_row

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSettings:
    """What the driver settles before any worker starts."""

    options: BeamsplitterOptions
    layout: Layout
    model_id: str
    checkpoint_sha256: str
    run_id: str
    landed_commits: frozenset = frozenset()  # the metadata commits of earlier runs that landed


def settle_earlier_runs(layout: Layout) -> frozenset:
    """Metadata commits that landed; partial metadata of runs that died is removed.

    The tracks of those runs have their rows listed again by this run, from
    their completion records.
    """
    committed = frozenset(marker_commit(marker) for marker in storage.find(*layout.commit_markers()))
    orphans = [path for path in storage.find(layout.metadata_folder(), "run-*")
               if commit_of(path) not in (None, *committed)]
    if orphans:
        log.warning("removing %d metadata file(s) of runs that did not finish; their rows are listed again",
                    len(orphans))
        storage.delete_files(orphans)
    return committed


def new_run_id() -> str:
    """A run's name: when it started (UTC), and a few random letters for runs started together."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def normalize_locations(options: BeamsplitterOptions) -> None:
    """Every location the user gave in ``normalize``'s one form, in place (the pipeline's options too)."""
    for name in ("manifest", "output", "input", "checkpoint"):
        value = getattr(options, name)
        if value:
            kept = "/" if name == "input" and value.endswith("/") else ""  # a glob's final / is part of it
            setattr(options, name, normalize(value).rstrip("/") + kept if value.rstrip("/") else value)


def resolve_run(options: BeamsplitterOptions, settle: bool = True) -> RunSettings:
    normalize_locations(options)
    options.check()
    for uri in (options.manifest, options.input, options.output, options.checkpoint):
        if uri:
            storage.check_reachable(uri)
    config = load_config(options.model)
    sha = checkpoint_digest(resolve_checkpoint(config, options.checkpoint))
    if options.manifest:
        manifest.manifest_format(options.manifest)  # an unknown format fails here, not on a worker
        if not storage.exists(options.manifest):
            raise manifest.InputError(f"{options.manifest}: no such manifest")
    run_id = options.run_id or new_run_id()
    layout = Layout(options.output, model_folder(config.name, sha))
    settings = RunSettings(options, layout, f"{config.name}@sha256:{sha}", sha, run_id)
    return settle_prefix(settings) if settle else settings


def settle_prefix(settings: RunSettings) -> RunSettings:
    """Write the model's card, and settle what earlier runs left (see ``settle_earlier_runs``).

    Writes under the prefix: a run does this holding the model folder's lease.
    """
    layout, config = settings.layout, load_config(settings.options.model)
    if not storage.exists(layout.model_card()):
        card = {"model": config.name, "checkpoint_sha256": settings.checkpoint_sha256, "config": config.raw}
        storage.publish_bytes(json.dumps(card, indent=1).encode(), layout.model_card())
    return dataclasses.replace(settings, landed_commits=settle_earlier_runs(layout))


def build(pipeline: beam.Pipeline, settings: RunSettings, wave: Wave | None = None) -> str:
    """The job's steps: over the whole catalogue, or over one local ``wave`` (see pipeline/waves.py).

    Returns the metadata commit that the pipeline writes.

    How work spreads over workers follows ``--fan_out`` (see
    ``BeamsplitterOptions.fan_out_mode``): whole tracks, or model chunks
    separated wherever the inference step runs, parked in scratch storage
    on their way there and back. Either way only references cross a shuffle.
    """
    o, layout = settings.options, settings.layout
    fan_out = o.fan_out_mode(is_local(pipeline.options))
    commit = commit_name(settings.run_id, wave.number if wave else None)
    # With chunk fan-out, chunks wait in scratch storage and only references cross shuffles.
    scratch = Scratch(layout, settings.run_id) if fan_out == "chunks" else None
    handler = SpleeterModelHandler(o.model, o.checkpoint, o.inference_batch_size, settings.checkpoint_sha256,
                                   o.shared_model_copies(), scratch)
    hints = {"accelerator": o.inference_accelerator} if o.inference_accelerator else {}
    encoding = o.encode_options()

    if wave is None:  # the whole catalogue, read and checked by the workers
        tracks, row_failures = pipeline | "ReadCatalogue" >> ReadCatalogue(o.manifest, o.input, o.manifest_limits())
        todo = tracks | "SkipDone" >> SkipDone(layout, encoding, o.force, settings.landed_commits)
        todo_tracks, recovered, failures = todo.todo, todo.recovered, [row_failures, todo.failures]
    else:  # the driver read and checked the catalogue: this wave's share of it
        todo_tracks = pipeline | "WaveTracks" >> beam.Create(wave.todo)
        recovered = pipeline | "WaveRecovered" >> beam.Create(wave.recovered)
        failures = [pipeline | "WaveFailures" >> beam.Create(wave.failures)]
    if fan_out == "tracks":  # each worker separates whole tracks: only references are shuffled
        todo_tracks = todo_tracks | "SpreadTracks" >> beam.Reshuffle()
    decoded = todo_tracks | "DecodeChunks" >> DecodeChunks(o.model, scratch, o.stall_timeout)
    chunks = decoded.chunks
    if scratch:  # chunks go wherever inference runs
        chunks = chunks | "SpreadChunks" >> beam.Reshuffle()
    separated = chunks | "SeparateChunks" >> SeparateChunks(handler, hints, Stash(scratch) if scratch else None)
    assembled = separated | "ReassembleTracks" >> ReassembleTracks(layout, o.model, settings.model_id, encoding,
                                                                  settings.run_id, commit, scratch, o.stall_timeout)
    _ = ((assembled.metadata, recovered)
         | "AllMetadata" >> beam.Flatten()
         | "CountRows" >> beam.Map(_count, "metadata_rows")
         | "WriteMetadata" >> WriteParquet(layout.metadata(commit), METADATA_SCHEMA)
         | "CommitMetadata" >> CommitMarker(layout.commit_marker(commit)))
    _ = ((*failures, decoded.failures, assembled.failures)
         | "AllFailures" >> beam.Flatten()
         | "CountFailures" >> beam.Map(_count_failure)
         | "FailureRows" >> beam.Map(failure_row, settings.run_id)
         | "WriteFailures" >> WriteParquet(layout.failures(commit), FAILURE_SCHEMA))
    return commit


def _count(element, name):
    beam.metrics.Metrics.counter("beamsplitter", name).inc()
    return element


def _count_failure(failure):
    return _count(failure, f"tracks_failed.{failure.stage}")


class _QuietBeamNoise(logging.Filter):
    """Beam 2.77's RunInference warns once per batch when torch is absent (it only wants its memory probe)."""

    def filter(self, record):
        return "Resource module is not available" not in record.getMessage()


def _quiet_local_workers() -> None:
    """The local runner's worker processes (--direct_running_mode=multi_processing) send their logs
    through this process: Beam's own warnings at every worker start, and gRPC's fork notices. Their
    errors still show; --verbose shows all."""
    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(logging.ERROR)
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def catalogue_size(options: BeamsplitterOptions) -> int:
    """Rows of the manifest, or files matching the glob; reading the manifest here also
    refuses one without the required columns before anything starts."""
    if options.input:
        return len(input_files(options.input))
    with FileSystems.open(options.manifest, compression_type="uncompressed") as stream:
        return sum(1 for _ in manifest.read_rows(stream, manifest.manifest_format(options.manifest), options.manifest,
                                                 limits=options.manifest_limits()))


def run(argv: list[str], started: float | None = None) -> RunResult:
    """``beamsplitter run``: the catalogue job its command-line arguments ``argv`` describe (see ``run_job``)."""
    started = time.monotonic() if started is None else started
    return run_job(PipelineOptions(job_args(argv, "run")), started)


def run_job(pipeline_options: PipelineOptions, started: float | None = None) -> RunResult:
    """Run the catalogue job, printing its progress and summary; returns what became of it.

    ``started``: the ``time.monotonic()`` at which the command started (the
    CLI's first line); the summary's wall time counts from it, start-up
    (imports, loading and checking the model, reading the catalogue) included.

    The local runner reports progress only when a pipeline ends, so a local
    run goes in waves of ``--local_wave_tracks`` tracks to separate, one
    pipeline each, each committing its own metadata (pipeline/waves.py);
    distributed runners take the catalogue in one go.
    """
    started = time.monotonic() if started is None else started
    logging.getLogger().addFilter(_QuietBeamNoise())
    _quiet_local_workers()
    options = pipeline_options.view_as(BeamsplitterOptions)
    local = pin_local_runner(pipeline_options)
    FileSystems.set_options(pipeline_options)  # the driver's own reads: s3 endpoint, credentials...
    settings = resolve_run(options, settle=False)
    # The lease first: a second run on this output stops at once, not after reading the catalogue.
    with Lease(settings.layout.lease(), settings.run_id) as lease:
        # The local runner reads the catalogue here, once for all its waves. Distributed runners read it
        # in their pipeline; reading it here as well refuses an unusable manifest before anything starts.
        limits = options.manifest_limits()
        with CatalogueIndex.build(options.manifest, options.input, limits) if local else contextlib.nullcontext() as index:
            size = index.rows if local else catalogue_size(options)
            return _run_waves(settle_prefix(settings), pipeline_options, size, index, started, lease)


def _run_waves(settings: RunSettings, pipeline_options: PipelineOptions, size: int, index: CatalogueIndex | None,
               started: float, lease: Lease) -> RunResult:
    options, local = settings.options, index is not None
    parts = waves(index, settings.layout, options.encode_options(), options.force,
                  settings.landed_commits, options.local_wave_tracks) if local else [None]
    print(f"run {settings.run_id}: {settings.model_id}, stems under {settings.layout.track_dir('').rstrip('/')}/")
    totals: dict[str, int] = {}
    commits = []
    with tqdm(total=size, unit="track", desc="catalogue", disable=None if local else True,
              file=sys.stderr) as progress:
        for wave in parts:
            lease.check()
            found = {}
            if wave is None or wave.needs_pipeline():  # a wave of done tracks only has nothing to run
                pipeline = beam.Pipeline(options=pipeline_options)
                commits.append(build(pipeline, settings, wave))
                result = pipeline.run()
                result.wait_until_finish()
                found = counters(result)
            if wave is not None:  # the driver skipped its done tracks
                found["tracks_skipped"] = found.get("tracks_skipped", 0) + wave.skipped
            for name, value in found.items():
                totals[name] = totals.get(name, 0) + value
            progress.update(wave.rows if wave else sum(
                v for k, v in found.items() if k in ("tracks_done", "tracks_skipped") or k.startswith("tracks_failed.")))
    # What --fan_out=chunks left of tracks that never completed (their chunks are removed as tracks finish).
    storage.delete_tree_up_to(settings.layout.scratch(settings.run_id), options.output)
    summary = Summary.of(totals, time.monotonic() - started)
    print(summary.text(settings))
    return RunResult(settings, summary, frozenset(commits))


def counters(result) -> dict[str, int]:
    """The job's counters by name, summed over steps (committed values where the runner has them)."""
    found: dict[str, int] = {}
    for entry in result.metrics().query(MetricsFilter().with_namespace("beamsplitter"))["counters"]:
        value = entry.committed if entry.committed is not None else entry.attempted
        found[entry.key.metric.name] = found.get(entry.key.metric.name, 0) + (value or 0)
    return found


@dataclass
class Summary:
    done: int
    skipped: int
    failed: int
    failed_by_stage: dict
    audio_seconds: float
    wall_seconds: float
    metadata_rows: int

    @classmethod
    def of(cls, found: dict[str, int], wall_seconds: float) -> "Summary":
        by_stage = {k.split(".", 1)[1]: v for k, v in found.items() if k.startswith("tracks_failed.")}
        return cls(found.get("tracks_done", 0), found.get("tracks_skipped", 0), sum(by_stage.values()),
                   by_stage, float(found.get("audio_seconds", 0)), wall_seconds, found.get("metadata_rows", 0))

    def text(self, settings: RunSettings) -> str:
        reasons = ", ".join(f"{stage}: {n}" for stage, n in sorted(self.failed_by_stage.items()))
        speed = self.audio_seconds / self.wall_seconds if self.wall_seconds else 0.0
        lines = [
            f"run {settings.run_id}: {self.done} tracks done, {self.skipped} skipped, {self.failed} failed"
            + (f" ({reasons})" if reasons else ""),
            f"{self.audio_seconds / 3600:.3f} h of audio in {self.wall_seconds:.1f} s: {speed:.1f}x realtime"
            if self.done else f"nothing to separate ({self.wall_seconds:.1f} s)",
        ]
        if self.metadata_rows:
            lines.append(f"metadata: {settings.layout.metadata(settings.run_id)}*.parquet")
        if self.failed:
            lines.append(f"failures: {settings.layout.failures(settings.run_id)}*.parquet")
        return "\n".join(lines)


@dataclass(frozen=True)
class RunResult:
    """A finished run: what it settled, what became of its catalogue, and the metadata commits it wrote."""

    settings: RunSettings
    summary: Summary
    commits: frozenset

    @property
    def exit_status(self) -> int:
        """1 when any track or row failed, else 0."""
        return 1 if self.summary.failed else 0

    def failures(self) -> list[Failure]:
        """Every track and row the run reported failed, read from its failure tables when asked:
        the pipelines' workers hand them on in no other way, and a catalogue can fail by the million."""
        if not self.summary.failed:
            return []
        folder, name = self.settings.layout.failures(self.settings.run_id).rsplit("/", 1)
        found = []
        for path in storage.find(folder, storage.literal_glob(name) + "*.parquet"):
            if commit_of(path) in self.commits:
                rows = pq.read_table(io.BytesIO(storage.read_bytes(path))).to_pylist()
                found.extend(failure_of(row) for row in rows)
        return found
