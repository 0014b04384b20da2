"""One definition of a beamsplitter Dataflow job, from which every launcher is made.

* template.py's `launch` turns it into `gcloud dataflow flex-template run ...`;
* airflow_dag.py sends it as the Flex Template launch request (launch_body);
* Terraform's Cloud Scheduler job sends the same request, written in HCL (tests keep them equal).

Standard library only: it is uploaded beside the DAG into Airflow's dags folder.
"""

from __future__ import annotations

import hashlib
import re

# The steps without the model run on these: reading the catalogue, skipping done tracks, Parquet (and
# with --fan_out=chunks decoding, reassembly and encoding: ffmpeg and numpy want cores).
CPU_MACHINE_TYPE = "n2-standard-8"
# The steps that run the model run on GPU machines (Dataflow right fitting, from their resource
# hint): by default whole tracks, decoded, separated and encoded there, on one L4 on a g2-standard-8,
# whose 8 vCPUs run ffmpeg and the STFTs around the network; with --fan_out=chunks inference alone.
GPU_ACCELERATOR = "type:nvidia-l4;count:1;machine_type:g2-standard-8;install-nvidia-driver"
# Models per GPU machine, shared by its SDK processes (Dataflow starts one per vCPU) through
# RunInference's model sharing: GPU memory holds one model, not eight (infra/README.md, "GPU workers").
MODEL_COPIES = 1
# The Flex Template launcher VM runs main.py from the job's own image, which imports TensorFlow and
# plans the run (about 0.9 GB resident, measured). Dataflow's default launcher is an n1-standard-1
# (1 vCPU, 3.75 GB); this is the CPU workers' family, where the image's TensorFlow already runs,
# with 8 GB for TensorFlow, the plan and a large manifest.
LAUNCHER_MACHINE_TYPE = "n2-standard-2"
MAX_WORKERS = 50
# Scheduled runs fail their job when more than this share of the tracks they tried failed, so that
# Dataflow's failed-job alert hears of it (a job whose every track failed would otherwise succeed).
MAX_FAILED_FRACTION = 0.05
DISK_SIZE_GB = 50  # the GPU image unpacks to about 10 GB
# GPUs and custom containers need Runner v2 (the Python default; stated so that no one turns it off).
EXPERIMENTS = ("use_runner_v2",)
# Service options a job with the model steps' accelerator hint must not carry: worker_accelerator
# puts a GPU on every worker, which Dataflow's right fitting rules out (and use_nvidia_mps is set
# through it).
NOT_WITH_RIGHT_FITTING = ("worker_accelerator", "use_nvidia_mps")


def job_name(*, output: str, model: str, prefix: str = "beamsplitter") -> str:
    """The one Dataflow job name of a model's run over an output prefix, whoever launches it.

    Dataflow refuses a job while another of the same name runs, so a retried, scheduled or manual
    launch cannot start a second job on the same prefix. Terraform's scheduler.tf computes the same
    name in HCL (local.job_name; tests compare the two).
    """
    short = re.sub(r"[^a-z0-9]+", "-", model.split(":", 1)[-1].lower()).strip("-")
    digest = hashlib.sha256(f"{output.rstrip('/')}|{model}".encode()).hexdigest()[:12]
    return f"{prefix}-{short}-{digest}"


def parameters(*, manifest: str, output: str, model: str, accelerator: str | None = GPU_ACCELERATOR,
               model_copies: int = MODEL_COPIES, checkpoint: str | None = None, codec: str | None = None,
               bitrate: str | None = None, disk_size_gb: int = DISK_SIZE_GB,
               max_failed_fraction: float = MAX_FAILED_FRACTION, scratch_location: str | None = None,
               fan_out: str | None = None, precision: str | None = None, stems: str | None = None,
               two_stems: str | None = None) -> dict[str, str]:
    """The template's parameters (metadata.json) and the pipeline options passed with them.

    No worker image among them: the workers run the template's own image (main.py).
    ``model_copies`` goes with ``accelerator``; a CPU-only job leaves both to the job's defaults
    (no hint, one model per SDK process). ``fan_out`` left out: the job's default, whole tracks.
    """
    params = {"manifest": manifest, "output": output, "model": model, "disk_size_gb": str(disk_size_gb),
              "max_failed_fraction": f"{max_failed_fraction:g}"}
    if accelerator:
        params.update(inference_accelerator=accelerator, model_copies=str(model_copies))
    optional = {"checkpoint": checkpoint, "codec": codec, "bitrate": bitrate, "scratch_location": scratch_location,
                "fan_out": fan_out, "precision": precision, "stems": stems, "two_stems": two_stems}
    params.update({name: value for name, value in optional.items() if value})
    return params


