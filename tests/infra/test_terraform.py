"""Terraform (parsed as HCL): resources, the Cloud Scheduler launch request, agreement with the Dataflow job."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from infra import common
from infra.dataflow import beamsplitter_job as job
from infra.dataflow import template
from tests.infra.conftest import INFRA, REPO, dry_run, flag, load_hcl, rejects, terraform_binary

TERRAFORM = INFRA / "terraform"


@pytest.fixture(scope="module")
def hcl() -> dict:
    """Every block of every .tf file, merged: {'variable': {...}, 'resource': {type: {name: body}}, 'locals': {...}}."""
    merged = {"variable": {}, "resource": {}, "locals": {}, "output": {}, "terraform": [], "provider": []}
    for path in sorted(TERRAFORM.glob("*.tf")):
        for kind, blocks in load_hcl(path).items():
            for block in blocks:
                if kind in ("variable", "output"):
                    merged[kind].update(block)
                elif kind == "resource":
                    for rtype, named in block.items():
                        merged["resource"].setdefault(rtype, {}).update(named)
                elif kind == "locals":
                    assert not set(block) & set(merged["locals"]), "a local defined twice"
                    merged["locals"].update(block)
                else:
                    merged[kind].append(block)
    return merged


def test_every_file_parses_and_references_are_declared(hcl):
    text = "\n".join(p.read_text() for p in TERRAFORM.glob("*.tf"))
    assert set(re.findall(r"\bvar\.(\w+)", text)) == set(hcl["variable"])
    assert set(re.findall(r"\blocal\.(\w+)", text)) <= set(hcl["locals"])
    for rtype, name in re.findall(r"\b(google_\w+)\.(\w+)\.", text):
        assert name in hcl["resource"].get(rtype, {}), f"{rtype}.{name}"
    (versions,) = hcl["terraform"]
    assert versions["required_providers"][0]["google"]["source"] == "hashicorp/google"
    assert "gcs" in versions["backend"][0]
    example = load_hcl(TERRAFORM / "terraform.tfvars.example")
    assert set(example) <= set(hcl["variable"])
    required = {name for name, body in hcl["variable"].items() if "default" not in body}
    assert required == {"project", "image", "manifest"} and required <= set(example)


def test_resources(hcl):
    r = hcl["resource"]
    assert set(r["google_storage_bucket"]) == {"work", "stems"}
    for bucket in r["google_storage_bucket"].values():
        assert bucket["uniform_bucket_level_access"] is True
    (rule,) = r["google_storage_bucket"]["work"]["lifecycle_rule"]
    assert set(rule["condition"][0]["matches_prefix"]) == {"temp/", "staging/", "beam-artifacts/"}
    assert r["google_artifact_registry_repository"]["images"]["format"] == "DOCKER"
    assert set(r["google_service_account"]) == {"worker", "scheduler"}
    assert r["google_project_iam_member"]["scheduler_dataflow"]["role"] == "roles/dataflow.developer"
    assert r["google_service_account_iam_member"]["scheduler_acts_as_worker"]["role"] == "roles/iam.serviceAccountUser"
    assert "roles/dataflow.worker" in r["google_project_iam_member"]["worker"]["for_each"]
    apis = r["google_project_service"]["apis"]["for_each"]
    for api in ("dataflow", "cloudscheduler", "artifactregistry"):
        assert f"{api}.googleapis.com" in apis


def test_scheduler_posts_the_flex_template_launch(hcl):
    scheduler = hcl["resource"]["google_cloud_scheduler_job"]["reprocess"]
    assert scheduler["schedule"] == "${var.schedule}"
    (target,) = scheduler["http_target"]
    assert target["http_method"] == "POST"
    assert target["uri"] == ("https://dataflow.googleapis.com/v1b3/projects/${var.project}/locations/${var.region}"
                             "/flexTemplates:launch")
    assert target["body"] == "${base64encode(jsonencode(local.launch_body))}"
    (token,) = target["oauth_token"]
    assert token["service_account_email"] == "${google_service_account.scheduler.email}"
    assert token["scope"].endswith("/auth/cloud-platform")


def test_launch_body_is_the_jobs_launch_request(hcl):
    """The HCL request has the fields of beamsplitter_job.launch_body, and the same folders as template.py."""
    gpu = job.parameters(manifest="m", output="o", model="p")
    ours = job.launch_body(
        job_name="x", template="t", parameters=gpu,
        environment=job.environment(service_account="s", temp_location="t", staging_location="s"))
    theirs = hcl["locals"]["launch_body"]

    def shape(value):
        return {k: shape(v) for k, v in value.items()} if isinstance(value, dict) else None

    assert shape(theirs["launchParameter"]["environment"]) == shape(ours["launchParameter"]["environment"])
    assert set(theirs["launchParameter"]) == set(ours["launchParameter"])
    launch = theirs["launchParameter"]
    locals_ = hcl["locals"]
    assert locals_["work"] == "gs://${local.work_bucket}"
    assert launch["containerSpecGcsPath"] == "${local.template_path}"
    assert locals_["template_path"] == template.template_path("${local.work}")
    assert launch["environment"]["tempLocation"] == "${local.work}/temp"
    assert launch["environment"]["stagingLocation"] == "${local.work}/staging"
    assert launch["environment"]["launcherMachineType"] == "${var.launcher_machine_type}"
    assert launch["jobName"] == "${local.job_name}"  # see test_scheduled_job_name_is_the_one_every_launcher_derives
    # the parameters: always the job's own; with an accelerator, its hint and the models per GPU machine
    assert launch["parameters"] == '${merge(local.job_parameters, var.accelerator == "" ? {} : local.gpu_parameters)}'
    cpu = job.parameters(manifest="m", output="o", model="p", accelerator=None)
    assert set(locals_["job_parameters"]) == set(cpu)
    assert set(locals_["job_parameters"]) | set(locals_["gpu_parameters"]) == set(gpu)
    assert locals_["gpu_parameters"] == {"inference_accelerator": "${var.accelerator}",
                                         "model_copies": "${tostring(var.model_copies)}"}
    assert "sdk_container_image" not in set(locals_["job_parameters"]) | set(locals_["gpu_parameters"])


@pytest.mark.parametrize("output, model", [("gs://p-beamsplitter-stems/catalogue", "spleeter:2stems"),
                                           ("gs://stems/a/b/", "spleeter:5stems-16kHz")])
def test_scheduled_job_name_is_the_one_every_launcher_derives(hcl, output, model, tmp_path):
    """Terraform's own evaluation of local.job_name (terraform console, over the variables alone) equals
    beamsplitter_job.job_name: a scheduled launch and a manual one on a prefix have one name."""
    assert hcl["locals"]["launch_body"]["launchParameter"]["jobName"] == "${local.job_name}"
    (expression,) = re.findall(r"^\s*job_name\s*=\s*(.+)$", (TERRAFORM / "scheduler.tf").read_text(), re.M)
    shutil.copy(TERRAFORM / "variables.tf", tmp_path)
    (tmp_path / "locals.tf").write_text(f'locals {{\n  output = "{output}"\n  job_name = {expression}\n}}\n')
    evaluated = subprocess.run([terraform_binary(), "console", "-var", "project=p", "-var", "image=r/b:1",
                                "-var", "manifest=gs://c/m.csv", "-var", f"model={model}"], cwd=tmp_path,
                               input="local.job_name\n", capture_output=True, text=True, timeout=120)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout.strip()) == job.job_name(output=output, model=model)


def test_terraform_writes_the_template_spec_from_its_image(hcl):
    """One tag: Terraform's `image` is the spec's launch image, and the launcher makes it the workers' image;
    the spec is what `gcloud dataflow flex-template build` writes from the same metadata file."""
    spec = hcl["locals"]["template_spec"]
    assert spec["image"] == "${var.image}"
    assert spec["sdkInfo"] == {"language": "PYTHON"}
    (metadata,) = re.fullmatch(r'\$\{jsondecode\(file\("\$\{path\.module\}/(.+)"\)\)\}', spec["metadata"]).groups()
    (build,) = dry_run("dataflow/template.py", "build", "--project", "p", "--work", "gs://p-work", "--image",
                       "r/beamsplitter:1")
    assert (TERRAFORM / metadata).resolve() == (REPO / flag(build, "--metadata-file")).resolve()
    assert flag(build, "--sdk-language") == spec["sdkInfo"]["language"]
    obj = hcl["resource"]["google_storage_bucket_object"]["template"]
    assert obj["bucket"] == "${google_storage_bucket.work.name}"
    assert obj["content"] == "${jsonencode(local.template_spec)}"
    assert template.template_path("gs://w") == "gs://w/" + obj["name"]
    scheduler = hcl["resource"]["google_cloud_scheduler_job"]["reprocess"]
    assert "${google_storage_bucket_object.template}" in scheduler["depends_on"]
    repository = hcl["resource"]["google_artifact_registry_repository"]["images"]
    assert repository["docker_config"][0]["immutable_tags"] is True  # a tag names one build
    assert hcl["output"]["image"]["value"] == "${var.image}"


def test_defaults_agree_with_the_dataflow_job(hcl):
    v = hcl["variable"]
    assert v["machine_type"]["default"] == job.CPU_MACHINE_TYPE
    assert v["accelerator"]["default"] == job.GPU_ACCELERATOR
    assert v["max_workers"]["default"] == job.MAX_WORKERS
    assert v["disk_size_gb"]["default"] == job.DISK_SIZE_GB
    assert v["experiments"]["default"] == list(job.EXPERIMENTS)
    assert v["launcher_machine_type"]["default"] == job.LAUNCHER_MACHINE_TYPE
    assert v["model_copies"]["default"] == job.MODEL_COPIES
    assert v["model"]["default"] == "spleeter:2stems"
    assert len(v["schedule"]["default"].split()) == 5


def test_image_validation_agrees_with_the_scripts(hcl):
    condition = hcl["variable"]["image"]["validation"][0]["condition"]
    pattern = re.search(r'regex\("(.+?)", var\.image\)', condition)[1].replace("\\\\", "\\")
    assert 'endswith(var.image, ":latest")' in condition
    for image in ("eu-docker.pkg.dev/p/r/beamsplitter:0.1.0-gpu", "beamsplitter@sha256:" + "a" * 64,
                  "beamsplitter", "beamsplitter:latest", "Beamsplitter:1"):
        ours = True
        try:
            common.tagged_image(image)
        except Exception:
            ours = False
        theirs = bool(re.match(pattern, image)) and not image.endswith(":latest")
        assert ours == theirs, image


def test_variables_refuse_a_gpu_on_every_worker_and_no_model(hcl):
    (experiments,) = hcl["variable"]["experiments"]["validation"]
    assert all(option in experiments["condition"] for option in job.NOT_WITH_RIGHT_FITTING)
    assert 'split("=", e)[0]' in experiments["condition"]  # worker_accelerator=type:...;count:1 included
    (copies,) = hcl["variable"]["model_copies"]["validation"]
    assert copies["condition"] == "${var.model_copies >= 1 && floor(var.model_copies) == var.model_copies}"


def test_apply_wrapper(tmp_path):
    tfvars = tmp_path / "site.tfvars"
    tfvars.write_text('project = "p"\n')
    init, plan, apply = dry_run("terraform/apply.py", "--state-bucket", "my-state", "--var-file", str(tfvars))
    for command in (init, plan, apply):
        assert command[:2] == ["terraform", "-chdir=infra/terraform"]
    assert init[2] == "init" and "-backend-config=bucket=my-state" in init and "-input=false" in init
    assert plan[2] == "plan" and f"-var-file={tfvars}" in plan and "-out=beamsplitter.tfplan" in plan
    assert apply[2:] == ["apply", "-input=false", "beamsplitter.tfplan"]
    assert len(dry_run("terraform/apply.py", "--state-bucket", "my-state", "--var-file", str(tfvars),
                       "--plan-only")) == 2
    assert "without gs://" in rejects("terraform/apply.py", "--state-bucket", "gs://my-state",
                                      "--var-file", str(tfvars))
    assert "no such file" in rejects("terraform/apply.py", "--state-bucket", "s", "--var-file", str(tmp_path / "none"))
