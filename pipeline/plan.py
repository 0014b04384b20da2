"""`beamsplitter plan`: what a run would do, as a manifest, before doing it.

Scheduled reprocessing runs this first: it reads the catalogue, compares it
with what the model has already written under the output prefix, and writes a
JSON Lines manifest of the tracks a run must separate, each with its reason:

* ``new``: no model has separated this track yet;
* ``changed``: its stems exist but the source changed (URI, size or mtime);
* ``new-model``: another model, checkpoint or precision separated it, this one has not;
* ``new-encoding``: this model separated this source, into stems encoded otherwise (codec,
  bitrate, sample format) than the options ask;
* ``missing-stems``: this model separated this source, encoded so, but not into every stem the
  options ask (``--stems``, ``--two_stems``): a run adds the missing ones;
* ``forced``: up to date, planned because of ``--force``.

The plan is itself a manifest: ``beamsplitter run --manifest PLAN`` does exactly that work.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.options import BeamsplitterOptions, PlanOptions, job_args, pin_local_runner
from pipeline.run import counters, resolve_run
from transforms.catalogue import storage
from transforms.catalogue.index import CatalogueIndex
from transforms.catalogue.layout import Layout
from transforms.catalogue.completion import CompletionRecord
from transforms.catalogue.manifest import Failure, Track
from transforms.job import JobSettings
from transforms.read import ReadCatalogue
from transforms.skip import check
from transforms.threads import ordered_map

REASONS = ("new", "changed", "new-model", "new-encoding", "missing-stems", "forced")


def classify(track: Track, job: JobSettings, other_models: list[str]) -> str | Failure | None:
    """Why a run of ``job`` must separate ``track`` (one of ``REASONS``), None when it is up to date, or
    the ``Failure`` a run would report without decoding it (a corrupt file is only found by decoding it:
    the run does that). The run's own check, ``skip.check``."""
    verdict = check(track, job, listing=False)
    if verdict.failure or verdict.skipped:
        return verdict.failure
    record, fingerprint, encoding, layout = verdict.record, verdict.fingerprint, job.encoding, job.layout
    if record and record.is_done_for(track.uri, fingerprint, encoding, job.selection.names):
        return "forced"
    if record and record.is_encoded_for(track.uri, fingerprint, encoding):
        return "missing-stems"
    if record and record.is_from(track.uri, fingerprint):
        return "new-encoding"
    if record:
        return "changed"
    if any(CompletionRecord.read(Layout(layout.prefix, m).record(track.track_id)) for m in other_models):
        return "new-model"
    return "new"


def plan_line(track: Track, reason: str) -> str:
    return json.dumps({"track_id": track.track_id, "uri": track.uri, "plan_reason": reason, **track.extra})


class _Classify(beam.DoFn):
    def __init__(self, job: JobSettings, other_models: list[str]):
        self.job, self.other_models = job, other_models

    def process(self, track):
        reason = classify(track, self.job, self.other_models)
        Metrics.counter("beamsplitter", _counter(reason)).inc()
        if isinstance(reason, str):
            yield plan_line(track, reason)


def _counter(reason: str | Failure | None) -> str:
    return f"plan.failed.{reason.stage}" if isinstance(reason, Failure) else f"plan.{reason or 'up-to-date'}"


def other_model_folders(layout: Layout) -> list[str]:
    """Model folders under the prefix besides ``layout``'s, from their ``_MODEL.json`` cards.

    A local prefix is read one level deep: a glob of ``stems/*/_MODEL.json``
    walks and stats every track's folder below (Beam lists everything under a
    glob's fixed part), about a minute for a million done tracks. Object
    stores have no folders to stop at: there Beam lists the ``stems/`` prefix.
    """
    stems = storage.join(layout.prefix, "stems")
    if storage.is_local(stems):
        names = os.listdir(stems) if os.path.isdir(stems) else []
        folders = {name for name in names if os.path.isfile(Layout(layout.prefix, name).model_card())}
    else:
        folders = {path.rsplit("/", 2)[-2] for path in storage.find(stems, "*/_MODEL.json")}
    return sorted(folders - {layout.model})


def plan(argv: list[str], started: float | None = None) -> int:
    """Write the plan and print its counts, with the seconds since ``started`` (the command's start,
    ``time.monotonic()``; default: now)."""
    started = time.monotonic() if started is None else started
    pipeline_options = PipelineOptions(job_args(argv, "plan", (BeamsplitterOptions, PlanOptions)))
    local = pin_local_runner(pipeline_options)
    FileSystems.set_options(pipeline_options)
    options = pipeline_options.view_as(BeamsplitterOptions)
    job = resolve_run(options, settle=False).job
    target = pipeline_options.view_as(PlanOptions).plan_output or FileSystems.join(
        options.output, "plans", job.layout.model, f"plan-{job.run_id}.jsonl")
    other_models = other_model_folders(job.layout)
    if local:
        found = _plan_in_driver(options, job, other_models, target)
    else:  # the catalogue is read and classified by the workers
        with beam.Pipeline(options=pipeline_options) as pipeline:
            tracks, failures = pipeline | "ReadCatalogue" >> ReadCatalogue(options.manifest, options.input,
                                                                           options.manifest_limits())
            _ = failures | "CountFailures" >> beam.Map(
                lambda f: Metrics.counter("beamsplitter", f"plan.failed.{f.stage}").inc())
            _ = (tracks
                 | "Classify" >> beam.ParDo(_Classify(job, other_models))
                 | "WritePlan" >> beam.io.WriteToText(target, num_shards=1, shard_name_template=""))
        found = counters(pipeline.result)
    todo = {reason: found.get(f"plan.{reason}", 0) for reason in REASONS}
    failed = {k.rsplit(".", 1)[1]: n for k, n in sorted(found.items()) if k.startswith("plan.failed.")}
    unusable = (f", {sum(failed.values())} would fail ({', '.join(f'{s}: {n}' for s, n in failed.items())})"
                if failed else "")
    print(f"plan for {job.model_id} under {options.output}: {sum(todo.values())} tracks to separate "
          f"({', '.join(f'{n} {r}' for r, n in todo.items())}), {found.get('plan.up-to-date', 0)} up to date"
          f"{unusable} [{time.monotonic() - started:.1f} s]")
    print(f"plan: {target}")
    return 0


def _plan_in_driver(options: BeamsplitterOptions, job: JobSettings, other_models: list[str], target: str) -> dict:
    """The local runner's plan: the catalogue streamed once through its index and classified on a few
    threads, the plan written line by line to a local file and published whole.

    A Beam pipeline on the local runner holds every element in memory (about
    5 KB a row); this holds a few hundred rows, whatever the catalogue's size.
    """
    found: dict[str, int] = {}
    with CatalogueIndex.build(options.manifest, options.input, options.manifest_limits()) as index, \
            tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".jsonl") as lines:
        def reason(entry) -> str | Failure | None:
            if isinstance(entry, Failure):  # a row no run can use
                return entry
            return classify(entry, job, other_models)

        for entry, why in ordered_map(lambda e: (e, reason(e)), index):
            found[_counter(why)] = found.get(_counter(why), 0) + 1
            if isinstance(why, str):
                lines.write(plan_line(entry, why) + "\n")
        lines.flush()
        storage.publish_file(lines.name, target)
    return found
