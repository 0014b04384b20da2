"""Terraform (parsed as HCL): resources, the Cloud Scheduler launch request, agreement with the Dataflow job."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from apache_beam.options.pipeline_options import PipelineOptions

from infra import common
from infra.dataflow import beamsplitter_job as job
from infra.dataflow import template
from pipeline.options import BeamsplitterOptions
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
    assert set(r["google_storage_bucket"]) == {"work", "stems", "scratch"}
    for bucket in r["google_storage_bucket"].values():
        assert bucket["uniform_bucket_level_access"] is True
    (rule,) = r["google_storage_bucket"]["work"]["lifecycle_rule"]
    assert set(rule["condition"][0]["matches_prefix"]) == {"temp/", "staging/", "beam-artifacts/"}
    assert r["google_artifact_registry_repository"]["images"]["format"] == "DOCKER"
    assert set(r["google_service_account"]) == {"worker", "scheduler", "airflow"}
    assert r["google_service_account_iam_member"]["scheduler_acts_as_worker"]["role"] == "roles/iam.serviceAccountUser"
    assert "roles/dataflow.worker" in r["google_project_iam_member"]["worker"]["for_each"]
    apis = r["google_project_service"]["apis"]["for_each"]
    for api in ("dataflow", "cloudscheduler", "artifactregistry"):
        assert f"{api}.googleapis.com" in apis


def console(tmp_path, expressions: dict[str, str], query: str, **variables) -> object:
    """``query`` as Terraform evaluates it, over variables.tf and the ``expressions`` given as locals."""
    shutil.copy(TERRAFORM / "variables.tf", tmp_path)
    body = "".join(f"  {name} = {value}\n" for name, value in expressions.items())
    (tmp_path / "locals.tf").write_text(f"locals {{\n{body}}}\n")
    given = {"project": "p", "image": "r/b:1", "manifest": "gs://c/m.csv", **variables}
    evaluated = subprocess.run([terraform_binary(), "console", *(a for k, v in given.items() for a in ("-var", f"{k}={v}"))],
                               cwd=tmp_path, input=query + "\n", capture_output=True, text=True, timeout=120)
    assert evaluated.returncode == 0, evaluated.stderr
    return json.loads(evaluated.stdout.strip())


def local_expressions(*names: str) -> dict[str, str]:
    """The text of each of the ``names`` locals, as main.tf and scheduler.tf write them."""
    text = "\n".join((TERRAFORM / f).read_text() for f in ("main.tf", "scheduler.tf"))
    found = {}
    for name in names:
        match = re.search(rf"^\s*{name}\s*=\s*(.+?)\n(?=\s*\w+\s*=|\s*#|\}})", text, re.M | re.S)
        found[name] = match[1].strip()
    return found


@pytest.mark.parametrize("output, bucket, allowed, refused", [
    ("gs://stems/catalogue", "stems", "projects/_/buckets/stems/objects/catalogue/stems/4stems/a/vocals.wav",
     "projects/_/buckets/stems/objects/catalogue-old/x"),
    ("gs://stems/a/b/", "stems", "projects/_/buckets/stems/objects/a/b/metadata/x.parquet",
     "projects/_/buckets/stems/objects/a/x"),
    ("gs://whole-bucket", "whole-bucket", "projects/_/buckets/whole-bucket/objects/stems/x", None),
])
def test_workers_write_only_under_the_output_prefix(hcl, tmp_path, output, bucket, allowed, refused):
    worker = hcl["resource"]["google_storage_bucket_iam_member"]["worker_output"]
    assert worker["bucket"] == "${local.output_bucket}" and worker["role"] == "roles/storage.objectAdmin"
    assert worker["condition"][0]["expression"] == "${local.output_condition}"
    names = local_expressions("output_bucket", "output_path", "output_condition")
    assert console(tmp_path, {"output": f'"{output}"', **names}, "local.output_bucket") == bucket
    condition = console(tmp_path, {"output": f'"{output}"', **names}, "local.output_condition")
    # Cloud Storage's condition language on these two forms: equality, or startsWith of a string literal.
    clauses = re.fullmatch(r'resource\.name == "([^"]+)" \|\| resource\.name\.startsWith\("([^"]*)"\)', condition)
    assert clauses, condition
    bucket_name, prefix = clauses.groups()
    assert bucket_name == f"projects/_/buckets/{bucket}"  # listing is checked on the bucket
    assert allowed.startswith(prefix)
    assert refused is None or not refused.startswith(prefix)
    assert "worker_stems" not in hcl["resource"]["google_storage_bucket_iam_member"]


def test_launchers_may_only_create_and_read_jobs(hcl):
    r = hcl["resource"]
    role = r["google_project_iam_custom_role"]["launcher"]
    assert set(role["permissions"]) == {"dataflow.jobs.create", "dataflow.jobs.get", "dataflow.messages.list"}
    launcher = "${google_project_iam_custom_role.launcher.id}"
    assert r["google_project_iam_member"]["scheduler_dataflow"]["role"] == launcher
    assert r["google_project_iam_member"]["airflow_launches"]["role"] == launcher
    granted = [m["role"] for m in r["google_project_iam_member"].values()]
    assert not any(role in granted for role in ("roles/dataflow.developer", "roles/dataflow.admin", "roles/editor"))
    # Airflow's account: only where airflow_namespace is set, bound to its Kubernetes service account
    airflow = r["google_service_account"]["airflow"]
    assert airflow["for_each"] == "${toset(local.airflow)}"
    assert hcl["locals"]["airflow"] == '${var.airflow_namespace == "" ? [] : ["airflow"]}'
    binding = r["google_service_account_iam_member"]["airflow_workload_identity"]
    assert binding["member"] == ("serviceAccount:${var.project}.svc.id.goog[${var.airflow_namespace}/"
                                 "${var.airflow_service_account}]")
    assert r["google_service_account_iam_member"]["airflow_acts_as_worker"]["role"] == "roles/iam.serviceAccountUser"


def test_alert_policies_cover_failed_stuck_long_runs_launches_and_the_failure_share(hcl):
    policies = hcl["resource"]["google_monitoring_alert_policy"]
    assert set(policies) == {"job_failed", "job_too_long", "job_stuck", "failure_fraction", "launch_failed"}
    for policy in policies.values():
        assert policy["notification_channels"] == "${local.notification_channels}"
    assert hcl["locals"]["notification_channels"] == (
        "${concat(var.notification_channels, google_monitoring_notification_channel.email[*].id)}")

    def condition(name, kind="condition_threshold"):
        (c,) = policies[name]["conditions"]
        return c[kind][0]

    # every policy watches this deployment's jobs, whose names beamsplitter_job.job_name makes
    assert hcl["locals"]["our_jobs"] == ('resource.type = "dataflow_job" AND '
                                         'resource.labels.job_name = starts_with("${var.name}-")')
    assert job.job_name(output="gs://b/p", model="spleeter:2stems").startswith("beamsplitter-")
    for name in ("job_failed", "job_too_long", "job_stuck"):
        assert condition(name)["filter"].endswith(" AND ${local.our_jobs}"), name
    assert condition("job_failed")["filter"].startswith('metric.type = "dataflow.googleapis.com/job/is_failed"')
    assert condition("job_too_long")["threshold_value"] == "${var.max_run_hours * 3600}"
    stuck = condition("job_stuck")
    assert 'metric.labels.metric_name = "tracks_done"' in stuck["filter"]
    assert stuck["duration"] == "${var.stuck_hours * 3600}s" and stuck["comparison"] == "COMPARISON_LT"
    promql = condition("failure_fraction", "condition_prometheus_query_language")["query"]
    assert 'metric_name=~\\"tracks_failed[.].*|tracks_done\\"' in promql and "> ${var.max_failed_fraction}" in promql
    # the counters the pipeline reports under those names
    assert 'Metrics.counter("beamsplitter", "tracks_done")' in (REPO / "transforms" / "reassemble.py").read_text()
    assert 'f"tracks_failed.{failure.stage}"' in (REPO / "pipeline" / "run.py").read_text()
    log = condition("launch_failed", "condition_matched_log")
    assert "cloud_scheduler_job" in log["filter"] and "${google_cloud_scheduler_job.reprocess.name}" in log["filter"]
    assert hcl["variable"]["alert_email"]["default"] == "" and hcl["variable"]["notification_channels"]["default"] == []


def test_storage_bills_once(hcl):
    """Scratch lives in a bucket that keeps no deleted objects and deletes what a dead run left; the stems
    bucket's soft delete is a chosen variable, not Cloud Storage's silent default."""
    buckets = hcl["resource"]["google_storage_bucket"]
    scratch = buckets["scratch"]
    assert scratch["soft_delete_policy"] == [{"retention_duration_seconds": 0}]
    (rule,) = scratch["lifecycle_rule"]
    assert rule["condition"] == [{"age": 1}] and rule["action"] == [{"type": "Delete"}]
    assert buckets["stems"]["soft_delete_policy"] == [
        {"retention_duration_seconds": "${var.stems_soft_delete_days * 86400}"}]
    assert hcl["variable"]["stems_soft_delete_days"]["default"] == 7
    # Scheduled runs send the scratch bucket as --scratch_location, a job option the pipeline knows.
    assert hcl["locals"]["job_parameters"]["scratch_location"] == "gs://${google_storage_bucket.scratch.name}/scratch"
    parsed = PipelineOptions(["--scratch_location=gs://b/scratch"]).view_as(BeamsplitterOptions)
    assert parsed.scratch_location == "gs://b/scratch"


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
    gpu = job.parameters(manifest="m", output="o", model="p", scratch_location="s")
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
    cpu = job.parameters(manifest="m", output="o", model="p", accelerator=None, scratch_location="s")
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
