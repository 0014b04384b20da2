"""Flink on Kubernetes: the manifests (structure, pinned images, consistent names and ports) and deploy.py."""

from __future__ import annotations

import re
import string

import jsonschema
import pytest
from apache_beam.options.pipeline_options import FlinkRunnerOptions, PipelineOptions

from infra import common
from infra.flink import deploy
from pipeline.options import BeamsplitterOptions  # noqa: F401  (registers the job's options with Beam)
from tests import services
from tests.infra.conftest import INFRA, dry_run, flag, load_yaml, rejects

FLINK = INFRA / "flink"
IMAGE = "europe-west4-docker.pkg.dev/proj/beamsplitter/beamsplitter:0.1.0-cpu"
SA = "beamsplitter-worker@proj.iam.gserviceaccount.com"
ARGS = ["--image", IMAGE, "--artifacts-dir", "gs://proj-beamsplitter-work/beam-artifacts",
        "--gcp-service-account", SA, "--manifest", "gs://catalogue/manifest.csv",
        "--output", "gs://proj-beamsplitter-stems/catalogue", "-p", "spleeter:4stems", "--schedule", "30 2 * * *",
        "--parallelism", "32", "--namespace", "music"]
DNS_NAME = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
PINNED = r"^[a-z0-9][a-z0-9._/:-]*[a-z0-9](@sha256:[0-9a-f]{64}|:(?!latest$)[A-Za-z0-9_][A-Za-z0-9_.-]*)$"

CONTAINER = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": DNS_NAME},
        "image": {"type": "string", "pattern": PINNED},
        "args": {"type": "array", "items": {"type": "string"}},
        "ports": {"type": "array", "items": {
            "type": "object", "required": ["name", "containerPort"], "additionalProperties": False,
            "properties": {"name": {"type": "string", "maxLength": 15, "pattern": DNS_NAME},
                           "containerPort": {"type": "integer", "minimum": 1, "maximum": 65535}}}},
    },
}
POD_SPEC = {"type": "object", "required": ["containers"],
            "properties": {"containers": {"type": "array", "minItems": 1, "items": CONTAINER},
                           "initContainers": {"type": "array", "items": CONTAINER},
                           "serviceAccountName": {"type": "string", "pattern": DNS_NAME},
                           "restartPolicy": {"enum": ["Always", "OnFailure", "Never"]}}}
RESOURCE = {"type": "object", "required": ["memory", "cpu"], "additionalProperties": False,
            "properties": {"memory": {"type": "string", "pattern": r"^\d+(m|Mi|Gi|g)$"},
                           "cpu": {"type": "number", "exclusiveMinimum": 0}}}
SCHEMAS = {
    "ServiceAccount": {"type": "object"},
    "FlinkDeployment": {
        "type": "object",
        "required": ["spec"],
        "properties": {"apiVersion": {"const": "flink.apache.org/v1beta1"}, "spec": {
            "type": "object",
            "required": ["image", "flinkVersion", "serviceAccount", "jobManager", "taskManager"],
            "properties": {
                "image": {"type": "string", "pattern": PINNED},
                "flinkVersion": {"type": "string", "pattern": r"^v\d+_\d+$"},
                "serviceAccount": {"type": "string", "pattern": DNS_NAME},
                "flinkConfiguration": {"type": "object", "additionalProperties": {"type": "string"}},
                "jobManager": {"type": "object", "required": ["resource"], "properties": {"resource": RESOURCE}},
                "taskManager": {"type": "object", "required": ["resource", "podTemplate"],
                                "properties": {"resource": RESOURCE, "podTemplate": {
                                    "type": "object", "required": ["spec"], "properties": {"spec": POD_SPEC}}}},
                "job": False,  # a session cluster: jobs come from the Beam job server
            }}},
    },
    "Deployment": {
        "type": "object",
        "required": ["spec"],
        "properties": {"apiVersion": {"const": "apps/v1"}, "spec": {
            "type": "object", "required": ["selector", "template"],
            "properties": {"replicas": {"type": "integer", "minimum": 1},
                           "template": {"type": "object", "required": ["metadata", "spec"],
                                        "properties": {"spec": POD_SPEC}}}}}},
    "Service": {
        "type": "object",
        "required": ["spec"],
        "properties": {"apiVersion": {"const": "v1"}, "spec": {
            "type": "object", "required": ["selector", "ports"],
            "properties": {"ports": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["name", "port", "targetPort"]}}}}}},
    "CronJob": {
        "type": "object",
        "required": ["spec"],
        "properties": {"apiVersion": {"const": "batch/v1"}, "spec": {
            "type": "object", "required": ["schedule", "jobTemplate"],
            "properties": {"schedule": {"type": "string", "pattern": r"^\S+( \S+){4}$"},
                           "concurrencyPolicy": {"const": "Forbid"},
                           "jobTemplate": {"type": "object", "properties": {"spec": {
                               "type": "object", "properties": {"template": {
                                   "type": "object", "properties": {"spec": POD_SPEC}}}}}}}}}},
}
BASE = {"type": "object", "required": ["apiVersion", "kind", "metadata"],
        "properties": {"apiVersion": {"type": "string"}, "kind": {"enum": sorted(SCHEMAS)},
                       "metadata": {"type": "object", "required": ["name"],
                                    "properties": {"name": {"type": "string", "pattern": DNS_NAME}}}}}


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """deploy.py's commands and the manifests it rendered."""
    folder = tmp_path_factory.mktemp("rendered")
    commands = dry_run("flink/deploy.py", *ARGS, "--render-dir", str(folder), "--run-now")
    docs = {}
    for name in deploy.MANIFESTS:
        assert "${" not in (folder / name).read_text()
        for doc in load_yaml(folder / name):
            docs[doc["kind"]] = doc
    return commands, folder, docs


