"""The catalogue job: assemble the pipeline from its named steps, run it, summarise it."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import io
import json
import logging
import os
import re
import sys
import time
import uuid
from dataclasses import dataclass

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions
from tqdm import tqdm

from models.checkpoint import checkpoint_digest
from models.config import load_config
from models.errors import BeamsplitterError, InputError
from models.precision import DEFAULT_PRECISION, model_id
from models.provider import resolve_checkpoint
from models.uris import normalize
from pipeline import arguments, tensorflow_quietly
from pipeline.options import BeamsplitterOptions, is_local, job_args, pin_local_runner
from pipeline.waves import Wave, waves
from transforms.catalogue import manifest, storage
from transforms.catalogue.index import CatalogueIndex, input_files
from transforms.catalogue.layout import Layout, commit_name, commit_of, is_commit_of, marker_commit, model_folder
from transforms.catalogue.lease import Lease, live_holder
from transforms.catalogue.manifest import Failure
from transforms.decode import DecodeChunks
from transforms.inference import SeparateChunks
from transforms.job import FanOut, JobSettings
from transforms.read import ReadCatalogue
from transforms.reassemble import ReassembleTracks
from transforms.skip import RecoverRows, SkipDone
from transforms.write import (COMMITS_REFUSED, FAILURE_SCHEMA, METADATA_SCHEMA, TEMP_PREFIX, CommitMarker, WriteParquet,
                              failure_of,
                              failure_row)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSettings:
    """What the driver settles before any worker starts: the job's settings, which its steps get, and the
    options, of which the driver alone reads the rest (the catalogue, waves, the failed fraction)."""

    options: BeamsplitterOptions
    job: JobSettings

    def holding(self, lease_token: str) -> "RunSettings":
        """These settings for a run that holds the lease ``lease_token``."""
        return dataclasses.replace(self, job=dataclasses.replace(self.job, lease_token=lease_token))


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


def refuse_used_run_id(layout: Layout, run_id: str) -> None:
    """An InputError naming what is there when run ``run_id`` already wrote under the prefix.

    A run id names one run: another run under it would replace that run's
    metadata and failure files, and tracks whose records name its commits,
    marked landed, would never have their rows listed again.
    """
    for what, folder, pattern in layout.run_traces(run_id):
        for path in storage.find(folder, pattern):
            commit = marker_commit(path) if what == "commit marker" else commit_of(path)
            if commit is not None and is_commit_of(commit, run_id):
                raise InputError(f"--run_id {run_id}: this run id was used before under {layout.prefix} ({what} "
                                 f"{path}); give another, or leave --run_id out for a new one")


def remove_dead_runs_temp(layout: Layout, run_id: str) -> None:
    """Remove the temporary folders of metadata and failure files (``.temp-run-<commit>/``, see
    transforms/write.py) that runs which died left: those of every run but this one and the runs that
    hold a live lease on the prefix (failures/ is shared by the runs of every model, and a run of another
    model may be writing there now)."""
    live = {run_id}
    stems, _, lease_name = layout.lease().rsplit("/", 2)
    for uri in storage.find(stems, f"*/{lease_name}"):
        holder = live_holder(uri)
        if holder == "":  # a live lease of an earlier version, its run unknown: leave every folder for now
            return
        live.add(holder)
    temp = f"{TEMP_PREFIX}run-"
    found = set()  # (folder, temporary folder's name)
    for folder in (layout.metadata_folder(), layout.failures(run_id).rsplit("/", 1)[0]):
        found.update((folder, path[len(folder) + 1:].split("/", 1)[0]) for path in storage.find(folder, f"{temp}*/**"))
        if storage.is_local(folder) and os.path.isdir(folder):  # locally a folder can be there with no file in it
            found.update((folder, entry.name) for entry in os.scandir(folder)
                         if entry.is_dir() and entry.name.startswith(temp))
    # A commit is the run id, or on the local runner the run id and its wave (``commit_name``).
    dead = sorted(storage.join(folder, name) for folder, name in found
                  if re.sub(r"-w\d{4}$", "", name[len(temp):]) not in live)
    if dead:
        log.warning("removing %d temporary folder(s) of metadata or failures of runs that did not finish",
                    len(dead))
        for folder in dead:
            storage.delete_tree(folder)


def new_run_id() -> str:
    """A run's name: when it started (UTC), and a few random letters for runs started together."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def normalize_locations(options: BeamsplitterOptions) -> None:
    """Every location the user gave in ``normalize``'s one form, in place (the pipeline's options too)."""
    for name in ("manifest", "output", "input", "checkpoint", "scratch_location"):
        value = getattr(options, name)
        if value:
            kept = "/" if name == "input" and value.endswith("/") else ""  # a glob's final / is part of it
            setattr(options, name, normalize(value).rstrip("/") + kept if value.rstrip("/") else value)


