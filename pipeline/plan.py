"""`beamsplitter plan`: what a run would do, as a manifest, before doing it.

Scheduled reprocessing runs this first: it reads the catalogue, compares it
with what the model has already written under the output prefix, and writes a
JSON Lines manifest of the tracks a run must separate, each with its reason:

* ``new``: no model has separated this track yet;
* ``changed``: its stems exist but the source changed (URI, size or mtime);
* ``new-model``: another model or checkpoint separated it, this one has not.

The plan is itself a manifest: ``beamsplitter run --manifest PLAN`` does exactly that work.
"""

from __future__ import annotations

import json
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from models.errors import BeamsplitterError
from pipeline.options import BeamsplitterOptions, pin_local_runner
from pipeline.run import RunPlan, counters, plan_run
from transforms import storage
from transforms.layout import Layout
from transforms.read import ReadCatalogue
from transforms.record import CompletionRecord

REASONS = ("new", "changed", "new-model")


class PlanOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--plan_output", default=None,
                            help="where to write the plan (default: PREFIX/plans/<model>/plan-<run_id>.jsonl)")


class _Classify(beam.DoFn):
    def __init__(self, layout: Layout, other_models: list[str]):
        self.layout, self.other_models = layout, other_models

    def process(self, track):
        try:
            fingerprint = storage.fingerprint(track.uri)
        except BeamsplitterError:
            fingerprint = None  # a run will report it as a failure; plan it so that it does
        record = CompletionRecord.read(self.layout.record(track.track_id))
        if record and fingerprint is not None and record.is_done_for(track.uri, fingerprint):
            Metrics.counter("beamsplitter", "plan.up-to-date").inc()
            return
        if record:
            reason = "changed"
        elif any(CompletionRecord.read(Layout(self.layout.prefix, m).record(track.track_id))
                 for m in self.other_models):
            reason = "new-model"
        else:
            reason = "new"
        Metrics.counter("beamsplitter", f"plan.{reason}").inc()
        yield json.dumps({"track_id": track.track_id, "uri": track.uri, "plan_reason": reason, **track.extra})


def other_model_folders(layout: Layout) -> list[str]:
    """Model folders under the prefix besides ``layout``'s, from their ``_MODEL.json`` cards."""
    cards = storage.find(storage.join(layout.prefix, "stems"), "*/_MODEL.json")
    return sorted({path.rsplit("/", 2)[-2] for path in cards} - {layout.model})


def plan(argv: list[str]) -> int:
    pipeline_options = PipelineOptions(argv)
    pin_local_runner(pipeline_options)
    FileSystems.set_options(pipeline_options)
    options = pipeline_options.view_as(BeamsplitterOptions)
    run_plan: RunPlan = plan_run(options, settle=False)
    target = pipeline_options.view_as(PlanOptions).plan_output or FileSystems.join(
        options.output, "plans", run_plan.layout.model, f"plan-{run_plan.run_id}.jsonl")
    started = time.monotonic()
    with beam.Pipeline(options=pipeline_options) as pipeline:
        tracks, _ = pipeline | "ReadCatalogue" >> ReadCatalogue(options.manifest, options.input)
        _ = (tracks
             | "Classify" >> beam.ParDo(_Classify(run_plan.layout, other_model_folders(run_plan.layout)))
             | "WritePlan" >> beam.io.WriteToText(target, num_shards=1, shard_name_template=""))
    found = counters(pipeline.result)
    todo = {reason: found.get(f"plan.{reason}", 0) for reason in REASONS}
    print(f"plan for {run_plan.model_id} under {options.output}: {sum(todo.values())} tracks to separate "
          f"({', '.join(f'{n} {r}' for r, n in todo.items())}), {found.get('plan.up-to-date', 0)} up to date "
          f"[{time.monotonic() - started:.1f} s]")
    print(f"plan: {target}")
    return 0
