"""One definition of a beamsplitter Dataflow job, from which every launcher is made.

* template.py's `launch` turns it into `gcloud dataflow flex-template run ...`;
* airflow_dag.py sends it as the Flex Template launch request (launch_body);
* Terraform's Cloud Scheduler job sends the same request, written in HCL (tests keep them equal).

Standard library only: it is uploaded beside the DAG into Airflow's dags folder.
"""

from __future__ import annotations

# Every step but inference (reading the catalogue, decoding, reassembly, encoding, Parquet) runs on
# these: ffmpeg and numpy want cores, reassembly about 21 MB per instrument and minute of audio.
CPU_MACHINE_TYPE = "n2-standard-8"
# The inference step alone runs on GPU machines (Dataflow right fitting, from the step's resource
# hint): one L4 on a g2-standard-8, whose 8 vCPUs also run the STFTs around the network.
GPU_ACCELERATOR = "type:nvidia-l4;count:1;machine_type:g2-standard-8;install-nvidia-driver"
MAX_WORKERS = 50
DISK_SIZE_GB = 50  # the GPU image unpacks to about 10 GB
# GPUs and custom containers need Runner v2 (the Python default; stated so that no one turns it off).
EXPERIMENTS = ("use_runner_v2",)


def parameters(*, manifest: str, output: str, model: str, image: str, accelerator: str | None = GPU_ACCELERATOR,
               checkpoint: str | None = None, codec: str | None = None, bitrate: str | None = None,
               disk_size_gb: int = DISK_SIZE_GB) -> dict[str, str]:
    """The template's parameters (metadata.json) and the pipeline options passed with them."""
    params = {"manifest": manifest, "output": output, "model": model, "sdk_container_image": image,
              "disk_size_gb": str(disk_size_gb)}
    optional = {"inference_accelerator": accelerator, "checkpoint": checkpoint, "codec": codec, "bitrate": bitrate}
    params.update({name: value for name, value in optional.items() if value})
    return params


def environment(*, service_account: str, temp_location: str, staging_location: str,
                machine_type: str = CPU_MACHINE_TYPE, max_workers: int = MAX_WORKERS,
                experiments: tuple[str, ...] = EXPERIMENTS) -> dict:
    """The launch request's runtime environment (FlexTemplateRuntimeEnvironment)."""
    return {"serviceAccountEmail": service_account, "tempLocation": temp_location,
            "stagingLocation": staging_location, "machineType": machine_type, "maxWorkers": max_workers,
            "additionalExperiments": list(experiments)}


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