def resolve_run(options: BeamsplitterOptions, settle: bool = True) -> RunSettings:
    normalize_locations(options)
    options.check()
    for uri in (options.manifest, options.input, options.output, options.checkpoint, options.scratch_location):
        if uri:
            storage.check_reachable(uri)
    config = load_config(options.model)
    sha = checkpoint_digest(resolve_checkpoint(config, options.checkpoint))
    if options.manifest:
        manifest.manifest_format(options.manifest)  # an unknown format fails here, not on a worker
        if not storage.exists(options.manifest):
            raise manifest.InputError(f"{options.manifest}: no such manifest")
    job = JobSettings(
        model=options.model, checkpoint=options.checkpoint, checkpoint_sha256=sha, precision=options.precision,
        model_id=model_id(config.name, sha, options.precision),
        layout=Layout(options.output, model_folder(config.name, sha, options.precision), options.scratch_location),
        run_id=options.run_id or new_run_id(), encoding=arguments.encode_options(options), io=arguments.io_limits(options),
        selection=arguments.stem_selection(options), fan_out=options.fan_out_mode(is_local(options)),
        batch_size=options.inference_batch_size, accelerator=options.inference_accelerator,
        model_copies=options.shared_model_copies(), force=options.force)
    settings = RunSettings(options, job)
    return settle_prefix(settings) if settle else settings


def settle_prefix(settings: RunSettings) -> RunSettings:
    """Write the model's card, and settle what earlier runs left (see ``settle_earlier_runs``).

    Writes under the prefix: a run does this holding the model folder's lease.
    A run id used before under the prefix is refused first (``refuse_used_run_id``).
    """
    job = settings.job
    layout, config = job.layout, job.config
    refuse_used_run_id(layout, job.run_id)
    if not storage.exists(layout.model_card()):
        card = {"model": config.name, "checkpoint_sha256": job.checkpoint_sha256, "config": config.raw}
        if job.precision != DEFAULT_PRECISION:  # fp32's card as it always was
            card["precision"] = job.precision
        storage.publish_bytes(json.dumps(card, indent=1).encode(), layout.model_card())
    remove_dead_runs_temp(layout, job.run_id)
    return dataclasses.replace(settings, job=dataclasses.replace(job, landed_commits=settle_earlier_runs(layout)))