def containers(pod_spec: dict) -> dict[str, dict]:
    return {c["name"]: c for c in pod_spec.get("initContainers", []) + pod_spec["containers"]}


def options(args: list[str]) -> dict[str, str]:
    return dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)


def test_templates_have_exactly_the_placeholders_deploy_fills():
    names = set()
    for name in deploy.MANIFESTS:
        text = (FLINK / name).read_text()
        names |= {m["named"] or m["braced"] for m in string.Template.pattern.finditer(text)
                  if m["named"] or m["braced"]}
    args = deploy.parse(ARGS)
    assert names == set(deploy.values(args))


def test_every_manifest_is_well_formed(deployed):
    _, _, docs = deployed
    assert set(docs) == set(SCHEMAS)
    for kind, doc in docs.items():
        jsonschema.validate(doc, BASE)
        jsonschema.validate(doc, SCHEMAS[kind])
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "beamsplitter", kind


def test_versions_are_pinned_and_agree(deployed):
    _, _, docs = deployed
    flink = docs["FlinkDeployment"]["spec"]
    assert common.FLINK_VERSION in FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS  # Beam 2.77 has a job server for it
    assert common.FLINK_VERSION == services.FLINK_VERSION  # the Flink the pipeline's own Flink tests run
    assert flink["image"] == common.FLINK_IMAGE and flink["image"].startswith(f"flink:{common.FLINK_VERSION}.")
    assert flink["flinkVersion"] == "v" + common.FLINK_VERSION.replace(".", "_")
    (server,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert server["image"] == common.BEAM_JOB_SERVER_IMAGE
    assert server["image"] == f"apache/beam_flink{common.FLINK_VERSION}_job_server:{common.BEAM_VERSION}"


def test_task_managers_run_the_sdk_worker_pool(deployed):
    _, _, docs = deployed
    spec = docs["FlinkDeployment"]["spec"]
    pod = containers(spec["taskManager"]["podTemplate"]["spec"])
    assert set(pod) == {"flink-main-container", "beam-worker-pool"}
    pool = pod["beam-worker-pool"]
    assert pool["image"] == IMAGE and pool["args"] == ["--worker_pool"]
    assert [p["containerPort"] for p in pool["ports"]] == [50000]
    assert spec["serviceAccount"] == "flink"


def test_job_server_reaches_the_cluster_and_is_reachable(deployed):
    _, _, docs = deployed
    deployment, service = docs["Deployment"], docs["Service"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    args = options(server["args"])
    rest = f"{docs['FlinkDeployment']['metadata']['name']}-rest:8081"  # the operator's REST service
    assert args["flink-master"] == rest
    assert args["job-host"] == "0.0.0.0"
    assert args["artifacts-dir"] == "gs://proj-beamsplitter-work/beam-artifacts"
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert ports == {"job": int(args["job-port"]), "artifact": int(args["artifact-port"])}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in ports and port["port"] == ports[port["targetPort"]]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]


def test_cronjob_plans_then_runs_through_the_job_server(deployed):
    _, _, docs = deployed
    cron = docs["CronJob"]["spec"]
    assert cron["schedule"] == "30 2 * * *"
    pod_spec = cron["jobTemplate"]["spec"]["template"]["spec"]
    assert pod_spec["restartPolicy"] == "Never"
    assert pod_spec["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    assert [c["name"] for c in pod_spec["initContainers"]] == ["plan"]
    pod = containers(pod_spec)
    plan, run = pod["plan"], pod["run"]
    assert plan["image"] == run["image"] == IMAGE
    assert plan["args"][0] == "plan" and run["args"][0] == "run"
    assert plan["args"][1:] == run["args"][1:]  # the same catalogue, model and cluster
    given = options(run["args"])
    assert given["manifest"] == "gs://catalogue/manifest.csv" and given["model"] == "spleeter:4stems"
    assert given["output"] == "gs://proj-beamsplitter-stems/catalogue" and given["parallelism"] == "32"
    service = {p["name"]: p["port"] for p in docs["Service"]["spec"]["ports"]}
    name = docs["Service"]["metadata"]["name"]
    assert given["runner"] == "PortableRunner"
    assert given["job_endpoint"] == f"{name}:{service['job']}"
    assert given["artifact_endpoint"] == f"{name}:{service['artifact']}"
    pool = containers(docs["FlinkDeployment"]["spec"]["taskManager"]["podTemplate"]["spec"])["beam-worker-pool"]
    assert given["environment_type"] == "EXTERNAL"
    assert given["environment_config"] == f"localhost:{pool['ports'][0]['containerPort']}"
    slots = docs["FlinkDeployment"]["spec"]["flinkConfiguration"]["taskmanager.numberOfTaskSlots"]
    assert given["sdk_worker_parallelism"] == slots
    parsed = PipelineOptions(run["args"][1:]).get_all_options()  # Beam understands every option
    assert parsed["job_endpoint"] == given["job_endpoint"] and parsed["parallelism"] == 32
    assert parsed["model"] == "spleeter:4stems"


def test_service_account_is_bound_to_the_gcp_one(deployed):
    commands, _, docs = deployed
    assert docs["ServiceAccount"]["metadata"]["annotations"] == {deploy.WORKLOAD_IDENTITY: SA}
    annotate = commands[1]
    assert annotate[:2] == ["kubectl", "annotate"] and annotate[-1] == "--overwrite"
    assert f"{deploy.WORKLOAD_IDENTITY}={SA}" in annotate
    assert annotate[annotate.index("serviceaccount") + 1] == docs["FlinkDeployment"]["spec"]["serviceAccount"]


def test_deploy_commands(deployed):
    commands, folder, docs = deployed
    apply, annotate, create = commands
    assert apply[:2] == ["kubectl", "apply"]
    assert [apply[i + 1] for i, a in enumerate(apply) if a == "-f"] == [str(folder / n) for n in deploy.MANIFESTS]
    assert {flag(c, "--namespace") for c in commands} == {"music"}
    assert create[:2] == ["kubectl", "create"] and create[create.index("job") + 1].startswith("beamsplitter-reprocess-")
    assert flag(create, "--from") == f"cronjob/{docs['CronJob']['metadata']['name']}"
    assert re.match(DNS_NAME, create[create.index("job") + 1]) and len(create[create.index("job") + 1]) <= 52
    without = dry_run("flink/deploy.py", *ARGS, "--render-dir", str(folder))
    assert len(without) == 2  # no run unless --run-now


def test_deploy_refuses_bad_values(tmp_path):
    def bad(option, value):
        args = list(ARGS)
        args[args.index(option) + 1] = value
        return rejects("flink/deploy.py", *args, "--render-dir", str(tmp_path))

    assert "not latest" in bad("--image", "beamsplitter:latest")
    assert "quote" in bad("--manifest", 'gs://c/"m".csv')
    assert "cron" in bad("--schedule", "daily")
    assert "gs://" in bad("--artifacts-dir", "/tmp/artifacts")
