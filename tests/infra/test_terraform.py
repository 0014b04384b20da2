"""Terraform (parsed as HCL): resources, the Cloud Scheduler launch request, agreement with the Dataflow job."""

from __future__ import annotations

import re

import pytest

from infra import common
from infra.dataflow import beamsplitter_job as job
from infra.dataflow import template
from tests.infra.conftest import INFRA, dry_run, load_hcl, rejects

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
    ours = job.launch_body(
        job_name="x", template="t",
        parameters=job.parameters(manifest="m", output="o", model="p", image="i", checkpoint=None),
        environment=job.environment(service_account="s", temp_location="t", staging_location="s"))
    theirs = hcl["locals"]["launch_body"]

    def shape(value):
        return {k: shape(v) for k, v in value.items()} if isinstance(value, dict) else None

    assert shape(theirs) == shape(ours)
    launch = theirs["launchParameter"]
    locals_ = hcl["locals"]
    assert locals_["work"] == "gs://${local.work_bucket}"
    assert launch["containerSpecGcsPath"] == "${local.template_path}"
    assert locals_["template_path"] == template.template_path("${local.work}")
    assert launch["environment"]["tempLocation"] == "${local.work}/temp"
    assert launch["environment"]["stagingLocation"] == "${local.work}/staging"
    assert launch["parameters"]["sdk_container_image"] == "${var.image}"
    assert launch["parameters"]["inference_accelerator"] == "${var.accelerator}"
    assert re.match(r"^[a-z]([-a-z0-9]*[a-z0-9])?$", launch["jobName"].replace("${var.name}",
                                                                                hcl["variable"]["name"]["default"]))


def test_defaults_agree_with_the_dataflow_job(hcl):
    v = hcl["variable"]
    assert v["machine_type"]["default"] == job.CPU_MACHINE_TYPE
    assert v["accelerator"]["default"] == job.GPU_ACCELERATOR
    assert v["max_workers"]["default"] == job.MAX_WORKERS
    assert v["disk_size_gb"]["default"] == job.DISK_SIZE_GB
    assert v["experiments"]["default"] == list(job.EXPERIMENTS)
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
            common.pinned_image(image)
        except Exception:
            ours = False
        theirs = bool(re.match(pattern, image)) and not image.endswith(":latest")
        assert ours == theirs, image


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