def build(pipeline: beam.Pipeline, settings: RunSettings, wave: Wave | None = None) -> str:
    """The job's steps: over the whole catalogue, or over one local ``wave`` (see pipeline/waves.py).

    Returns the metadata commit that the pipeline writes.

    How work spreads over workers follows the job's ``fan_out``: whole
    tracks, or model chunks separated wherever the inference step runs,
    parked in scratch storage on their way there and back. Either way only
    references cross a shuffle.
    """
    o, job, layout = settings.options, settings.job, settings.job.layout
    commit = commit_name(job.run_id, wave.number if wave else None)
    # In order (fan-out tracks or none) the model's step is the whole track's: decoding and writing
    # carry the accelerator hint too, so that all three stay fused on the accelerator's machines.
    track_hints = {"accelerator": job.accelerator} if job.accelerator and job.fan_out is not FanOut.CHUNKS else {}

    if wave is None:  # the whole catalogue, read and checked by the workers
        tracks, row_failures = pipeline | "ReadCatalogue" >> ReadCatalogue(o.manifest, o.input, o.manifest_limits())
        todo = tracks | "SkipDone" >> SkipDone(job)
        todo_tracks, unlanded, failures = todo.todo, todo.recovered, [row_failures, todo.failures]
    else:  # the driver read and checked the catalogue: this wave's share of it
        todo_tracks = pipeline | "WaveTracks" >> beam.Create(wave.todo)
        unlanded = pipeline | "WaveRecovered" >> beam.Create(wave.recovered)
        failures = [pipeline | "WaveFailures" >> beam.Create(wave.failures)]
    recovered = unlanded | "RecoverRows" >> RecoverRows(layout, commit)
    if job.fan_out is FanOut.TRACKS:  # each worker separates whole tracks: only references are shuffled
        todo_tracks = todo_tracks | "SpreadTracks" >> beam.Reshuffle()
    decoded = todo_tracks | "DecodeChunks" >> DecodeChunks(job).with_resource_hints(**track_hints)
    chunks = decoded.chunks
    if job.fan_out is FanOut.CHUNKS:  # chunks go wherever inference runs
        chunks = chunks | "SpreadChunks" >> beam.Reshuffle()
    separated = chunks | "SeparateChunks" >> SeparateChunks(job)
    assembled = separated | "ReassembleTracks" >> ReassembleTracks(job, commit).with_resource_hints(**track_hints)
    committed = ((assembled.metadata, recovered)
                 | "AllMetadata" >> beam.Flatten()
                 | "CountRows" >> beam.Map(_count, "metadata_rows")
                 | "WriteMetadata" >> WriteParquet(layout.metadata(commit), METADATA_SCHEMA)
                 | "CommitMetadata" >> CommitMarker(
                     layout.commit_marker(commit),
                     (layout.lease(), job.lease_token) if job.lease_token else None))
    all_failures = (*failures, decoded.failures, assembled.failures) | "AllFailures" >> beam.Flatten()
    failures_written = (all_failures
                        | "CountFailures" >> beam.Map(_count_failure)
                        | "FailureRows" >> beam.Map(failure_row, job.run_id)
                        | "WriteFailures" >> WriteParquet(layout.failures(commit), FAILURE_SCHEMA))
    if wave is None and o.max_failed_fraction < 1:
        # A job the runner reports as failed, where no one reads the launcher's exit status (templates,
        # schedulers); once the metadata and failure tables are in place, so that they land all the same.
        # Tried: the tracks to separate and the rows that failed before separation, each counted apart
        # (Flink's job server loses a PCollection that feeds two Flattens).
        def count(name, tracks):
            return beam.pvalue.AsSingleton(tracks | name >> beam.combiners.Count.Globally())

        _ = (pipeline
             | "FailedFraction" >> beam.Create([None])
             | "CheckFailedFraction" >> beam.Map(
                 _check_failed_fraction, o.max_failed_fraction, layout.verdict(commit),
                 beam.pvalue.AsList(committed), beam.pvalue.AsList(failures_written),
                 count("CountFailed", all_failures), count("CountToSeparate", todo_tracks),
                 count("CountRowFailures", row_failures), count("CountSkipFailures", todo.failures)))
    return commit


class TooManyFailures(BeamsplitterError):
    """More of a run's tracks failed than ``--max_failed_fraction`` allows."""

    stage = "run"


def failed_fraction_exceeded(failed: int, tried: int, limit: float) -> bool:
    """Whether ``failed`` of the ``tried`` tracks (done or failed; skipped ones are not tried) is over ``limit``."""
    return tried > 0 and failed / tried > limit


class JobFailed(BeamsplitterError):
    """The runner failed the job (a lost worker, a step that kept failing): not a track's failure."""

    stage = "run"
    exit_status = 4


def _check_failed_fraction(_, limit: float, verdict: str, _metadata, _failures, failed: int, *tried_parts: int) -> None:
    tried = sum(tried_parts)
    if failed_fraction_exceeded(failed, tried, limit):
        # The job's error reaches the launcher without its message on some runners: the counts go beside it.
        storage.publish_bytes(json.dumps({"failed": failed, "tried": tried}).encode(), verdict)
        raise TooManyFailures(f"{failed} of {tried} tracks failed, more than --max_failed_fraction {limit:g}; "
                              "see the failures table")


# What the runner lost, by what its error says. Flink's job server passes on only the root cause of a
# failed job; these are the causes the fault runs on a local Flink cluster gave (docs/flink.md):
# a job with no slot (TimeoutException from Flink's slot request check), a TaskManager killed,
# an SDK worker process killed (with a restart strategy, the restarts that found it dead).
RUNNER_FAILURES = (
    (re.compile(r"NoResourceAvailableException|Timeout has occurred: \d+ ms"),
     "no free task slot on the Flink cluster (is its TaskManager running?)"),
    (re.compile(r"TaskManager with id \S+ is no longer reachable|Heartbeat of TaskManager with id \S+ timed out"),
     "the Flink TaskManager was lost"),
    (re.compile(r"CANCELLED: (client|call already) cancelled|Multiplexer hanging up|SDK harness closed connection"),
     "an SDK worker process died"),
)


