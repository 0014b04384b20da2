"""Flink on Kubernetes: the manifests (structure, pinned images, consistent names and ports) and deploy.py."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import string
import subprocess
import time
import urllib.request
import zipfile
from pathlib import Path

import apache_beam as beam
import jsonschema
import pytest
from apache_beam.options.pipeline_options import FlinkRunnerOptions, PipelineOptions

from infra import common
from infra.flink import deploy
from pipeline.options import BeamsplitterOptions  # noqa: F401  (registers the job's options with Beam)
from tests import services
from tests.infra.conftest import INFRA, REPO, dry_run, flag, load_yaml, rejects

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
    assert flink["image"].startswith(f"flink:{common.FLINK_VERSION}.")
    assert flink["flinkVersion"] == "v" + common.FLINK_VERSION.replace(".", "_")
    (server,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
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


def test_flink_runs_with_flinks_own_java17_options(deployed):
    """The operator's configuration replaces the image's, where Flink keeps its Java 17 options."""
    _, _, docs = deployed
    configuration = docs["FlinkDeployment"]["spec"]["flinkConfiguration"]
    assert configuration["env.java.opts.all"].split() == services.flink_java17_opts()
    opts = services.flink_java17_opts()
    assert "--add-opens=java.base/java.lang=ALL-UNNAMED" in opts and len(opts) == len(set(opts)) == 20
    assert all(re.match(r"^--add-(opens|exports)=[a-z.]+/[a-z0-9.]+=ALL-UNNAMED$", o) for o in opts)
    # The TaskManager's gRPC data plane to the SDK workers needs direct memory of its own.
    assert re.match(r"^\d+m$", configuration["taskmanager.memory.task.off-heap.size"])
    # An OutOfMemoryError in a gRPC thread fails the job instead of leaving it waiting forever.
    assert configuration["cluster.uncaught-exception-handling"] == "FAIL"


def test_launcher_jar_carries_the_java17_options(tmp_path):
    """scripts/fetch-flink-jobserver's launcher: Add-Opens/Add-Exports for `java -jar`, rewritten only on change."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "flink-runtime-1.19.0.jar").write_bytes(b"")
    version = re.search(r"^BEAM_VERSION=(\S+)", (REPO / "scripts" / "fetch-flink-jobserver").read_text(), re.M)[1]
    (tmp_path / f".complete-{version}").touch()
    env = dict(os.environ, BEAMSPLITTER_FLINK_DIR=str(tmp_path))
    fetch = [str(REPO / "scripts" / "fetch-flink-jobserver")]
    jar = Path(subprocess.run(fetch, env=env, capture_output=True, text=True, check=True).stdout.strip())
    with zipfile.ZipFile(jar) as z:
        manifest = z.read("META-INF/MANIFEST.MF").decode().replace("\r\n ", "")
    headers = dict(line.split(": ", 1) for line in manifest.splitlines() if ": " in line)
    assert headers["Main-Class"] == "org.apache.beam.runners.flink.FlinkJobServerDriver"
    assert headers["Class-Path"] == "lib/flink-runtime-1.19.0.jar"
    opts = services.flink_java17_opts()
    assert headers["Add-Opens"].split() == [o.split("=")[1] for o in opts if o.startswith("--add-opens=")]
    assert headers["Add-Exports"].split() == [o.split("=")[1] for o in opts if o.startswith("--add-exports=")]
    before = jar.stat().st_mtime_ns
    time.sleep(0.01)
    assert subprocess.run(fetch, env=env, capture_output=True, text=True, check=True).stdout.strip() == str(jar)
    assert jar.stat().st_mtime_ns == before  # nothing changed, nothing written


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
    # SDK workers kept from one stage to the next, as the local worker pool's (tests/services.py).
    assert given["environment_cache_millis"] == str(services.ENVIRONMENT_CACHE_MILLIS)
    parsed = PipelineOptions(run["args"][1:]).get_all_options()  # Beam understands every option
    assert parsed["job_endpoint"] == given["job_endpoint"] and parsed["parallelism"] == 32
    assert parsed["model"] == "spleeter:4stems"


