"""Dataflow: the Flex Template (metadata, entry file, build and launch commands), the Airflow DAG, the cost model."""

from __future__ import annotations

import argparse
import ast
import os
import importlib.util
import json
import math
import re
import subprocess
import sys
import types

import jsonschema
import jinja2
import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_runner_api_pb2

from infra.dataflow import beamsplitter_job as job
from infra.dataflow import cost_model
from infra.dataflow import main as flex_main
from models.config import embedded_names
from models.encoding import CODECS, SAMPLE_FORMATS
from pipeline.options import BeamsplitterOptions
from tests import services
from tests.infra.conftest import INFRA, REPO, assert_separated, dry_run, flag, flags, rejects

DATAFLOW = INFRA / "dataflow"
IMAGE = "us-central1-docker.pkg.dev/proj/beamsplitter/beamsplitter:0.1.0-gpu"
T4 = "type:nvidia-tesla-t4;count:1;machine_type:n1-standard-8;install-nvidia-driver"
LAUNCH = ["launch", "--project", "proj", "--region", "us-central1", "--work", "gs://proj-beamsplitter-work",
          "--service-account", "beamsplitter-worker@proj.iam.gserviceaccount.com",
          "--manifest", "gs://catalogue/manifest.csv", "--output", "gs://proj-beamsplitter-stems/catalogue",
          "-p", "spleeter:4stems"]
JOB_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")  # Dataflow job names

# The parts of Dataflow's template metadata (TemplateMetadata / ParameterMetadata) this template uses.
METADATA_SCHEMA = {
    "type": "object",
    "required": ["name", "description", "parameters"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "description": {"type": "string", "minLength": 1},
        "streaming": {"type": "boolean"},
        "parameters": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "label", "helpText"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
                    "label": {"type": "string", "minLength": 1},
                    "helpText": {"type": "string", "minLength": 1},
                    "isOptional": {"type": "boolean"},
                    "regexes": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                    "paramType": {"enum": ["TEXT", "GCS_READ_FILE", "GCS_WRITE_FOLDER", "GCS_READ_FOLDER"]},
                },
            },
        },
    },
}


@pytest.fixture(scope="module")
def metadata() -> dict:
    return json.loads((DATAFLOW / "metadata.json").read_text())


def parameter(metadata, name) -> dict:
    (found,) = [p for p in metadata["parameters"] if p["name"] == name]
    return found


def matches(param: dict, value: str) -> bool:
    return all(re.search(regex, value) for regex in param["regexes"])


def job_options() -> dict[str, str]:
    """The job's own options: ``--option`` string -> dest."""
    parser = argparse.ArgumentParser()
    BeamsplitterOptions._add_argparse_args(parser)
    return {s: a.dest for a in parser._actions for s in a.option_strings}


def test_metadata_is_valid_template_metadata(metadata):
    jsonschema.validate(metadata, METADATA_SCHEMA)
    names = [p["name"] for p in metadata["parameters"]]
    assert len(names) == len(set(names))
    assert {p["name"] for p in metadata["parameters"] if not p.get("isOptional")} == {"manifest", "output"}
    for p in metadata["parameters"]:
        for regex in p["regexes"]:
            re.compile(regex)


def test_every_parameter_is_an_option_of_the_job(metadata):
    options = job_options()
    for p in metadata["parameters"]:
        assert f"--{p['name']}" in options, p["name"]


def test_parameter_regexes_accept_what_the_job_accepts(metadata):
    assert all(matches(parameter(metadata, "model"), name) for name in embedded_names())
    assert not matches(parameter(metadata, "model"), "spleeter:3stems")
    codecs = ("wav", "flac", "mp3", "ogg", "m4a", "wma", "aiff")
    assert {c for c in codecs if matches(parameter(metadata, "codec"), c)} == set(CODECS)
    assert {f for f in ("s16", "s24", "f32", "u8") if matches(parameter(metadata, "sample_format"), f)} \
        == set(SAMPLE_FORMATS)
    accelerator = parameter(metadata, "inference_accelerator")
    for good in (job.GPU_ACCELERATOR, T4, "type:nvidia-l4;count:1;install-nvidia-driver", ""):
        assert matches(accelerator, good), good
    for bad in ("nvidia-l4", "type:nvidia-l4;count:0", "type:nvidia-l4,count:1"):
        assert not matches(accelerator, bad), bad
    assert matches(parameter(metadata, "manifest"), "gs://catalogue/2026/manifest.parquet")
    assert not matches(parameter(metadata, "manifest"), "/local/manifest.csv")
    assert not matches(parameter(metadata, "manifest"), "gs://catalogue/manifest.txt")
    assert matches(parameter(metadata, "output"), "gs://stems/catalogue")
    assert matches(parameter(metadata, "bitrate"), "192k") and not matches(parameter(metadata, "bitrate"), "192")
    fan_out = parameter(metadata, "fan_out")
    assert {f for f in ("auto", "none", "tracks", "chunks", "") if matches(fan_out, f)} == {"auto", "tracks", "chunks"}
    stems = parameter(metadata, "stems")
    assert all(matches(stems, s) for s in ("vocals", "vocals,accompaniment", "drums,bass,other"))
    assert not any(matches(stems, bad) for bad in ("", "vocals,", ",vocals", "vocals accompaniment"))
    assert matches(parameter(metadata, "two_stems"), "vocals")
    assert not matches(parameter(metadata, "two_stems"), "vocals,drums")
    copies = parameter(metadata, "model_copies")
    assert matches(copies, "1") and matches(copies, "12")
    assert not any(matches(copies, bad) for bad in ("0", "-1", "", "two"))


def test_gpu_parameters_travel_together(metadata):
    """Where the template takes the inference step's accelerator, it takes the models per GPU machine."""
    names = [p["name"] for p in metadata["parameters"]]
    assert names.index("model_copies") == names.index("inference_accelerator") + 1
    assert parameter(metadata, "model_copies").get("isOptional") is True
    # the default the job gives it (pipeline/options.py) is the default the launchers send
    plain = PipelineOptions(["--inference_accelerator", job.GPU_ACCELERATOR]).view_as(BeamsplitterOptions)
    assert plain.shared_model_copies() == job.MODEL_COPIES
    assert PipelineOptions([]).view_as(BeamsplitterOptions).shared_model_copies() is None