def environment(*, service_account: str, temp_location: str, staging_location: str,
                machine_type: str = CPU_MACHINE_TYPE, max_workers: int = MAX_WORKERS,
                launcher_machine_type: str = LAUNCHER_MACHINE_TYPE,
                experiments: tuple[str, ...] = EXPERIMENTS) -> dict:
    """The launch request's runtime environment (FlexTemplateRuntimeEnvironment)."""
    refused = [e for e in experiments if e.split("=", 1)[0] in NOT_WITH_RIGHT_FITTING]
    if refused:
        raise ValueError(f"{refused[0]}: the job puts a GPU on the steps that run the model alone (right fitting)")
    return {"serviceAccountEmail": service_account, "tempLocation": temp_location,
            "stagingLocation": staging_location, "machineType": machine_type, "maxWorkers": max_workers,
            "launcherMachineType": launcher_machine_type, "additionalExperiments": list(experiments)}


def launch_body(*, job_name: str, template: str, parameters: dict, environment: dict) -> dict:
    """The body of POST .../locations/REGION/flexTemplates:launch."""
    return {"launchParameter": {"jobName": job_name, "containerSpecGcsPath": template,
                                "parameters": parameters, "environment": environment}}


def gcloud_run(*, project: str, region: str, job_name: str, template: str, parameters: dict,
               environment: dict) -> list[str]:
    """The same launch as a `gcloud dataflow flex-template run` command line."""
    command = ["gcloud", "dataflow", "flex-template", "run", job_name, "--project", project, "--region", region,
               "--template-file-gcs-location", template,
               "--service-account-email", environment["serviceAccountEmail"],
               "--temp-location", environment["tempLocation"],
               "--staging-location", environment["stagingLocation"],
               "--worker-machine-type", environment["machineType"],
               "--max-workers", str(environment["maxWorkers"]),
               "--launcher-machine-type", environment["launcherMachineType"],
               "--additional-experiments", ",".join(environment["additionalExperiments"])]
    for name, value in parameters.items():
        item = f"{name}={value}"
        # gcloud splits dictionary flags on commas; ^|^ switches its delimiter for this one item.
        command += ["--parameters", f"^|^{item}" if "," in item else item]
    return command


def plan_arguments(*, manifest: str, output: str, model: str, beam_options: tuple | list = ()) -> list[str]:
    """The image's arguments for `beamsplitter plan`: what a run over ``manifest`` must do, with counts.

    ``beam_options`` choose where plan's own pipeline runs (dataflow_options: on Dataflow, for
    catalogues too large to check from one machine); none: on the local runner, in the pod.
    """
    return ["plan", "--manifest", manifest, "--output", output, "-p", model, *beam_options]


def dataflow_options(*, project: str, region: str, work: str, image: str, service_account: str) -> list[str]:
    """Beam options that run a beamsplitter pipeline (plan's) on Dataflow on CPU workers of ``image``."""
    return ["--runner=DataflowRunner", f"--project={project}", f"--region={region}",
            f"--temp_location={work}/temp", f"--staging_location={work}/staging",
            f"--sdk_container_image={image}", "--sdk_location=container",
            f"--service_account_email={service_account}", f"--machine_type={CPU_MACHINE_TYPE}",
            f"--max_num_workers={MAX_WORKERS}", f"--disk_size_gb={DISK_SIZE_GB}",
            *(f"--experiments={e}" for e in EXPERIMENTS)]
