"""The catalogue job: assemble the pipeline from its named steps, run it, summarise it."""

from __future__ import annotations

import datetime
import logging
import time
import uuid
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from models.checkpoint import checkpoint_digest
from models.config import load_config
from models.engine import EncodeOptions
from models.provider import resolve_checkpoint
from pipeline.options import BeamsplitterOptions, pin_local_runner
from transforms import manifest, storage
from transforms.decode import DecodeChunks
from transforms.inference import SeparateChunks, SpleeterModelHandler
from transforms.layout import Layout, model_folder
from transforms.read import ReadCatalogue
from transforms.reassemble import ReassembleTracks
from transforms.skip import SkipDone
from transforms.write import FAILURE_SCHEMA, METADATA_SCHEMA, WriteParquet, failure_record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPlan:
    """What the driver settles before any worker starts."""

    options: BeamsplitterOptions
    layout: Layout
    model_id: str
    checkpoint_sha256: str
    run_id: str


def plan_run(options: BeamsplitterOptions) -> RunPlan:
    options.check()
    config = load_config(options.model)
    sha = checkpoint_digest(resolve_checkpoint(config, options.checkpoint))
    if options.manifest:
        manifest.manifest_format(options.manifest)  # an unknown format fails here, not on a worker
        if not storage.exists(options.manifest):
            raise manifest.InputError(f"{options.manifest}: no such manifest")
    run_id = options.run_id or (datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
                                + "-" + uuid.uuid4().hex[:6])
    return RunPlan(options, Layout(options.output, model_folder(config.name, sha)),
                   f"{config.name}@sha256:{sha}", sha, run_id)


def build(pipeline: beam.Pipeline, plan: RunPlan) -> None:
    o, layout = plan.options, plan.layout
    handler = SpleeterModelHandler(o.model, o.checkpoint, o.inference_batch_size, plan.checkpoint_sha256)
    hints = {"accelerator": o.inference_accelerator} if o.inference_accelerator else {}
    encoding = EncodeOptions(o.codec, o.bitrate, o.sample_format)

    tracks, row_failures = pipeline | "ReadCatalogue" >> ReadCatalogue(o.manifest, o.input)
    todo = tracks | "SkipDone" >> SkipDone(layout, o.force)
    decoded = todo.todo | "DecodeChunks" >> DecodeChunks(o.model)
    separated = (decoded.chunks
                 | "FanOut" >> beam.Reshuffle()
                 | "SeparateChunks" >> SeparateChunks(handler, hints))
    assembled = separated | "ReassembleTracks" >> ReassembleTracks(layout, o.model, plan.model_id, encoding,
                                                                  plan.run_id)
    _ = assembled.metadata | "WriteMetadata" >> WriteParquet(layout.metadata(plan.run_id), METADATA_SCHEMA)
    _ = ((row_failures, todo.failures, decoded.failures, assembled.failures)
         | "AllFailures" >> beam.Flatten()
         | "CountFailures" >> beam.Map(_count_failure)
         | "FailureRows" >> beam.Map(failure_record, plan.run_id)
         | "WriteFailures" >> WriteParquet(layout.failures(plan.run_id), FAILURE_SCHEMA))


def _count_failure(failure):
    beam.metrics.Metrics.counter("beamsplitter", f"tracks_failed.{failure.stage}").inc()
    return failure


def run(argv: list[str]) -> int:
    """Run the catalogue job; returns the exit status (1 when any track failed)."""
    pipeline_options = PipelineOptions(argv)
    options = pipeline_options.view_as(BeamsplitterOptions)
    pin_local_runner(pipeline_options, argv)
    plan = plan_run(options)
    started = time.monotonic()
    print(f"run {plan.run_id}: {plan.model_id}, stems under {plan.layout.track_dir('').rstrip('/')}/")
    pipeline = beam.Pipeline(options=pipeline_options)
    build(pipeline, plan)
    result = pipeline.run()
    result.wait_until_finish()
    summary = Summary.of(result, time.monotonic() - started)
    print(summary.text(plan))
    return 1 if summary.failed else 0


@dataclass
class Summary:
    done: int
    skipped: int
    failed: int
    failed_by_stage: dict
    audio_seconds: float
    wall_seconds: float

    @classmethod
    def of(cls, result, wall_seconds: float) -> "Summary":
        counters = {}
        for entry in result.metrics().query(MetricsFilter().with_namespace("beamsplitter"))["counters"]:
            value = entry.committed if entry.committed is not None else entry.attempted
            counters[entry.key.metric.name] = counters.get(entry.key.metric.name, 0) + (value or 0)
        by_stage = {k.split(".", 1)[1]: v for k, v in counters.items() if k.startswith("tracks_failed.")}
        return cls(counters.get("tracks_done", 0), counters.get("tracks_skipped", 0), sum(by_stage.values()),
                   by_stage, float(counters.get("audio_seconds", 0)), wall_seconds)

    def text(self, plan: RunPlan) -> str:
        reasons = ", ".join(f"{stage}: {n}" for stage, n in sorted(self.failed_by_stage.items()))
        speed = self.audio_seconds / self.wall_seconds if self.wall_seconds else 0.0
        lines = [
            f"run {plan.run_id}: {self.done} tracks done, {self.skipped} skipped, {self.failed} failed"
            + (f" ({reasons})" if reasons else ""),
            f"{self.audio_seconds / 3600:.3f} h of audio in {self.wall_seconds:.1f} s: {speed:.1f}x realtime",
        ]
        if self.done:
            lines.append(f"metadata: {plan.layout.metadata(plan.run_id)}-*.parquet")
        if self.failed:
            lines.append(f"failures: {plan.layout.failures(plan.run_id)}-*.parquet")
        return "\n".join(lines)