def test_cronjob_reruns_only_what_a_rerun_can_mend(deployed):
    """Exit statuses 1-3 are verdicts (some or too many tracks failed, a bad option): never rerun; a lost pod
    or a job the runner failed (4) is retried once; a hung run is stopped before it holds every later one."""
    from pipeline.run import JobFailed

    _, _, docs = deployed
    cron = docs["CronJob"]["spec"]
    assert cron["concurrencyPolicy"] == "Forbid"
    job_spec = cron["jobTemplate"]["spec"]
    assert job_spec["backoffLimit"] == 1 and job_spec["activeDeadlineSeconds"] == 24 * 3600
    fail, ignore = job_spec["podFailurePolicy"]["rules"]
    assert fail["action"] == "FailJob" and fail["onExitCodes"] == {"operator": "In", "values": [1, 2, 3]}
    assert JobFailed.exit_status == 4 and JobFailed.exit_status not in fail["onExitCodes"]["values"]
    assert ignore == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
    pod = containers(job_spec["template"]["spec"])
    assert options(pod["run"]["args"])["max_failed_fraction"] == "0.05"
    assert PipelineOptions(pod["run"]["args"][1:]).view_as(BeamsplitterOptions).max_failed_fraction == 0.05
    flink = docs["FlinkDeployment"]["spec"]["flinkConfiguration"]
    assert flink["restart-strategy.type"] == "exponential-delay"
    assert int(flink["restart-strategy.exponential-delay.attempts-before-reset-backoff"]) >= 3
    assert "high-availability.type" not in flink  # only when asked for