def runner_loss(cause: str) -> str | None:
    """What the root cause of a job the runner failed says was lost (``RUNNER_FAILURES``); None: it does not say."""
    return next((meaning for pattern, meaning in RUNNER_FAILURES if pattern.search(cause)), None)


def _run_pipeline(pipeline: beam.Pipeline, settings: RunSettings, commit: str) -> dict[str, int]:
    """Run one pipeline to its end; its counters. A job the runner failed raises ``JobFailed``, or, when
    it was failed on purpose over ``--max_failed_fraction``, gives that run's counts."""
    try:
        result = pipeline.run()
        result.wait_until_finish()
    except Exception as exc:
        verdict = storage.read_json(settings.job.layout.verdict(commit))
        if verdict:
            return {"tracks_done": verdict["tried"] - verdict["failed"], "tracks_failed.run": verdict["failed"]}
        cause = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        cause = re.sub(r"^Pipeline \S+ failed in state \w+: ", "", cause)
        lost = runner_loss(cause)
        raise JobFailed(f"run {settings.job.run_id}: the runner failed the job{f': {lost}' if lost else ''} "
                        f"({cause[:500]}); what it wrote stays, and the next run completes the tracks not done") from exc
    return counters(result)


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
    # The model runs in this process on the local runner and with LOOPBACK SDK workers (also the default
    # of Flink's embedded master); a runner that starts its own SDK workers leaves the launcher without it.
    if local or pipeline_options.view_as(PortableOptions).environment_type in (None, "LOOPBACK"):
        tensorflow_quietly.load()
    # The lease first: a second run on this output stops at once, not after reading the catalogue.
    with Lease(settings.job.layout.lease(), settings.job.run_id) as lease:
        # The local runner reads the catalogue here, once for all its waves. Distributed runners read it
        # in their pipeline; reading it here as well refuses an unusable manifest before anything starts.
        limits = options.manifest_limits()
        with CatalogueIndex.build(options.manifest, options.input, limits) if local else contextlib.nullcontext() as index:
            size = index.rows if local else catalogue_size(options)
            return _run_waves(settle_prefix(settings.holding(lease.token)), pipeline_options, size, index, started,
                              lease)


def _run_waves(settings: RunSettings, pipeline_options: PipelineOptions, size: int, index: CatalogueIndex | None,
               started: float, lease: Lease) -> RunResult:
    options, local = settings.options, index is not None
    parts = waves(index, settings.job, options.local_wave_tracks) if local else [None]
    print(f"run {settings.job.run_id}: {settings.job.model_id}, stems under {settings.job.layout.track_dir('').rstrip('/')}/")
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
                found = _run_pipeline(pipeline, settings, commits[-1])
                if found.get(COMMITS_REFUSED):  # its workers found the lease lost: that commit did not land
                    lease.refused(commits[-1])
            if wave is not None:  # the driver skipped its done tracks
                found["tracks_skipped"] = found.get("tracks_skipped", 0) + wave.skipped
            for name, value in found.items():
                totals[name] = totals.get(name, 0) + value
            progress.update(wave.rows if wave else sum(
                v for k, v in found.items() if k in ("tracks_done", "tracks_skipped") or k.startswith("tracks_failed.")))
    # What --fan_out=chunks left of tracks that never completed (their chunks are removed as tracks finish).
    storage.delete_tree_up_to(settings.job.layout.scratch(settings.job.run_id),
                              settings.job.layout.scratch_location or options.output)
    summary = Summary.of(totals, time.monotonic() - started)
    summary.publish(settings, commits)
    print(summary.text(settings))
    return RunResult(settings, summary, frozenset(commits))


