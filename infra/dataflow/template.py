#!/usr/bin/env python3
"""Build the beamsplitter Flex Template, or launch a job from it.

    python3 infra/dataflow/template.py build  --project P --work gs://WORK --image IMAGE
    python3 infra/dataflow/template.py launch --project P --region R --work gs://WORK \\
        --service-account SA --manifest gs://CATALOGUE/manifest.csv --output gs://STEMS/prefix -p spleeter:4stems
    ... --dry-run   prints the gcloud command instead of running it

The template spec lives at WORK/templates/beamsplitter.json and names IMAGE, a tag built by
infra/docker/build.py. IMAGE is the launch image, and the launcher makes it the workers' image too
(BEAMSPLITTER_IMAGE, baked in at build time): a launch names no image, so launcher and workers
cannot drift apart. With Terraform, the spec is Terraform's (variable `image`; `terraform apply`
moves to a new image) and `build` is for projects without it. A job's name comes from its output prefix and model
(beamsplitter_job.job_name), so Dataflow refuses a second job on the same prefix while one runs,
whoever launched the first. Launches put the steps that run the model on GPU machines
(--accelerator, with --model-copies models per GPU machine; --cpu-only for neither): whole tracks,
decoded, separated and encoded there, or with --fan-out chunks inference alone; every other step
runs on --machine-type, the launcher on --launcher-machine-type.
Job definition and defaults: beamsplitter_job.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `infra`
from infra import common  # noqa: E402
from infra.dataflow import beamsplitter_job as job  # noqa: E402

METADATA = "infra/dataflow/metadata.json"


def template_path(work: str) -> str:
    return f"{work.rstrip('/')}/templates/beamsplitter.json"


def build_commands(args) -> list[list[str]]:
    return [["gcloud", "dataflow", "flex-template", "build", template_path(args.work), "--project", args.project,
             "--image", args.image, "--sdk-language", "PYTHON", "--metadata-file", METADATA]]


def launch_commands(args) -> list[list[str]]:
    work = args.work.rstrip("/")
    parameters = job.parameters(manifest=args.manifest, output=args.output, model=args.model,
                                accelerator=None if args.cpu_only else args.accelerator,
                                model_copies=args.model_copies,
                                checkpoint=args.checkpoint, codec=args.codec, bitrate=args.bitrate,
                                max_failed_fraction=args.max_failed_fraction,
                                scratch_location=args.scratch_location, fan_out=args.fan_out,
                                precision=args.precision, stems=args.stems, two_stems=args.two_stems)
    environment = job.environment(service_account=args.service_account, temp_location=f"{work}/temp",
                                  staging_location=f"{work}/staging", machine_type=args.machine_type,
                                  max_workers=args.max_workers, launcher_machine_type=args.launcher_machine_type)
    return [job.gcloud_run(project=args.project, region=args.region,
                           job_name=job.job_name(output=args.output, model=args.model),
                           template=template_path(work), parameters=parameters, environment=environment)]


def positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: expected a whole number, at least 1")
    return int(value)


def parse(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = parser.add_subparsers(dest="step", required=True)
    for name, helptext in (("build", "write the template spec"), ("launch", "start a job from the template")):
        step = steps.add_parser(name, help=helptext)
        step.add_argument("--project", required=True)
        step.add_argument("--work", type=common.gcs_uri, required=True,
                          help="the work bucket (templates/, temp/, staging/), e.g. gs://PROJECT-beamsplitter-work")
        common.add_dry_run(step)
    steps.choices["build"].add_argument(
        "--image", type=common.tagged_image, required=True,
        help="the beamsplitter image, as the tag build.py built it: the launcher's and the workers' image")
    launch = steps.choices["launch"]
    launch.add_argument("--region", required=True)
    launch.add_argument("--service-account", required=True, help="the workers' service account email")
    launch.add_argument("--manifest", type=common.gcs_uri, required=True)
    launch.add_argument("--output", type=common.gcs_uri, required=True)
    launch.add_argument("-p", "--model", default="spleeter:2stems")
    launch.add_argument("--checkpoint", type=common.gcs_uri)
    launch.add_argument("--codec")
    launch.add_argument("--bitrate")
    launch.add_argument("--machine-type", default=job.CPU_MACHINE_TYPE,
                        help="machines of the CPU steps (default: %(default)s)")
    launch.add_argument("--accelerator", default=job.GPU_ACCELERATOR,
                        help="resource hint of the steps that run the model (default: %(default)s)")
    launch.add_argument("--model-copies", type=positive, default=job.MODEL_COPIES,
                        help="models per GPU machine, shared by its SDK processes (default: %(default)s)")
    launch.add_argument("--cpu-only", action="store_true",
                        help="no GPU: inference on --machine-type too, one model per SDK process")
    launch.add_argument("--launcher-machine-type", default=job.LAUNCHER_MACHINE_TYPE,
                        help="machine of the template launcher, which loads TensorFlow (default: %(default)s)")
    launch.add_argument("--max-workers", type=int, default=job.MAX_WORKERS)
    launch.add_argument("--fan-out", choices=("tracks", "chunks"),
                        help="the job's --fan_out: tracks (its default) or chunks, which sends every model chunk "
                             "through scratch storage (hours-long mixes on few workers)")
    launch.add_argument("--precision", choices=("fp32", "bf16"),
                        help="the job's --precision: fp32 (its default) or bf16, on GPU workers or CPU workers with "
                             "AMX or AVX512_BF16")
    stems = launch.add_mutually_exclusive_group()
    stems.add_argument("--stems", help="the job's --stems: only these instruments, separated by commas")
    stems.add_argument("--two-stems", help="the job's --two_stems: INSTRUMENT and no_INSTRUMENT")
    launch.add_argument("--scratch-location", type=common.gcs_uri,
                        help="where chunk fan-out parks chunks, in a bucket without soft delete "
                             "(Terraform's scratch bucket); default: OUTPUT/scratch")
    launch.add_argument("--max-failed-fraction", type=common.fraction, default=job.MAX_FAILED_FRACTION,
                        help="the job fails when more than this share of the tracks it tried failed "
                             "(default: %(default)g)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    commands = build_commands(args) if args.step == "build" else launch_commands(args)
    return common.execute(commands, args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
