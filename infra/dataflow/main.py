"""Flex Template entry point: settle the run, hand its job graph to Dataflow, return without waiting.

The template launcher runs this file (FLEX_TEMPLATE_PYTHON_PY_FILE) with the template's
parameters as --name=value options, plus a --template_location of its own. Under
--template_location Beam's DataflowRunner does not submit anything: it stages the pipeline and
writes the job's graph to that location (apiclient.DataflowApplicationClient.create_job), and
run_pipeline returns a DataflowPipelineResult without a job. Once this program has exited with
status 0, the launcher submits that graph as the job. So this is `beamsplitter run` without its
wait and summary, and without a job id when there is none yet: the job's counters are in the
Dataflow console, and its metadata and failures land under the output prefix as usual.

Defaults for the launch: DataflowRunner, the Beam SDK from the container, and this image
($BEAMSPLITTER_IMAGE, baked in at build time from the tag it was built as) as the workers'
image. The workers always run the image that launched the run: a different --sdk_container_image
is refused, so launcher and workers cannot drift apart.
"""

from __future__ import annotations

import logging
import os
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import (DebugOptions, GoogleCloudOptions, PipelineOptions,
                                                  StandardOptions, WorkerOptions)

from pipeline.options import BeamsplitterOptions, pin_local_runner
from pipeline.run import build, catalogue_size, resolve_run, settle_prefix
from transforms.catalogue.lease import Lease

DATAFLOW = "DataflowRunner"
# Beam's S3 options that carry secrets (apache_beam.options.pipeline_options.S3Options).
CREDENTIAL_OPTIONS = ("s3_access_key_id", "s3_secret_access_key", "s3_session_token")


class LaunchError(ValueError):
    """Options this launch refuses (the message says why)."""


def with_defaults(argv: list[str], environ=os.environ) -> list[str]:
    """``argv`` plus the launch defaults it does not set itself."""
    args = list(argv)

    def given(option: str) -> bool:
        return any(arg == option or arg.startswith(option + "=") for arg in args)

    if not given("--runner"):
        args.append(f"--runner={DATAFLOW}")
    if not given("--sdk_location"):
        args.append("--sdk_location=container")
    if environ.get("BEAMSPLITTER_IMAGE") and not given("--sdk_container_image"):
        args.append(f"--sdk_container_image={environ['BEAMSPLITTER_IMAGE']}")
    return args


def same_build(image: str, own: str) -> bool:
    """Whether ``image`` names this image: its own tag, or a digest in the same repository (a
    launcher may pin the spec's tag to what it resolved to; the repository's tags are immutable)."""
    if image == own:
        return True
    repository = own.rsplit(":", 1)[0] if own.rfind(":") > own.rfind("/") else own
    return image.startswith(repository + "@sha256:")


def check_launch(options: PipelineOptions, environ=os.environ) -> None:
    """Refuse what would start a job that cannot work as intended.

    * S3 credentials among the options: a job's options are readable by anyone who can list jobs.
    * Workers on another image than this one: the code that launched the run is the code that runs it.
    * Dataflow without a worker image: Beam's default image has no beamsplitter in it.
    * The model steps' accelerator hint together with the ``worker_accelerator`` service
      option (a GPU on every worker) or in streaming mode: Dataflow's right fitting, which puts only
      the steps that run the model on GPU machines, is for batch jobs without ``worker_accelerator``.
    """
    secrets = [name for name in CREDENTIAL_OPTIONS if options.get_all_options().get(name)]
    if secrets:
        raise LaunchError(f"--{secrets[0]}: S3 credentials in a launch's parameters are kept in the job's "
                          "description for anyone who can read jobs; give the workers a role instead "
                          "(infra/README.md, Permissions)")
    own = environ.get("BEAMSPLITTER_IMAGE")
    image = options.view_as(WorkerOptions).sdk_container_image
    if own and image and not same_build(image, own):
        raise LaunchError(f"--sdk_container_image {image}: the workers run this launcher's own image, {own}; "
                          "launch the template built from the image you want")
    if options.view_as(StandardOptions).runner == DATAFLOW and not image:
        raise LaunchError("no workers' image: pass --sdk_container_image, or launch from a beamsplitter image "
                          "built with its own reference (infra/docker/build.py sets BEAMSPLITTER_IMAGE)")
    if options.view_as(BeamsplitterOptions).inference_accelerator:
        service = options.view_as(GoogleCloudOptions).dataflow_service_options or []
        experiments = options.view_as(DebugOptions).experiments or []
        whole = [o for o in (*service, *experiments) if o.split("=", 1)[0] == "worker_accelerator"]
        if whole:
            raise LaunchError(f"{whole[0]}: with --inference_accelerator only the steps that run the model get a GPU "
                              "(right fitting); drop the worker_accelerator service option")
        if options.view_as(StandardOptions).streaming:
            raise LaunchError("--inference_accelerator needs a batch job (Dataflow's right fitting), not --streaming")


def job_id_of(result) -> str | None:
    """The id of the job ``result`` stands for; None for DataflowRunner's result without a job
    (DataflowPipelineResult.has_job is False when --template_location made it write the graph only)."""
    if getattr(result, "has_job", True) is False:
        return None
    return result.job_id()


def launch(argv: list[str], environ=os.environ) -> str | None:
    """Submit the catalogue job, or write its graph for the Flex Template launcher to submit.

    Returns the runner's job id, "local" on the local runner, and None when the runner returned
    no job (DataflowRunner with --template_location: the graph is written there instead).
    """
    argv = with_defaults(argv, environ)
    options = PipelineOptions(argv)
    local = pin_local_runner(options)
    check_launch(options, environ)
    job = options.view_as(BeamsplitterOptions)
    settings = resolve_run(job, settle=False)
    # The job is not waited for, so it holds no lease; it settles the prefix only while no run does.
    with Lease(settings.job.layout.lease(), settings.job.run_id):
        settings = settle_prefix(settings)
    tracks = catalogue_size(job)  # an unusable manifest fails the launch, not the job
    pipeline = beam.Pipeline(options=options)
    build(pipeline, settings)
    result = pipeline.run()
    job_id = "local" if local else job_id_of(result)
    where = f"job {job_id}" if job_id else \
        f"job graph at {options.view_as(GoogleCloudOptions).template_location}, submitted by the template launcher"
    print(f"run {settings.job.run_id}: {settings.job.model_id}, {tracks} catalogue rows, {where}, "
          f"stems under {settings.job.layout.track_dir('').rstrip('/')}/")
    return job_id


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    try:
        launch(sys.argv[1:])
    except LaunchError as refused:
        sys.exit(f"beamsplitter launch: {refused}")