def counters(result) -> dict[str, int]:
    """The job's counters by name, summed over steps and over every report of a step.

    A portable runner may report one step's counter several times: Flink's job server
    reports it once per fused stage the step runs in (a step after a Flatten runs in each
    stage that feeds the Flatten). Beam's portable results keep one report per step and
    drop the others (``portable_metrics.from_monitoring_infos``), which counted one of two
    failed tracks; so the job's reports are read and summed here.
    """
    reports = _portable_counter_reports(result)
    if reports is None:
        reports = [(entry.key.metric.name, entry.committed if entry.committed is not None else entry.attempted)
                   for entry in result.metrics().query(MetricsFilter().with_namespace("beamsplitter"))["counters"]]
    found: dict[str, int] = {}
    for name, value in reports:
        found[name] = found.get(name, 0) + (value or 0)
    return found


def _portable_counter_reports(result) -> list[tuple[str, int]] | None:
    """(name, value) of each report of a beamsplitter counter by a portable runner's job service (the
    committed ones where it has them); None for other runners."""
    service, job_id = getattr(result, "_job_service", None), getattr(result, "_job_id", None)
    if service is None or job_id is None:
        return None
    from apache_beam.metrics import monitoring_infos
    from apache_beam.portability.api import beam_job_api_pb2

    metrics = service.GetJobMetrics(beam_job_api_pb2.GetJobMetricsRequest(job_id=job_id)).metrics
    reports = []
    for info in metrics.committed or metrics.attempted:
        if not (monitoring_infos.is_user_monitoring_info(info) and monitoring_infos.is_counter(info)):
            continue
        namespace, name = monitoring_infos.parse_namespace_and_name(info)
        if namespace == "beamsplitter":
            reports.append((name, monitoring_infos.extract_metric_result_map_value(info)))
    return reports


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

    def publish(self, settings: RunSettings, commits: list[str]) -> None:
        """Keep the figures beside the run's commit markers: the pipeline's counters, which alone know the
        skipped tracks, the audio seconds and the wall time, go with the job."""
        figures = dict(dataclasses.asdict(self), run_id=settings.job.run_id, model=settings.job.model_id, commits=commits,
                       finished_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        storage.publish_bytes(json.dumps(figures, indent=1).encode(), settings.job.layout.run_summary(settings.job.run_id))

    def text(self, settings: RunSettings) -> str:
        reasons = ", ".join(f"{stage}: {n}" for stage, n in sorted(self.failed_by_stage.items()))
        speed = self.audio_seconds / self.wall_seconds if self.wall_seconds else 0.0
        lines = [
            f"run {settings.job.run_id}: {self.done} tracks done, {self.skipped} skipped, {self.failed} failed"
            + (f" ({reasons})" if reasons else ""),
            f"{self.audio_seconds / 3600:.3f} h of audio in {self.wall_seconds:.1f} s: {speed:.1f}x realtime"
            if self.done else f"nothing to separate ({self.wall_seconds:.1f} s)",
        ]
        if self.metadata_rows:
            lines.append(f"metadata: {settings.job.layout.metadata(settings.job.run_id)}*.parquet")
        if self.failed:
            lines.append(f"failures: {settings.job.layout.failures(settings.job.run_id)}*.parquet")
        limit = settings.options.max_failed_fraction
        if failed_fraction_exceeded(self.failed, self.done + self.failed, limit):
            lines.append(f"error: {self.failed} of {self.done + self.failed} tracks tried failed, more than "
                         f"--max_failed_fraction {limit:g}")
        return "\n".join(lines)


@dataclass(frozen=True)
class RunResult:
    """A finished run: what it settled, what became of its catalogue, and the metadata commits it wrote."""

    settings: RunSettings
    summary: Summary
    commits: frozenset

    @property
    def exit_status(self) -> int:
        """3 when more tracks failed than ``--max_failed_fraction`` allows, 1 when any track or row failed,
        else 0."""
        s = self.summary
        if failed_fraction_exceeded(s.failed, s.done + s.failed, self.settings.options.max_failed_fraction):
            return 3
        return 1 if s.failed else 0

    def failures(self) -> list[Failure]:
        """Every track and row the run reported failed, read from its failure tables when asked:
        the pipelines' workers hand them on in no other way, and a catalogue can fail by the million."""
        if not self.summary.failed:
            return []
        folder, name = self.settings.job.layout.failures(self.settings.job.run_id).rsplit("/", 1)
        found = []
        for path in storage.find(folder, storage.literal_glob(name) + "*.parquet"):
            if commit_of(path) in self.commits:
                rows = pq.read_table(io.BytesIO(storage.read_bytes(path))).to_pylist()
                found.extend(failure_of(row) for row in rows)
        return found