def test_build_writes_the_spec_to_the_work_bucket_from_the_image():
    (build,) = dry_run("dataflow/template.py", "build", "--project", "proj", "--work", "gs://proj-beamsplitter-work",
                       "--image", IMAGE)
    assert build[:5] == ["gcloud", "dataflow", "flex-template", "build",
                         "gs://proj-beamsplitter-work/templates/beamsplitter.json"]
    assert flag(build, "--image") == IMAGE
    assert flag(build, "--sdk-language") == "PYTHON"
    assert flag(build, "--project") == "proj"
    assert (REPO / flag(build, "--metadata-file")).is_file()
    # the launcher compares its own reference (the tag it was built as) with the workers' image
    assert "not by digest" in rejects("dataflow/template.py", "build", "--project", "proj", "--work",
                                      "gs://proj-beamsplitter-work", "--image", "r/beamsplitter@sha256:" + "a" * 64)


def launch_parameters(command: list[str]) -> dict[str, str]:
    items = [v[3:] if v.startswith("^|^") else v for v in flags(command, "--parameters")]
    return dict(item.split("=", 1) for item in items)


def test_launch_puts_only_inference_on_gpus(metadata):
    (launch,) = dry_run("dataflow/template.py", *LAUNCH)
    assert launch[:4] == ["gcloud", "dataflow", "flex-template", "run"]
    assert launch[4] == job.job_name(output="gs://proj-beamsplitter-stems/catalogue", model="spleeter:4stems")
    assert JOB_NAME.match(launch[4]) and launch[4].startswith("beamsplitter-4stems-")
    assert flag(launch, "--project") == "proj" and flag(launch, "--region") == "us-central1"
    assert flag(launch, "--template-file-gcs-location") == "gs://proj-beamsplitter-work/templates/beamsplitter.json"
    assert flag(launch, "--temp-location") == "gs://proj-beamsplitter-work/temp"
    assert flag(launch, "--staging-location") == "gs://proj-beamsplitter-work/staging"
    assert flag(launch, "--service-account-email") == "beamsplitter-worker@proj.iam.gserviceaccount.com"
    assert flag(launch, "--worker-machine-type") == "n2-standard-8"
    assert flag(launch, "--max-workers") == "50"
    assert flag(launch, "--additional-experiments") == "use_runner_v2"
    assert flag(launch, "--launcher-machine-type") == job.LAUNCHER_MACHINE_TYPE == "n2-standard-2"
    params = launch_parameters(launch)
    # no worker image: the workers run the template's own image (main.py); no fan_out: the job's default, whole
    # tracks, decoded, separated and encoded on the GPU machines
    assert params == {"manifest": "gs://catalogue/manifest.csv", "output": "gs://proj-beamsplitter-stems/catalogue",
                      "model": "spleeter:4stems", "disk_size_gb": "50", "max_failed_fraction": "0.05",
                      "inference_accelerator": job.GPU_ACCELERATOR, "model_copies": "1"}
    accelerator = dict(part.partition(":")[::2] for part in params["inference_accelerator"].split(";"))
    assert accelerator == {"type": "nvidia-l4", "count": "1", "machine_type": "g2-standard-8",
                           "install-nvidia-driver": ""}
    # right fitting: no GPU on every worker, no FlexRS
    assert not any("worker_accelerator" in arg or "flexrs" in arg.lower() for arg in launch)
    declared = {p["name"] for p in metadata["parameters"]}
    for name, value in params.items():
        if name in declared:
            assert matches(parameter(metadata, name), value), name
    # every parameter is a pipeline option the launched program understands, with that value
    parsed = PipelineOptions([f"--{k}={v}" for k, v in params.items()]).get_all_options()
    dests = job_options()
    for name, value in params.items():
        assert str(parsed[dests.get(f"--{name}", name)]) == value, name


def test_launch_options():
    (cpu,) = dry_run("dataflow/template.py", *LAUNCH, "--cpu-only", "--machine-type", "n2-highcpu-16",
                     "--max-failed-fraction", "0.2", "--max-workers", "10")
    params = launch_parameters(cpu)
    assert "inference_accelerator" not in params and "model_copies" not in params
    assert params["max_failed_fraction"] == "0.2" and flag(cpu, "--worker-machine-type") == "n2-highcpu-16"
    assert flag(cpu, "--max-workers") == "10" and "fan_out" not in params and "precision" not in params
    assert "stems" not in params and "two_stems" not in params
    (t4,) = dry_run("dataflow/template.py", *LAUNCH, "--accelerator", T4, "--checkpoint", "gs://models/4stems",
                    "--codec", "flac", "--model-copies", "2", "--launcher-machine-type", "n2-standard-4")
    params = launch_parameters(t4)
    assert params["inference_accelerator"] == T4 and params["model_copies"] == "2"
    assert flag(t4, "--launcher-machine-type") == "n2-standard-4"
    assert params["checkpoint"] == "gs://models/4stems" and params["codec"] == "flac"
    # chunk fan-out, where it earns its cost (hours-long mixes on few workers), is asked for
    (chunks,) = dry_run("dataflow/template.py", *LAUNCH, "--fan-out", "chunks")
    assert launch_parameters(chunks)["fan_out"] == "chunks"
    (bf16,) = dry_run("dataflow/template.py", *LAUNCH, "--precision", "bf16")
    assert launch_parameters(bf16)["precision"] == "bf16"
    (karaoke,) = dry_run("dataflow/template.py", *LAUNCH, "--stems", "accompaniment")
    assert launch_parameters(karaoke)["stems"] == "accompaniment" and "two_stems" not in launch_parameters(karaoke)
    (two,) = dry_run("dataflow/template.py", *LAUNCH, "--two-stems", "vocals")
    assert launch_parameters(two)["two_stems"] == "vocals" and "stems" not in launch_parameters(two)


