"""Flex Template entry point: plan the run, submit it to Dataflow, return without waiting.

The template launcher runs this file (FLEX_TEMPLATE_PYTHON_PY_FILE) with the template's
parameters as --name=value options. Dataflow needs the launch program to end once the job is
submitted, so this is `beamsplitter run` without its wait and summary: the job's counters are in
the Dataflow console, and its metadata and failures land under the output prefix as usual.
Defaults for the launch: DataflowRunner, the Beam SDK from the container, and this image
($BEAMSPLITTER_IMAGE) as the workers' image.
"""

from __future__ import annotations

import logging
import os
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.options import BeamsplitterOptions, pin_local_runner
from pipeline.run import build, catalogue_size, plan_run


def with_defaults(argv: list[str], environ=os.environ) -> list[str]:
    """``argv`` plus the launch defaults it does not set itself."""
    args = list(argv)

    def given(option: str) -> bool:
        return any(arg == option or arg.startswith(option + "=") for arg in args)

    if not given("--runner"):
        args.append("--runner=DataflowRunner")
    if not given("--sdk_location"):
        args.append("--sdk_location=container")
    if environ.get("BEAMSPLITTER_IMAGE") and not given("--sdk_container_image"):
        args.append(f"--sdk_container_image={environ['BEAMSPLITTER_IMAGE']}")
    return args


def launch(argv: list[str]) -> str:
    """Submit the catalogue job; returns the runner's job id ("local" on the local runner)."""
    argv = with_defaults(argv)
    options = PipelineOptions(argv)
    local = pin_local_runner(options)
    job = options.view_as(BeamsplitterOptions)
    plan = plan_run(job)
    tracks = catalogue_size(job)  # an unusable manifest fails the launch, not the job
    pipeline = beam.Pipeline(options=options)
    build(pipeline, plan)
    result = pipeline.run()
    job_id = "local" if local else result.job_id()
    print(f"run {plan.run_id}: {plan.model_id}, {tracks} catalogue rows, job {job_id}, "
          f"stems under {plan.layout.track_dir('').rstrip('/')}/")
    return job_id


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    launch(sys.argv[1:])