def test_deploy_sets_high_availability_and_limits_when_asked(tmp_path):
    dry_run("flink/deploy.py", *ARGS, "--render-dir", str(tmp_path), "--ha-storage-dir", "gs://proj-work/flink-ha",
            "--max-failed-fraction", "0.2", "--deadline-hours", "6")
    (flink,) = [d for d in load_yaml(tmp_path / "flink-session.yaml") if d["kind"] == "FlinkDeployment"]
    configuration = flink["spec"]["flinkConfiguration"]
    assert configuration["high-availability.type"] == "kubernetes"
    assert configuration["high-availability.storageDir"] == "gs://proj-work/flink-ha"
    (cron,) = load_yaml(tmp_path / "reprocess-cronjob.yaml")
    assert cron["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 6 * 3600
    assert "--max_failed_fraction=0.2" in containers(cron["spec"]["jobTemplate"]["spec"]["template"]["spec"])["run"]["args"]
    args = list(ARGS) + ["--render-dir", str(tmp_path)]
    assert "share from 0 to 1" in rejects("flink/deploy.py", *args, "--max-failed-fraction", "5")
    assert "gs://" in rejects("flink/deploy.py", *args, "--ha-storage-dir", "/tmp/ha")


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


# --- the local cluster: tests/services.py's worker pool, scripts/flink-cluster ----------------


def write_lines(options: list[str], path: Path) -> None:
    """A tiny pipeline, its Python steps in the SDK workers: three lines into ``path``."""
    with beam.Pipeline(options=PipelineOptions(options)) as pipeline:
        _ = (pipeline
             | beam.Create(["a", "b", "c"])
             | beam.Map(lambda line, pid=os.getpid: f"{line} {pid()}")
             | beam.io.WriteToText(str(path), shard_name_template=""))


@pytest.mark.slow  # a job server JVM and a worker pool
def test_worker_pool_runs_the_sdk_workers_and_measures_them(flink_jar, tmp_path):
    with services.flink_job_server(flink_jar) as server, services.worker_pool() as pool:
        options = server.pipeline_options(worker_pool=pool)
        assert f"--environment_config={pool.endpoint}" in options and "--environment_type=EXTERNAL" in options
        write_lines(options, tmp_path / "out.txt")
        peak = pool.peak_rss_bytes()
        assert pool.log.exists()
    lines = (tmp_path / "out.txt").read_text().split()
    assert lines[::2] == ["a", "b", "c"]
    assert int(lines[1]) != os.getpid()  # written by an SDK worker process, not by this one
    assert 50 * 2**20 < peak < 4 * 2**30  # a Python process with Beam imported


def _gone(pid: int) -> bool:
    """No such process, or only its zombie (whoever adopted it may not reap it at once)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


def _port_open(endpoint: str) -> bool:
    host, port = endpoint.rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, int(port))) == 0


@pytest.mark.slow  # a Flink cluster, its job server and a worker pool, by the script
def test_flink_cluster_script_starts_runs_a_job_and_stops(flink_jar, tmp_path):
    """scripts/flink-cluster: start in the background, the options it prints run a job; a cluster that lost its
    TaskManager is unhealthy, and start starts it anew; stop ends everything and keeps the logs."""
    script = str(REPO / "scripts" / "flink-cluster")
    env = dict(os.environ, BEAMSPLITTER_FLINK_CLUSTER_DIR=str(tmp_path / "state"))

    def call(*args, timeout=240):
        return subprocess.run([script, *args], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=timeout)

    assert call("status").returncode == 3
    started = call("start", "--slots", "1")
    assert started.returncode == 0, started.stderr[-3000:]
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    try:
        assert "--job_endpoint=" + state["job_endpoint"] in started.stdout
        printed = started.stdout.split(" run --manifest MANIFEST --output OUTPUT ", 1)[1].split()
        assert printed == state["options"]
        assert PipelineOptions(printed).get_all_options()["environment_type"] == "EXTERNAL"
        assert state["cwd"] == str(tmp_path)
        with urllib.request.urlopen(state["rest_url"] + "/overview", timeout=5) as response:
            assert json.loads(response.read())["slots-total"] == 1
        again = call("start")  # already running: says so, starts nothing
        assert again.returncode == 0 and json.loads((tmp_path / "state" / "state.json").read_text()) == state
        assert call("status").returncode == 0
        assert call("options").stdout.split() == printed
        # The printed options, and (as the tests' own jobs do) no upload of the cluster's jars.
        no_upload = [o for o in services.FlinkJobServer(state["job_endpoint"], state["flink_master"], flink_jar,
                                                         Path()).pipeline_options() if "detector" in o]
        write_lines(printed + no_upload, Path("relative-out.txt"))  # relative: the workers run in the cwd
        assert (tmp_path / "relative-out.txt").read_text().split()[::2] == ["a", "b", "c"]

        # The TaskManager dies: status says the cluster is unhealthy and what is missing.
        os.kill(state["pids"]["taskmanager"], signal.SIGKILL)
        unhealthy = call("status")
        assert unhealthy.returncode == 1, unhealthy.stdout
        assert f"its Flink TaskManager (process {state['pids']['taskmanager']}) is gone" in unhealthy.stdout
        # start stops what is left of it, keeping its logs, and starts it anew.
        repaired = call("start", "--slots", "1")
        assert repaired.returncode == 0, repaired.stderr[-3000:]
        assert (f"the running cluster (process {state['pid']}) is unhealthy: its Flink TaskManager" in repaired.stderr
                and "stopping what is left of it and starting anew" in repaired.stderr)
        assert f"stopped; its logs are in {state['log_dir']}/" in repaired.stderr
        assert _gone(state["pid"]) and all(_gone(pid) for pid in state["pids"].values())
        first, state = state, json.loads((tmp_path / "state" / "state.json").read_text())
        assert state["pid"] != first["pid"] and state["log_dir"] != first["log_dir"]
        assert call("status").returncode == 0
        write_lines(state["options"] + no_upload, Path("again.txt"))
        assert (tmp_path / "again.txt").read_text().split()[::2] == ["a", "b", "c"]
    finally:
        stopped = call("stop", timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == f"flink-cluster: stopped; its logs are in {state['log_dir']}/"
    assert not (tmp_path / "state" / "state.json").exists()
    assert _gone(state["pid"]) and all(_gone(pid) for pid in state["pids"].values())
    for endpoint in (state["flink_master"], state["job_endpoint"], state["worker_pool"]):
        assert not _port_open(endpoint), endpoint
    assert call("status").returncode == 3 and call("options").returncode == 3
    # Both clusters' logs stay for a post-mortem, each start's in a folder of its own.
    for kept in (first, state):
        logs = Path(kept["log_dir"])
        assert logs.parent == tmp_path / "state" / "logs"
        for name in ("jobmanager.log", "taskmanager.log", "job-server.log", "worker-pool.log", "flink-cluster.log"):
            assert (logs / name).stat().st_size > 0, logs / name
    assert "Beam worker pool listening" in (Path(state["log_dir"]) / "worker-pool.log").read_text()