def test_one_job_name_per_prefix_and_model():
    """Dataflow refuses a job while one of the same name runs: the name is the prefix's and the model's alone."""
    name = job.job_name(output="gs://stems/catalogue", model="spleeter:4stems-16kHz")
    assert JOB_NAME.match(name) and name.startswith("beamsplitter-4stems-16khz-")
    assert name == job.job_name(output="gs://stems/catalogue/", model="spleeter:4stems-16kHz")
    others = {job.job_name(output="gs://stems/other", model="spleeter:4stems-16kHz"),
              job.job_name(output="gs://stems/catalogue", model="spleeter:4stems"), name}
    assert len(others) == 3
    twice = [dry_run("dataflow/template.py", *LAUNCH)[0][4] for _ in range(2)]  # no time in it
    assert twice[0] == twice[1]
    assert "unrecognized arguments: --job-name" in rejects("dataflow/template.py", *LAUNCH, "--job-name", "x")


def test_launch_escapes_commas_for_gcloud():
    args = [a if a != "gs://catalogue/manifest.csv" else "gs://catalogue/a,b.csv" for a in LAUNCH]
    (launch,) = dry_run("dataflow/template.py", *args)
    assert "^|^manifest=gs://catalogue/a,b.csv" in flags(launch, "--parameters")


def test_launch_refuses_bad_arguments():
    assert "unrecognized arguments: --image" in rejects("dataflow/template.py", *LAUNCH, "--image", IMAGE)
    assert "at least 1" in rejects("dataflow/template.py", *LAUNCH, "--model-copies", "0")
    assert "gs://" in rejects("dataflow/template.py", *[a if a != "gs://catalogue/manifest.csv" else "manifest.csv"
                                                         for a in LAUNCH])
    assert "--service-account" in rejects("dataflow/template.py", *LAUNCH[:LAUNCH.index("--service-account")],
                                          *LAUNCH[LAUNCH.index("--service-account") + 2:])


def test_launch_body_is_the_gcloud_launch():
    params = job.parameters(manifest="gs://c/m.csv", output="gs://s/p", model="spleeter:2stems")
    env = job.environment(service_account="w@p.iam.gserviceaccount.com", temp_location="gs://w/temp",
                          staging_location="gs://w/staging")
    body = job.launch_body(job_name="beamsplitter-x", template="gs://w/templates/beamsplitter.json",
                           parameters=params, environment=env)
    command = job.gcloud_run(project="p", region="r", job_name="beamsplitter-x",
                             template="gs://w/templates/beamsplitter.json", parameters=params, environment=env)
    launch = body["launchParameter"]
    assert command[4] == launch["jobName"]
    assert flag(command, "--template-file-gcs-location") == launch["containerSpecGcsPath"]
    assert launch_parameters(command) == launch["parameters"]
    gcloud_flags = {"serviceAccountEmail": "--service-account-email", "tempLocation": "--temp-location",
                    "stagingLocation": "--staging-location", "machineType": "--worker-machine-type",
                    "maxWorkers": "--max-workers", "launcherMachineType": "--launcher-machine-type",
                    "additionalExperiments": "--additional-experiments"}
    assert set(launch["environment"]) == set(gcloud_flags)
    for field, name in gcloud_flags.items():
        value = launch["environment"][field]
        assert flag(command, name) == (",".join(value) if isinstance(value, list) else str(value))
    json.dumps(body)  # the request is plain JSON


def test_launch_request_never_asks_for_a_gpu_on_every_worker():
    """Right fitting: the accelerator is the inference step's hint; worker_accelerator (or MPS, set
    through it) would put a GPU on every worker."""
    for option in ("worker_accelerator=type:nvidia-l4;count:1", "use_nvidia_mps"):
        with pytest.raises(ValueError, match="right fitting"):
            job.environment(service_account="s", temp_location="t", staging_location="s",
                            experiments=("use_runner_v2", option))
    (launch,) = dry_run("dataflow/template.py", *LAUNCH)
    (cpu,) = dry_run("dataflow/template.py", *LAUNCH, "--cpu-only")
    for command in (launch, cpu):
        assert not any("worker_accelerator" in arg or "use_nvidia_mps" in arg for arg in command)


def test_plan_arguments_and_dataflow_options():
    args = job.plan_arguments(manifest="gs://c/m.csv", output="gs://s/p", model="spleeter:4stems")
    assert args == ["plan", "--manifest", "gs://c/m.csv", "--output", "gs://s/p", "-p", "spleeter:4stems"]
    options = job.dataflow_options(project="p", region="r", work="gs://w", image=IMAGE, service_account="w@p")
    parsed = PipelineOptions(options).get_all_options()
    assert parsed["runner"] == "DataflowRunner" and parsed["sdk_container_image"] == IMAGE
    assert parsed["temp_location"] == "gs://w/temp" and parsed["sdk_location"] == "container"
    assert parsed["machine_type"] == job.CPU_MACHINE_TYPE and parsed["experiments"] == list(job.EXPERIMENTS)


def readme_commands() -> list[list[str]]:
    """The infra README's Dataflow commands that run build.py or template.py, placeholders filled in."""
    text = (INFRA / "README.md").read_text()
    section = text.split("## Commands, in order (Dataflow)", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    prose = " ".join(section.split("```", 2)[2].split())
    lines = [line for line in block.splitlines()
             if line.startswith(("python3 infra/docker/build.py", "python3 infra/dataflow/template.py"))]
    lines += re.findall(r"`(python3 infra/dataflow/template\.py build [^`]+)`", prose)
    filled = []
    for line in lines:
        line = line.split("#", 1)[0].replace("$IMAGE", IMAGE)
        line = line.replace("PROJECT", "proj").replace("CATALOGUE", "catalogue")
        filled.append(line.split())
    return filled


def test_readme_commands_run():
    commands = readme_commands()
    scripts = [c[1] for c in commands]
    assert scripts.count("infra/dataflow/template.py") == 2 and "infra/docker/build.py" in scripts
    for command in commands:
        dry_run(command[1].removeprefix("infra/"), *command[2:])
    (launch,) = [c for c in commands if c[2:3] == ["launch"]]
    assert "--image" not in launch  # the spec's image launches, and runs the workers


def test_entry_file_adds_launch_defaults():
    env = {"BEAMSPLITTER_IMAGE": IMAGE}
    assert flex_main.with_defaults(["--manifest=gs://c/m.csv"], env) == [
        "--manifest=gs://c/m.csv", "--runner=DataflowRunner", "--sdk_location=container",
        f"--sdk_container_image={IMAGE}"]
    given = ["--runner=DirectRunner", "--sdk_location=default", f"--sdk_container_image={IMAGE}"]
    assert flex_main.with_defaults(given, env) == given
    assert flex_main.with_defaults(["--runner", "FlinkRunner"], {}) == ["--runner", "FlinkRunner",
                                                                        "--sdk_location=container"]


def refusal(argv: list[str], environ: dict) -> str:
    options = PipelineOptions(flex_main.with_defaults(argv, environ))
    with pytest.raises(flex_main.LaunchError) as refused:
        flex_main.check_launch(options, environ)
    return str(refused.value)


def test_entry_file_refuses_workers_on_another_image_and_gpus_everywhere():
    env = {"BEAMSPLITTER_IMAGE": IMAGE}
    other = IMAGE.replace("0.1.0", "0.2.0")
    assert IMAGE in refusal([f"--sdk_container_image={other}"], env)
    assert "no workers' image" in refusal([], {})  # Beam's default image has no beamsplitter in it
    gpu = [f"--inference_accelerator={job.GPU_ACCELERATOR}"]
    assert "right fitting" in refusal([*gpu, "--dataflow_service_options=worker_accelerator=type:nvidia-l4;count:1"],
                                      env)
    assert "right fitting" in refusal([*gpu, "--experiments=worker_accelerator=type:nvidia-l4;count:1"], env)
    assert "batch" in refusal([*gpu, "--streaming"], env)
    repository = IMAGE.rsplit(":", 1)[0]
    assert IMAGE in refusal([f"--sdk_container_image={repository}-cpu@sha256:" + "a" * 64], env)
    pinned = f"--sdk_container_image={repository}@sha256:" + "a" * 64  # the tag, as a launcher may resolve it
    for fine in ([], gpu, [f"--sdk_container_image={IMAGE}", *gpu], [pinned],
                 ["--dataflow_service_options=enable_prime"]):
        flex_main.check_launch(PipelineOptions(flex_main.with_defaults(fine, env)), env)


def test_entry_file_refuses_s3_credentials_in_the_launch():
    """A launch's options are part of the job's description: S3 secrets never travel there."""
    env = {"BEAMSPLITTER_IMAGE": IMAGE}
    for option in ("--s3_access_key_id=AKIA0", "--s3_secret_access_key=x", "--s3_session_token=t"):
        assert option.split("=")[0] in refusal([option], env) and "role" in refusal([option], env)
    flex_main.check_launch(PipelineOptions(flex_main.with_defaults(["--s3_region_name=eu-west-1"], env)), env)
    names = {p["name"] for p in json.loads((DATAFLOW / "metadata.json").read_text())["parameters"]}
    assert not names & set(flex_main.CREDENTIAL_OPTIONS)


def test_entry_file_exits_with_the_reason_it_refuses(tmp_path):
    env = dict(os.environ, BEAMSPLITTER_IMAGE=IMAGE, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, str(DATAFLOW / "main.py"), "--sdk_container_image=other/image:2"],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("beamsplitter launch: --sdk_container_image other/image:2")


@pytest.mark.slow  # a catalogue job
def test_entry_file_runs_the_job(tmp_path, tiny_catalogue, checkpoint_2stems, capsys):
    """The Flex Template's program, on the local runner instead of Dataflow."""
    prefix = tmp_path / "out"
    job_id = flex_main.launch(["--runner=DirectRunner", "--manifest", str(tiny_catalogue / "manifest.csv"),
                               "--output", str(prefix), "--checkpoint", str(checkpoint_2stems)])
    assert job_id == "local"
    assert "2 catalogue rows, job local, stems under" in capsys.readouterr().out
    assert_separated(prefix)


@pytest.mark.slow  # a catalogue job
def test_entry_file_refuses_while_a_run_holds_the_prefix(tmp_path, tiny_catalogue, checkpoint_2stems):
    """A template launch holds no lease, but refuses to start a job on a prefix a local or Flink run writes."""
    from models.config import load_config
    from models.checkpoint import checkpoint_digest
    from transforms.catalogue.layout import Layout, model_folder
    from transforms.catalogue.lease import Lease, LeaseHeld

    prefix = tmp_path / "out"
    sha = checkpoint_digest(checkpoint_2stems)
    layout = Layout(str(prefix), model_folder(load_config("spleeter:2stems").name, sha))
    with Lease(layout.lease(), "nightly-local"):
        with pytest.raises(LeaseHeld, match="run nightly-local"):
            flex_main.launch(["--runner=DirectRunner", "--manifest", str(tiny_catalogue / "manifest.csv"),
                              "--output", str(prefix), "--checkpoint", str(checkpoint_2stems)])
    assert not (prefix / "metadata").exists()


ACCELERATOR_HINT = "beam:resources:accelerator:v1"  # apache_beam.transforms.resources.AcceleratorHint.urn


# The steps of chunk fan-out, through which every chunk goes by scratch storage.
SCRATCH_STEPS = ("SpreadChunks/", "SeparateChunks/Stash", "ReassembleTracks/GroupChunks")


@pytest.mark.slow  # a catalogue job
@pytest.mark.parametrize("fan_out", [[], ["--fan_out=chunks"]], ids=["default", "chunks"])
def test_template_launch_writes_the_job_graph(tmp_path, tiny_catalogue, random_checkpoint, loopback_only, capsys,
                                              fan_out):
    """What the Flex Template launcher does with main.py: with --template_location, Beam's DataflowRunner
    stages the pipeline and writes the job's graph there instead of submitting a job, and returns a
    result without a job; the launch must end well, the launcher submitting the graph it finds.
    Staging goes to the GCS emulator; nothing here reaches beyond loopback (--no_auth: no credentials).
    With an accelerator the job separates whole tracks by default, the hint on every step of a track,
    and has no scratch step; --fan_out=chunks puts the hint on the inference step alone, with scratch."""
    graph = tmp_path / "job.json"
    with services.gcs_emulator() as gcs:
        job_id = flex_main.launch(
            ["--project=proj", "--region=us-central1", "--no_auth", "--job_name=beamsplitter-graph",
             f"--temp_location={gcs.url('temp')}", f"--staging_location={gcs.url('staging')}",
             f"--template_location={graph}",
             "--manifest", str(tiny_catalogue / "manifest.csv"), "--output", gcs.url("stems"),
             "--checkpoint", str(random_checkpoint("spleeter:2stems")),
             f"--inference_accelerator={job.GPU_ACCELERATOR}", "--model_copies=2", *fan_out],
            {"BEAMSPLITTER_IMAGE": IMAGE})
        assert job_id is None
        assert "2 catalogue rows, job graph at " + str(graph) in capsys.readouterr().out
        written = json.loads(graph.read_text())
        options = written["environment"]["sdkPipelineOptions"]["options"]
        with FileSystems.open(options["pipelineUrl"]) as f:
            pipeline = beam_runner_api_pb2.Pipeline.FromString(f.read())

    # the job's options, as the workers will see them
    assert options["runner"] == "DataflowRunner" and options["streaming"] is False
    assert options["sdk_container_image"] == IMAGE and options["sdk_location"] == "container"
    assert options["inference_accelerator"] == job.GPU_ACCELERATOR and options["model_copies"] == 2
    assert options["model"] == "spleeter:2stems" and options["output"] == "gs://beamsplitter-test/stems"
    assert options["project"] == "proj" and options["region"] == "us-central1"
    assert "use_runner_v2" in options["experiments"]
    assert not any(o.startswith("worker_accelerator") for o in options.get("dataflow_service_options") or [])
    # every environment runs the launcher's image, one SDK process per vCPU (which is why the model is shared)
    (pool,) = written["environment"]["workerPools"]
    images = pool["sdkHarnessContainerImages"]
    assert images and {i["containerImage"] for i in images} == {IMAGE}
    assert all(i["useSingleCorePerContainer"] for i in images)
    assert "use_multiple_sdk_containers" in options["experiments"]

    environments = pipeline.components.environments
    transforms = pipeline.components.transforms
    hinted = {t.unique_name: environments[t.environment_id].resource_hints[ACCELERATOR_HINT]
              for t in transforms.values()
              if t.environment_id and ACCELERATOR_HINT in environments[t.environment_id].resource_hints}
    assert set(hinted.values()) == {job.GPU_ACCELERATOR.encode()}
    assert any("RunInference" in name for name in hinted), sorted(hinted)
    unhinted = {t.unique_name for t in transforms.values() if t.environment_id and t.unique_name not in hinted}
    scratch_steps = sorted(t.unique_name for t in transforms.values() if t.unique_name.startswith(SCRATCH_STEPS))
    steps_hinted = {name.split("/", 1)[0] for name in hinted}
    if not fan_out:
        # the hint on decoding, inference and writing alike, which stay fused: no chunk leaves its worker
        assert not scratch_steps
        assert steps_hinted == {"DecodeChunks", "SeparateChunks", "ReassembleTracks"}, sorted(hinted)
        run_unhinted = [t.unique_name for t in transforms.values() if t.unique_name in unhinted and not t.subtransforms]
        assert not [name for name in run_unhinted if name.split("/", 1)[0] in steps_hinted], run_unhinted
        assert any(name.startswith("SpreadTracks/") for name in unhinted)
    else:
        # the hint on the inference step, and nowhere else; chunks travel through scratch storage
        assert {step for step in SCRATCH_STEPS if any(name.startswith(step) for name in scratch_steps)} == set(
            SCRATCH_STEPS)
        assert steps_hinted == {"SeparateChunks"}, sorted(hinted)
        assert any(name.startswith("DecodeChunks/") for name in unhinted)
        assert any(name.startswith("ReassembleTracks/") for name in unhinted)
    assert {e.payload and beam_runner_api_pb2.DockerPayload.FromString(e.payload).container_image
            for e in environments.values()} == {IMAGE}


def test_entry_file_is_the_one_the_image_runs():
    dockerfile = (INFRA / "docker" / "Dockerfile").read_text()
    assert "COPY infra/dataflow/main.py /template/main.py" in dockerfile
    source = (DATAFLOW / "main.py").read_text()
    assert "wait_until_finish" not in source.split('"""', 2)[2]  # Dataflow wants the launcher to end


# --- cost model ---------------------------------------------------------------------------------

SMALL = dict(tracks=3600, mean_seconds=100.0, stems=4, gpu_xrt=100.0, cpu_xrt=10.0, vcpu_price=0.05,
             mem_price=0.005, gpu_price=1.0, shuffle_price=0.01, class_a_price=0.05, class_b_price=0.004,
             storage_price=0.02)
CHUNK_BYTES = 527_360 * 2 * 4  # a decoded chunk's float32 samples (and one stem of a separated chunk)
Q = cost_model.REFERENCE_BYTES


def test_cost_model_arithmetic():
    r = cost_model.estimate(cost_model.Inputs(**SMALL))
    assert r["audio_hours"] == pytest.approx(100.0)
    assert r["gpu_worker_hours"] == pytest.approx(1.0)  # 100 h of audio at 100x
    assert r["cpu_worker_hours"] == pytest.approx(100.0 / (10 * 8))
    assert r["gpu_cost"] == pytest.approx(1.0 * (1.0 + 8 * 0.05 + 32 * 0.005))
    assert r["cpu_cost"] == pytest.approx(1.25 * (8 * 0.05 + 32 * 0.005))
    # --fan_out chunks: only references cross a shuffle, a TrackChunk and a StashedChunk per chunk
    chunks = 3600 * ((100 * 44100 + 4096) / 524_288 + 0.5)
    assert r["chunks"] == pytest.approx(chunks)
    shuffle_gb = (chunks * 2 * Q + 3600 * 5 * Q) / 1e9
    assert r["shuffle_gb"] == pytest.approx(shuffle_gb)
    assert r["shuffle_gb"] < 0.1  # for 100 hours of audio
    # the decoded chunk ("in-") and its 4 stems ("out-") go through scratch, each written once and read once
    decoded_gb, separated_gb = chunks * (CHUNK_BYTES + 128) / 1e9, chunks * (4 * CHUNK_BYTES + 128) / 1e9
    assert r["scratch_gb"] == pytest.approx(decoded_gb + separated_gb)
    # one copy of the audio in, S out (A·r·c·b·o each), plus the padding of each track's last chunk:
    # 6 % on 100 s tracks, under 1 % on hour-long ones
    one_copy_gb = 360_000 * 44100 * 2 * 4 * (527_360 / 524_288) / 1e9
    assert r["scratch_gb"] == pytest.approx(5 * one_copy_gb, rel=0.07)
    hours = cost_model.estimate(cost_model.Inputs(**{**SMALL, "tracks": 100, "mean_seconds": 3600.0}))
    assert hours["scratch_gb"] == pytest.approx(5 * one_copy_gb, rel=0.01)
    # two objects a chunk; two uploads (Class A) and ten gets (Class B) a chunk, a listing and a get a track
    assert r["scratch_objects"] == pytest.approx(2 * chunks)
    assert r["scratch_class_a"] == pytest.approx(2 * chunks + 3600)
    assert r["scratch_class_b"] == pytest.approx(10 * chunks + 3600)
    ops = ((2 * chunks + 3600) * 0.05 + (10 * chunks + 3600) * 0.004) / 10_000
    assert r["scratch_ops_cost"] == pytest.approx(ops)
    assert r["wall_hours"] == pytest.approx(1.0 / 50)
    # the decoded copies stay through inference and half of reassembly, the stems half of each
    held = (1.5 * decoded_gb + separated_gb) * (1.0 / 50) / 730 * 0.02
    assert r["scratch_held_cost"] == pytest.approx(held)
    assert r["total_cost"] == pytest.approx(r["gpu_cost"] + r["cpu_cost"] + shuffle_gb * 0.01 + ops + held)
    assert r["cost_per_million_tracks"] == pytest.approx(r["total_cost"] * 1e6 / 3600)
    assert r["stems_tb"] == pytest.approx(360_000 * 4 * 1411.2 * 1000 / 8 / 1e12)
    doubled = cost_model.estimate(cost_model.Inputs(**{**SMALL, "gpu_xrt": 200.0}))
    assert doubled["gpu_cost"] == pytest.approx(r["gpu_cost"] / 2)
    assert doubled["scratch_held_cost"] == pytest.approx(held / 2)  # held half as long
    # the scratch grows with 1 + S, its requests do not
    two = cost_model.estimate(cost_model.Inputs(**{**SMALL, "stems": 2}))
    assert two["scratch_gb"] == pytest.approx(r["scratch_gb"] * 3 / 5, rel=1e-4)
    assert two["scratch_ops_cost"] == pytest.approx(r["scratch_ops_cost"])


def test_cost_model_tracks_fan_out_shuffles_references_only():
    r = cost_model.estimate(cost_model.Inputs(**{**SMALL, "fan_out": "tracks"}))
    assert r["shuffle_gb"] == pytest.approx(3600 * (2 + 4) * Q / 1e9)
    assert r["scratch_gb"] == r["scratch_objects"] == r["scratch_ops_cost"] == r["scratch_held_cost"] == 0
    assert r["scratch_class_a"] == r["scratch_class_b"] == 0
    assert r["total_cost"] == pytest.approx(r["gpu_cost"] + r["cpu_cost"] + r["shuffle_gb"] * 0.01)


def test_cost_model_traffic_per_track():
    per_minute = 60 * 44100 / 524_288  # chunks
    a_minute, two_minutes = cost_model.traffic(60.0, 4, "chunks"), cost_model.traffic(120.0, 4, "chunks")
    assert two_minutes.shuffled - a_minute.shuffled == pytest.approx(per_minute * 2 * Q)
    assert two_minutes.scratch - a_minute.scratch == pytest.approx(per_minute * (5 * CHUNK_BYTES + 2 * 128))
    assert two_minutes.objects - a_minute.objects == pytest.approx(2 * per_minute)
    minute = cost_model.per_minute(4, "chunks")
    assert minute.scratch == pytest.approx(two_minutes.scratch - a_minute.scratch)
    assert minute.class_b == pytest.approx(10 * per_minute)
    # a track's own requests: the listing of its scratch folder and the get of the folder's name
    assert a_minute.class_a - a_minute.objects == pytest.approx(1)  # 2n + 1
    assert a_minute.class_b - 5 * a_minute.objects == pytest.approx(1)  # 10n + 1
    # what the chunk fan-out shuffled and stashed before its decoded chunks went to scratch (e29a90a)
    decoded = cost_model.per_minute(4, "decoded")
    assert decoded.shuffled == pytest.approx(per_minute * (CHUNK_BYTES + 2 * Q))
    assert decoded.scratch == pytest.approx(per_minute * (4 * CHUNK_BYTES + 128))
    assert (decoded.class_a, decoded.class_b) == pytest.approx((per_minute, 3 * per_minute))
    # and before --fan_out, the chunks shuffled in and their stems back: the bytes scratch now takes
    old = cost_model.per_minute(4, "shuffled")
    assert old.shuffled == pytest.approx(per_minute * (5 * CHUNK_BYTES + 2 * Q))
    assert old.shuffled == pytest.approx(minute.scratch + minute.shuffled, rel=1e-4)
    tracks = cost_model.traffic(600.0, 5, "tracks")
    assert tracks == cost_model.traffic(60.0, 5, "tracks") and tracks.shuffled < 5000 and tracks.scratch == 0
    assert cost_model.per_minute(5, "tracks").shuffled == 0
    with pytest.raises(ValueError):
        cost_model.traffic(60.0, 4, "none")


def test_scratch_requests_are_the_ones_the_pipeline_makes():
    """The request counts of cost_model, against what Scratch sends to an object store (gs:// here)."""
    pytest.importorskip("gcp_storage_emulator")
    from urllib.parse import unquote

    import numpy as np
    import requests

    from transforms.catalogue.layout import Layout
    from transforms.stash import Scratch

    sent = []
    real = requests.Session.request

    def request(session, method, url, *args, **kwargs):
        response = real(session, method, url, *args, **kwargs)
        sent.append((method, url.split("?")[0], url.partition("?")[2], response.status_code))
        return response

    def billed(requests_sent, bucket):
        """Class A and Class B operations, as Cloud Storage's price list counts them."""
        a = b = 0
        for method, path, query, status in requests_sent:
            if path.endswith(f"/b/{bucket}"):
                continue  # the client library's own bucket metadata lookups: see COSTS.md
            if method == "POST" and "uploadType=resumable" in query:
                a += 1  # a resumable upload: one Class A operation once complete
            elif method == "PUT" or "/batch/" in path:
                pass  # the rest of an upload; deletes are free
            elif method == "GET" and path.endswith("/o"):
                a += 1  # objects.list
            elif method == "GET":
                b += 1  # objects.get: metadata or media
            else:
                raise AssertionError((method, path, query))
        return a, b

    n, stems = 3, 4
    with services.gcs_emulator() as gcs, pytest.MonkeyPatch.context() as patch:
        patch.setattr(requests.Session, "request", request)
        scratch = Scratch(Layout(gcs.url("out"), "spleeter-4stems"), "run")
        for i in range(n):
            scratch.save(np.zeros((527_360, 2), np.float32), scratch.uri("t", i, "in"))
            scratch.load(scratch.uri("t", i, "in"))
            scratch.save(np.zeros((stems, 527_360, 2), np.float32), scratch.uri("t", i, "out"))
        for i in range(n):
            scratch.load(scratch.uri("t", i, "out"))
        scratch.remove_track("t")
        a, b = billed(sent, gcs.bucket)
        patch.undo()
        assert not FileSystems.match([gcs.url("out/**")])[0].metadata_list
    assert a == n * cost_model.SCRATCH_CLASS_A_PER_CHUNK + cost_model.SCRATCH_CLASS_A_PER_TRACK
    assert b == n * cost_model.SCRATCH_CLASS_B_PER_CHUNK + cost_model.SCRATCH_CLASS_B_PER_TRACK
    # metadata at /storage/v1/b/<bucket>/o/<quoted name>, media at /download/storage/v1/...
    objects = {unquote(path.replace("/download/", "/")) for method, path, query, status in sent
               if method == "GET" and "/o/" in path}
    assert len(objects) == 2 * n + 1  # the chunks' two objects, and the folder's own name


def test_chunk_count_matches_the_pipelines_chunking():
    from models.chunking import ChunkGeometry
    geometry = ChunkGeometry(frame_length=4096, frame_step=1024, T=512)
    assert (geometry.step, geometry.span, geometry.lead) == (
        cost_model.CHUNK_STEP, cost_model.CHUNK_SPAN, cost_model.CHUNK_LEAD)
    # averaged over lengths, the model's count is the chunker's
    seconds = [150 + k * 0.37 for k in range(400)]
    counted = sum(geometry.n_chunks(round(s * 44100)) for s in seconds) / len(seconds)
    assert cost_model.chunks_per_track(sum(seconds) / len(seconds)) == pytest.approx(counted, rel=0.01)


def costs_doc_example(flag: str = "--tracks", marker: str = "output") -> tuple[list[str], str]:
    """A command in COSTS.md and the table printed under it."""
    text = (DATAFLOW / "COSTS.md").read_text()
    (command,) = re.findall(rf"^python3 infra/dataflow/cost_model\.py {flag} .*$", text, re.MULTILINE)
    table = re.search(rf"<!-- cost_model.py {marker}[^>]*-->\n(.*?)\n<!-- end of cost_model.py {marker} -->", text,
                      re.S)
    return command.split()[2:], table[1]


@pytest.mark.parametrize("flag, marker", [("--tracks", "output"), ("--traffic", "--traffic output")])
def test_costs_doc_tables_are_the_scripts_output(flag, marker):
    args, table = costs_doc_example(flag, marker)
    result = subprocess.run(["python3", str(DATAFLOW / "cost_model.py"), *args], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == table.strip()


def test_costs_doc_names_every_input_of_the_script():
    text = (DATAFLOW / "COSTS.md").read_text()
    inputs = text.split("## Inputs", 1)[1].split("## Arithmetic", 1)[0]
    named = {name.strip() for row in inputs.splitlines()[3:] if row.startswith("| ")
             for name in row.split("|")[1].split(",")}
    assert named >= {"N", "L", "S", "X_gpu", "X_cpu", "V_g", "M_g", "G", "V_c", "M_c", "K", "P_vcpu", "P_mem",
                     "P_gpu", "P_shuffle", "P_A", "P_B", "P_store", "r", "c", "b", "o", "Q", "F", "R"}
    arithmetic = text.split("## Arithmetic", 1)[1].split("## Bytes per minute", 1)[0]
    used = set(re.findall(r"\b[A-Za-z][A-Za-z_]*\b", arithmetic))
    assert {"X_gpu", "X_cpu", "P_gpu", "P_shuffle", "P_A", "P_B", "P_store"} <= used
    assert str(cost_model.REFERENCE_BYTES) in inputs
    assert not re.search(r"\b(TODO|TBD|XXX)\b", text)


def test_cost_model_cli(capsys):
    args = [f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items()]
    assert cost_model.main([*args, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == pytest.approx(cost_model.estimate(cost_model.Inputs(**SMALL)))
    assert cost_model.main([*args, "--fan-out", "tracks"]) == 0
    assert "shuffle data (GB) = N·(2+S)·Q/1e9" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cost_model.main([*args, "--gpu-xrt=0"])
    with pytest.raises(SystemExit):
        cost_model.main(args[1:])  # --tracks is required
    with pytest.raises(SystemExit):
        cost_model.main([*args, "--fan-out", "none"])
    assert cost_model.main(["--traffic"]) == 0  # no other input needed
    table = capsys.readouterr().out
    assert "3.5-minute track" in table and "per million tracks" not in table


# --- Airflow DAG --------------------------------------------------------------------------------

DAG_FILE = DATAFLOW / "airflow_dag.py"
VARIABLE_KEYS = {"project", "region", "work", "image", "service_account", "manifest", "output", "model"}


def test_dag_parses_and_imports_airflow_only_for_operators():
    tree = ast.parse(DAG_FILE.read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert {"airflow", "airflow.providers.google.cloud.operators.dataflow",
            "airflow.providers.cncf.kubernetes.operators.pod"} <= imported
    helper = ast.parse((DATAFLOW / "beamsplitter_job.py").read_text())
    modules = {a.name.split(".")[0] for n in ast.walk(helper) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module.split(".")[0] for n in ast.walk(helper) if isinstance(n, ast.ImportFrom)}
    assert modules <= set(sys.stdlib_module_names)  # the helper runs in Airflow without this project


class _Task:
    def __init__(self, task_id, **kwargs):
        self.task_id, self.kwargs, self.downstream = task_id, kwargs, []
        _Dag.current.tasks.append(self)

    def __rshift__(self, other):
        self.downstream.append(other)
        return other


class _Dag:
    current = None

    def __init__(self, **kwargs):
        self.kwargs, self.tasks = kwargs, []

    def __enter__(self):
        _Dag.current = self
        return self

    def __exit__(self, *exc):
        _Dag.current = None


@pytest.fixture
def dag_module(monkeypatch):
    """The DAG file imported over stand-ins for Airflow's classes (Airflow is not installed here)."""
    stubs = {"airflow": {"DAG": _Dag},
             "airflow.providers.google.cloud.operators.dataflow": {"DataflowStartFlexTemplateOperator": type(
                 "DataflowStartFlexTemplateOperator", (_Task,), {})},
             "airflow.providers.cncf.kubernetes.operators.pod": {"KubernetesPodOperator": type(
                 "KubernetesPodOperator", (_Task,), {})}}
    for name, attributes in stubs.items():
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            monkeypatch.setitem(sys.modules, ".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    for name, attributes in stubs.items():
        for key, value in attributes.items():
            setattr(sys.modules[name], key, value)
    monkeypatch.setattr(sys, "path", list(sys.path))
    spec = importlib.util.spec_from_file_location("beamsplitter_reprocess_dag", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop("beamsplitter_job", None)
    return module


def test_dag_plans_then_launches_the_template(dag_module):
    dag = dag_module.dag
    assert dag.kwargs["dag_id"] == "beamsplitter_reprocess" and dag.kwargs["catchup"] is False
    assert dag.kwargs["max_active_runs"] == 1 and len(dag.kwargs["schedule"].split()) == 5
    plan, separate = dag.tasks
    assert plan.downstream == [separate]
    assert plan.kwargs["arguments"][:7] == job.plan_arguments(
        manifest="{{ var.json.beamsplitter.manifest }}", output="{{ var.json.beamsplitter.output }}",
        model="{{ var.json.beamsplitter.model }}")
    assert "--runner=DataflowRunner" in plan.kwargs["arguments"]
    assert plan.kwargs["image"] == "{{ var.json.beamsplitter.image }}"
    body = separate.kwargs["body"]["launchParameter"]
    assert separate.kwargs["wait_until_finished"] is True
    assert body["containerSpecGcsPath"] == "{{ var.json.beamsplitter.work }}/templates/beamsplitter.json"
    assert body["parameters"]["inference_accelerator"] == job.GPU_ACCELERATOR
    assert body["environment"]["tempLocation"] == "{{ var.json.beamsplitter.work }}/temp"
    assert separate.kwargs["append_job_name"] is False and separate.kwargs["deferrable"] is True
    # The name Airflow renders is the one every launch path derives from the prefix and model.
    rendered = jinja2.Template(body["jobName"]).render(
        beamsplitter_job_name=dag.kwargs["user_defined_macros"]["beamsplitter_job_name"],
        var={"json": {"beamsplitter": {"output": "gs://stems/catalogue/", "model": "spleeter:5stems"}}})
    assert rendered == job.job_name(output="gs://stems/catalogue", model="spleeter:5stems")
    assert JOB_NAME.match(rendered)
    used = set(re.findall(r"var\.json\.beamsplitter\.(\w+)", json.dumps([plan.kwargs, separate.kwargs])))
    assert used == VARIABLE_KEYS
    assert all(key in dag_module.__doc__ for key in VARIABLE_KEYS)


def test_the_cost_models_flops_are_the_networks():
    """The GPU estimates rest on unet_flops: counted here from the checkpoint's own kernels instead
    (2 FLOPs per weight and output position, per input position for a transposed convolution)."""
    from models.config import load_config
    from models.unet import variable_shapes

    config = load_config("spleeter:2stems")
    kernels = [(name, shape) for name, shape in variable_shapes(config).items() if name.endswith("/kernel")]
    one_instrument = kernels[:len(kernels) // len(config.instruments)]
    flops, convolutions, transposed = 0, 0, 0
    for name, shape in one_instrument:
        if name.startswith("conv2d_transpose"):
            level = 6 - transposed  # its input is at the resolution its encoder twin wrote
            transposed += 1
        elif convolutions < 6:
            convolutions += 1
            level = convolutions
        else:  # the output convolution, at full resolution
            level = 0
        flops += 2 * (config.T >> level) * (config.F >> level) * math.prod(shape)
    assert flops == cost_model.unet_flops(config.T, config.F)


def test_measured_figures_price_cpu_and_gpu_configurations(tmp_path, capsys):
    figures = {"machine": "a test", "cpu_s_per_audio_minute": {"2stems-fp32": 18.0, "2stems-bf16": 12.0},
               "host_cpu_s_per_audio_minute": {"2stems": 0.6}}
    rows = cost_model.configurations(figures, tracks=1000, mean_seconds=210.0, vcpu_price=0.056, mem_price=0.0,
                                     class_a_price=0.05, class_b_price=0.004)
    cpu = {r["precision"]: r for r in rows if r["workers"].startswith("CPU")}
    # 1000 tracks x 3.5 min x 18 CPU s / 8 vCPUs = 2.1875 worker-hours at 8 x 0.056 $/h, plus 4 uploads and 2 gets a track
    io = 1000 * (4 * 0.05 + 2 * 0.004) / 10_000
    assert cpu["fp32"]["cost"] == pytest.approx(2.1875 * 8 * 0.056 + io)
    assert cpu["bf16"]["cost"] < cpu["fp32"]["cost"]
    assert {r["workers"].split(",")[0] for r in rows if r["precision"] == "bf16"} == {"CPU", "L4"}  # no bf16 on a T4
    path = tmp_path / "figures.json"
    path.write_text(json.dumps(figures))
    assert cost_model.main(["--measured", str(path), "--tracks", "1000"]) == 0
    assert "cheapest for 2stems: " in capsys.readouterr().out
