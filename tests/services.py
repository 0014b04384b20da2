"""Real services for the tests, started on loopback and always stopped.

Plain context managers (no pytest in here; conftest.py wraps them as fixtures):

* ``gcs_emulator()``: gcp-storage-emulator in memory, with one bucket; sets
  ``STORAGE_EMULATOR_HOST`` so Beam's gs:// filesystem talks to it;
* ``fake_gcs_server()``: fake-gcs-server (Go) likewise; unlike gcp-storage-emulator it
  honours ``ifGenerationMatch`` on uploads, but it does not answer the batch requests
  with which Beam's gcsio renames and deletes, so catalogue jobs run on the former;
* ``held_writes(upstream)``: an HTTP proxy to a store that holds writes back on demand
  (a store answering late, a client paused with its request under way);
* ``flink_cluster(jar)``: a standalone Flink session cluster (a JobManager and
  a TaskManager process); its ``.master`` goes to ``--flink_master``;
* ``flink_job_server(jar, master)``: one Beam Flink job server for many
  pipelines (a FlinkRunner pipeline otherwise starts a job server JVM of its
  own, which lives until this process exits);
* ``s3_server(bucket)``: moto's S3 server, for Beam's s3:// filesystem;
* ``worker_pool()``: a Beam SDK worker pool, SDK workers in processes of their
  own (the EXTERNAL environment infra/flink deploys), with their peak memory.

scripts/flink-cluster runs the last three for a user, until stopped.

Beam options: ``DIRECT_RUNNER_OPTIONS`` (pure-Python local runner),
``flink_pipeline_options(jar, master)`` (FlinkRunner) and
``FlinkJobServer.pipeline_options(parallelism, worker_pool)`` (PortableRunner on a
shared job server, SDK workers LOOPBACK or from a ``worker_pool()``).
``jar`` is the path that ``scripts/fetch-flink-jobserver`` prints.

Every start picks free ports at run time (unless told which), waits a bounded time for the
service to answer, and raises ``ServiceError`` with the tail of the service's
log if it does not; every process is killed with its children on exit,
exceptions included.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import http.client
import http.server
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from pipeline.options import FlinkJarOptions  # noqa: F401 (declares the job server's option below)

FLINK_VERSION = "1.19"  # the Flink of the job server that scripts/fetch-flink-jobserver builds

# The pure-Python local runner. "DirectRunner" is Beam's SwitchingDirectRunner:
# it first tries the Prism runner, downloading its binary from the internet,
# and only falls back to FnApiRunner (in-process, pure Python) when that fails.
DIRECT_RUNNER_OPTIONS = ["--runner=FnApiRunner"]


class ServiceError(RuntimeError):
    """A service did not come up (the message ends with the tail of its log)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- processes ---------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: get SIGKILL when the test process dies (Linux).

    Strictly, when the thread that started it ends: start services from the
    main thread (as pytest fixtures are).
    """
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


class _Process:
    """A child process in its own process group, its output going to a log file."""

    def __init__(self, name: str, cmd: Sequence[str], log: Path, env: dict | None = None, cwd=None):
        self.name, self.log = name, log
        self._log_file = open(log, "wb")
        self.popen = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to the whole process group, then SIGKILL after ``grace`` seconds."""
        try:
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.popen.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.popen.wait(wait)
                    # The leader is gone; SIGKILL whatever it left in its group.
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.popen.pid, signal.SIGKILL)
                    break
                except subprocess.TimeoutExpired:
                    continue
        finally:
            self._log_file.close()


@contextlib.contextmanager
def _processes() -> Iterator[list[_Process]]:
    """A list to add started processes to; all are stopped on exit, last started first."""
    procs: list[_Process] = []
    try:
        yield procs
    finally:
        for proc in reversed(procs):
            proc.stop()


def _wait_until(ready: Callable[[], bool], procs: Sequence[_Process], what: str, timeout: float) -> None:
    """Poll ``ready()`` until true; ServiceError if a process exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        for proc in procs:
            if proc.popen.poll() is not None:
                raise ServiceError(
                    f"{what}: {proc.name} exited with code {proc.popen.returncode} "
                    f"before it was ready; its log ends:\n{proc.tail()}"
                )
        try:
            if ready():
                return
        except (OSError, ValueError, KeyError):  # not answering (properly) yet
            pass
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}'s log ends:\n{p.tail()}" for p in procs)
            raise ServiceError(f"{what} did not come up within {timeout:.0f} s\n{tails}")
        time.sleep(0.2)


def _http_json(url: str, timeout: float = 2.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    """Set environment variables for the block, restoring the old values after."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


# --- GCS ---------------------------------------------------------------------


@dataclass(frozen=True)
class GcsEmulator:
    host: str  # e.g. http://127.0.0.1:40123, the value of STORAGE_EMULATOR_HOST
    bucket: str
    log: Path

    def url(self, path: str = "") -> str:
        """``gs://<bucket>/<path>``."""
        return f"gs://{self.bucket}/{path.lstrip('/')}"


@contextlib.contextmanager
def _beam_gcs_anonymous() -> Iterator[None]:
    """Make Beam's GCS client anonymous in this process, without a credentials lookup.

    Before its first GCS call Beam asks google.auth for default credentials.
    With none configured, google.auth probes the GCE metadata server (a
    link-local address, not loopback) and Beam retries with back-off: about
    20 s, then it connects anonymously anyway. Pre-answering Beam's
    per-process credentials cache with "none" skips all of that; the
    emulator accepts anonymous requests. NO_GCE_CHECK=true (set by
    gcs_emulator) keeps child processes off the metadata server too.
    """
    try:
        from apache_beam.internal.gcp.auth import _Credentials
    except ImportError:  # Beam without its gcp extra: nothing to do
        yield
        return
    with _Credentials._credentials_lock:
        saved = (_Credentials._credentials_init, _Credentials._credentials)
        _Credentials._credentials_init, _Credentials._credentials = True, None
    try:
        yield
    finally:
        with _Credentials._credentials_lock:
            _Credentials._credentials_init, _Credentials._credentials = saved


@contextlib.contextmanager
def gcs_emulator(port: int | None = None, bucket: str = "beamsplitter-test", timeout: float = 30.0) -> Iterator[GcsEmulator]:
    """gcp-storage-emulator (in memory) on 127.0.0.1 with ``bucket`` created.

    While open, STORAGE_EMULATOR_HOST points at it (and NO_GCE_CHECK=true), so
    Beam's FileSystems and pipelines (DirectRunner, and FlinkRunner with
    LOOPBACK workers) read and write gs://<bucket>/... there.
    """
    port = port or free_port()
    host = f"http://127.0.0.1:{port}"
    workdir = Path(tempfile.mkdtemp(prefix="gcs-emulator-"))
    cmd = [
        sys.executable, "-m", "gcp_storage_emulator", "start",
        "--host=127.0.0.1", f"--port={port}", "--in-memory", f"--default-bucket={bucket}",
    ]
    try:
        with _processes() as procs:
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            procs.append(_Process("gcp-storage-emulator", cmd, workdir / "emulator.log", env=env, cwd=workdir))

            def ready() -> bool:
                return (_http_json(f"{host}/storage/v1/b/{bucket}") or {}).get("name") == bucket

            _wait_until(ready, procs, f"GCS emulator on port {port}", timeout)
            with _environ(STORAGE_EMULATOR_HOST=host, NO_GCE_CHECK="true"), _beam_gcs_anonymous():
                yield GcsEmulator(host=host, bucket=bucket, log=workdir / "emulator.log")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _fake_gcs_server_binary() -> str:
    """scripts/bootstrap installs it beside the venv's Python (GOBIN); else PATH, else Go's own bin folder."""
    for found in (Path(sys.executable).parent / "fake-gcs-server", shutil.which("fake-gcs-server"),
                  Path(os.environ.get("GOPATH") or Path.home() / "go") / "bin" / "fake-gcs-server"):
        if found and Path(found).is_file():
            return str(found)
    raise ServiceError("fake-gcs-server not found: run scripts/bootstrap "
                       "(go install github.com/fsouza/fake-gcs-server@v1.56.1)")


@contextlib.contextmanager
def fake_gcs_server(bucket: str = "beamsplitter-test", timeout: float = 30.0) -> Iterator[GcsEmulator]:
    """fake-gcs-server (in memory) on 127.0.0.1 with ``bucket``; sets STORAGE_EMULATOR_HOST as ``gcs_emulator`` does."""
    port = free_port()
    host = f"http://127.0.0.1:{port}"
    workdir = Path(tempfile.mkdtemp(prefix="fake-gcs-server-"))
    cmd = [_fake_gcs_server_binary(), "-scheme", "http", "-host", "127.0.0.1", f"-port={port}", "-backend", "memory",
           f"-public-host=127.0.0.1:{port}", f"-external-url={host}", "-log-level", "warn"]
    try:
        with _processes() as procs:
            procs.append(_Process("fake-gcs-server", cmd, workdir / "server.log", cwd=workdir))
            _wait_until(lambda: _port_open(port) and _http_json(f"{host}/storage/v1/b") is not None, procs,
                        f"fake-gcs-server on port {port}", timeout)
            request = urllib.request.Request(f"{host}/storage/v1/b", data=json.dumps({"name": bucket}).encode(),
                                             headers={"Content-Type": "application/json"}, method="POST")
            urllib.request.urlopen(request, timeout=10).close()
            with _environ(STORAGE_EMULATOR_HOST=host, NO_GCE_CHECK="true"), _beam_gcs_anonymous():
                yield GcsEmulator(host=host, bucket=bucket, log=workdir / "server.log")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


class HeldWrites:
    """``held_writes``' proxy: ``url`` for clients, ``hold``/``release`` for the test."""

    def __init__(self, upstream: str):
        self.upstream = urllib.parse.urlsplit(upstream)
        self.url = ""
        self._state = threading.Condition()
        self._letting: int | None = None  # None: every write goes through
        self.held = 0

    def hold(self, letting: int = 0) -> None:
        """Let ``letting`` more writes through, then hold every later one until ``release``."""
        with self._state:
            self._letting = letting

    def release(self) -> None:
        with self._state:
            self._letting = None
            self._state.notify_all()

    def wait_held(self, count: int, timeout: float = 60.0) -> None:
        """Until ``count`` writes are held (ServiceError after ``timeout`` seconds)."""
        with self._state:
            if not self._state.wait_for(lambda: self.held >= count, timeout):
                raise ServiceError(f"{self.held} writes held, not {count}, after {timeout:.0f} s")

    def _gate(self) -> None:
        with self._state:
            if self._letting is None:
                return
            if self._letting > 0:
                self._letting -= 1
                return
            self.held += 1
            self._state.notify_all()
            self._state.wait_for(lambda: self._letting is None)
            self.held -= 1


# A write's first request (a simple or multipart upload, the start of a resumable or S3 multipart one): what
# ``held_writes`` holds. The requests that carry on an upload it started go through.
_CONTINUATION = ("upload_id", "uploadId", "partNumber")


@contextlib.contextmanager
def held_writes(upstream: str) -> Iterator[HeldWrites]:
    """An HTTP proxy on 127.0.0.1 to the store at ``upstream`` (``http://host:port``) that can hold writes back.

    Every request is passed on as it came (its Host header included, so signed
    requests stay valid); ``hold()`` makes uploads wait until ``release()``.
    """
    proxy = HeldWrites(upstream)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = b""
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    body += self.rfile.read(size)
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return body
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _forward(self) -> None:
            body = self._body()
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            if self.command in ("PUT", "POST") and not any(key in query for key in _CONTINUATION):
                proxy._gate()
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("transfer-encoding", "connection", "content-length")}
            upstream = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=120)
            try:
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                answer = response.read()
                self.send_response_only(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                # A HEAD's answer has no body, but the length of the one a GET would have.
                length = response.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(answer)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer)
            finally:
                upstream.close()

        do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = _forward

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    proxy.url = f"http://127.0.0.1:{server.server_address[1]}"
    serving = threading.Thread(target=server.serve_forever, name="held-writes", daemon=True)
    serving.start()
    try:
        yield proxy
    finally:
        proxy.release()
        server.shutdown()
        server.server_close()


@dataclass
class S3Server:
    endpoint: str  # http://127.0.0.1:<port>
    client: object  # a boto3 S3 client for it

    def beam_options(self, endpoint: str | None = None) -> list[str]:
        """Beam's options for its s3:// filesystem against this server (or ``endpoint``, a proxy to it)."""
        return [f"--s3_endpoint_url={endpoint or self.endpoint}", "--s3_access_key_id=test",
                "--s3_secret_access_key=test", "--s3_region_name=us-east-1"]


@contextlib.contextmanager
def s3_server(bucket: str, timeout: float = 30.0) -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1 with ``bucket``; AWS_* variables point boto3 at test credentials.

    The server runs in a process of its own, as the GCS emulators do: in a thread of the test process it
    shared the interpreter lock with the pipeline under test, and its buckets outlived it in that process's
    memory (moto keeps one store per process). Each start is an empty store, whichever test ran before.
    """
    import boto3

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    workdir = Path(tempfile.mkdtemp(prefix="moto-server-"))
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    try:
        with _processes() as procs:
            procs.append(_Process("moto-server", cmd, workdir / "moto.log", env=dict(os.environ, PYTHONUNBUFFERED="1"),
                                  cwd=workdir))
            _wait_until(lambda: _http_json(f"{endpoint}/moto-api/data.json") is not None, procs,
                        f"moto S3 server on port {port}", timeout)
            with _environ(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1"):
                found = S3Server(endpoint, boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1"))
                found.client.create_bucket(Bucket=bucket)
                yield found
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --- Flink -------------------------------------------------------------------

_MAGIC_MASTERS = ("[local]", "[auto]")
_NO_STAGING_FACTORY = "beamsplitter.flink.NoStagingFactory"


def _has_no_staging_factory(jar: str | os.PathLike) -> bool:
    try:
        with zipfile.ZipFile(jar) as z:
            return _NO_STAGING_FACTORY.replace(".", "/") + ".class" in z.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


# How long a TaskManager keeps a job's SDK workers once no task uses them.
# Flink runs a batch job stage by stage, and with Beam's default (0) each stage
# starts SDK workers of its own: with EXTERNAL workers a new process per stage,
# each importing TensorFlow again (one 60 s track on flink_cluster(): 13 worker
# processes and 102 s; kept a minute: 2 processes and 46 s).
ENVIRONMENT_CACHE_MILLIS = 60_000


def _runner_extras(jar: str | os.PathLike, master: str, parallelism: int | None,
                   worker_pool: "WorkerPool | None" = None) -> list[str]:
    if worker_pool is None:
        options = ["--environment_type=LOOPBACK"]
    else:
        options = ["--environment_type=EXTERNAL", f"--environment_config={worker_pool.endpoint}",
                   f"--environment_cache_millis={ENVIRONMENT_CACHE_MILLIS}"]
        if parallelism is not None:  # one SDK worker per slot, as infra/flink deploys it
            options.append(f"--sdk_worker_parallelism={parallelism}")
    if master not in _MAGIC_MASTERS and _has_no_staging_factory(jar):
        # flink_cluster() has every jar on its classpath: upload none per job
        # (else the job server sends its whole classpath, ~150 MB, ~15 s a job).
        options.append(f"--pipeline_resources_detector_factory_class={_NO_STAGING_FACTORY}")
    if parallelism is not None:
        options.append(f"--parallelism={parallelism}")
    return options


def flink_pipeline_options(jar: str | os.PathLike, master: str = "[local]", parallelism: int | None = None) -> list[str]:
    """Beam options for the FlinkRunner, its SDK workers in this process (LOOPBACK).

    ``master``: "[local]" for a Flink cluster embedded in the job server, or
    ``flink_cluster()``'s ``master`` ("127.0.0.1:<rest port>"). Beam starts a
    job server JVM from ``jar`` for each pipeline and stops it only when this
    process exits; with many pipelines, share one with ``flink_job_server()``.
    That JVM (``java -jar``) gets Flink's Java 17 options from the jar's
    manifest (scripts/fetch-flink-jobserver).
    """
    return [
        "--runner=FlinkRunner",
        f"--flink_master={master}",
        f"--flink_version={FLINK_VERSION}",
        f"--flink_job_server_jar={os.fspath(jar)}",
        *_runner_extras(jar, master, parallelism),
    ]


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and Path(java_home, "bin", "java").exists():
        return str(Path(java_home, "bin", "java"))
    java = shutil.which("java")
    if not java:
        raise ServiceError("java not found (install openjdk-17-jre-headless)")
    return java


# slf4j-simple (the logger on that classpath): timestamps in the services' logs.
_JAVA_LOG_OPTS = ["-Dorg.slf4j.simpleLogger.showDateTime=true", "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS"]

# The JVM options Flink 1.19's distribution gives its JVMs on Java 17 (see the file).
FLINK_JAVA17_OPTIONS_FILE = Path(__file__).resolve().parents[1] / "infra" / "flink" / "java17-options.txt"


def flink_java17_opts() -> list[str]:
    """``--add-opens``/``--add-exports`` options that Flink 1.19 starts its JVMs with on Java 17."""
    lines = FLINK_JAVA17_OPTIONS_FILE.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


_JAVA_OPTS = [*flink_java17_opts(), *_JAVA_LOG_OPTS]  # for every JVM started here


def _flink_classpath(jar: str | os.PathLike) -> str:
    """Flink's and Beam's jars: the lib/ folder beside the job server jar."""
    lib = Path(jar).resolve().parent / "lib"
    if not any(lib.glob("flink-runtime-*.jar")):
        raise ServiceError(f"no flink-runtime jar in {lib}; run scripts/fetch-flink-jobserver")
    return str(lib / "*")


@dataclass(frozen=True)
class FlinkJobServer:
    endpoint: str  # "127.0.0.1:<job port>", for --job_endpoint
    master: str  # the Flink it runs jobs on: "[local]" or a cluster's REST address
    jar: str
    log: Path
    pid: int = 0  # the job server's JVM

    def pipeline_options(self, parallelism: int | None = None, worker_pool: "WorkerPool | None" = None) -> list[str]:
        """Beam options to run a pipeline on this job server (PortableRunner).

        The SDK workers run in this process (LOOPBACK), or with ``worker_pool``
        (``worker_pool()``) in processes that pool starts (EXTERNAL), as on
        Kubernetes (infra/flink); then ``parallelism`` also sets
        --sdk_worker_parallelism, one SDK worker process per slot, and the
        workers are kept between stages (``ENVIRONMENT_CACHE_MILLIS``).
        """
        return ["--runner=PortableRunner", f"--job_endpoint={self.endpoint}",
                *_runner_extras(self.jar, self.master, parallelism, worker_pool)]


@contextlib.contextmanager
def flink_job_server(jar: str | os.PathLike, master: str = "[local]", timeout: float = 60.0,
                     port: int | None = None, log_dir: Path | None = None) -> Iterator[FlinkJobServer]:
    """One Beam Flink job server on 127.0.0.1 for many pipelines (``.pipeline_options()``).

    With master "[local]" each job runs in a Flink mini cluster inside the job
    server; else ``master`` is a cluster's REST address (``flink_cluster()``).
    Saves the job server start (a few seconds) of each FlinkRunner pipeline.
    ``port``: the job port (default: a free one); ``log_dir``: where its log
    stays after it stops (default: its working folder, removed on exit).
    """
    workdir = Path(tempfile.mkdtemp(prefix="flink-job-server-"))
    job_port = port or free_port()
    cmd = [
        _java(), f"-Djava.io.tmpdir={workdir}", *_JAVA_OPTS, "-jar", os.fspath(jar),
        "--flink-master", master,
        "--job-host", "127.0.0.1",
        "--job-port", str(job_port),
        "--artifact-port", "0",
        "--expansion-port", "0",
        "--artifacts-dir", str(workdir / "artifacts"),
    ]
    try:
        with _processes() as procs:
            proc = _Process("flink-job-server", cmd, (log_dir or workdir) / "job-server.log", cwd=workdir)
            procs.append(proc)
            _wait_until(lambda: _port_open(job_port), procs, f"Flink job server on port {job_port}", timeout)
            yield FlinkJobServer(endpoint=f"127.0.0.1:{job_port}", master=master, jar=os.fspath(jar), log=proc.log,
                                 pid=proc.popen.pid)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass(frozen=True)
class FlinkCluster:
    master: str  # "127.0.0.1:<rest port>", for --flink_master
    rest_url: str  # "http://127.0.0.1:<rest port>"
    workdir: Path  # its conf/ and tmp/ (and its logs, unless flink_cluster() was given a log_dir)
    logs: Path  # jobmanager.log, taskmanager.log
    jobmanager_pid: int
    taskmanager_pid: int

    def overview(self) -> dict:
        """The REST API's /overview: task managers, slots, jobs finished/failed..."""
        return _http_json(f"{self.rest_url}/overview")


SLOT_REQUEST_TIMEOUT_MS = 30_000


def _tm_resource_params(java: str, classpath: str, conf_dir: Path, log: Path) -> tuple[list[str], list[str]]:
    """JVM options and -D dynamic properties for a TaskManager, computed as Flink's own scripts do."""
    result = subprocess.run(
        [java, "-cp", classpath, "org.apache.flink.runtime.util.bash.BashJavaUtils",
         "GET_TM_RESOURCE_PARAMS", "--configDir", str(conf_dir)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )
    log.write_text(result.stdout + result.stderr)
    prefix = "BASH_JAVA_UTILS_EXEC_RESULT:"
    lines = [line[len(prefix):] for line in result.stdout.splitlines() if line.startswith(prefix)]
    if result.returncode != 0 or len(lines) != 2:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
        raise ServiceError(f"Flink could not size the TaskManager:\n{tail}")
    return lines[0].split(), lines[1].split()


@contextlib.contextmanager
def flink_cluster(
    jar: str | os.PathLike,
    slots: int = 2,
    taskmanager_memory: str = "2048m",
    timeout: float = 90.0,
    config: dict | None = None,
    rest_port: int | None = None,
    log_dir: Path | None = None,
) -> Iterator[FlinkCluster]:
    """A standalone Flink session cluster on 127.0.0.1: a JobManager and one TaskManager process.

    Runs from the jars in lib/ beside ``jar`` (scripts/fetch-flink-jobserver),
    so its Flink is the job server's. Yields once the REST API reports the
    TaskManager's slots. Run pipelines with ``flink_pipeline_options(jar,
    cluster.master)`` or ``flink_job_server(jar, cluster.master)``.
    ``config``: Flink configuration entries to add or override; ``rest_port``:
    the REST API's and web UI's port (default: a free one); ``log_dir``: where
    its logs stay after it stops (default: its working folder, removed on exit).
    """
    java, classpath = _java(), _flink_classpath(jar)
    workdir = Path(tempfile.mkdtemp(prefix="flink-cluster-"))
    conf_dir, tmp_dir = workdir / "conf", workdir / "tmp"
    conf_dir.mkdir()
    tmp_dir.mkdir()
    logs = log_dir or workdir
    rest_port, rpc_port = rest_port or free_port(), free_port()
    config = {**{
        "jobmanager.rpc.address": "127.0.0.1",
        "jobmanager.rpc.port": rpc_port,
        "jobmanager.bind-host": "127.0.0.1",
        "jobmanager.memory.process.size": "1024m",
        "rest.address": "127.0.0.1",
        "rest.bind-address": "127.0.0.1",
        "rest.port": rest_port,
        "taskmanager.host": "127.0.0.1",
        "taskmanager.bind-host": "127.0.0.1",
        "taskmanager.numberOfTaskSlots": slots,
        "taskmanager.memory.process.size": taskmanager_memory,
        # Beam's translation has many shuffles; each needs network buffers per slot.
        "taskmanager.memory.network.min": "384m",
        "taskmanager.memory.network.max": "384m",
        "parallelism.default": 1,
        "io.tmp.dirs": str(tmp_dir),
        "web.tmpdir": str(tmp_dir),
        # Beam is on the cluster's classpath: take its classes from there,
        # never from jars a job brings.
        "classloader.resolve-order": "parent-first",
        # An error outside a task thread (say an OutOfMemoryError in the gRPC
        # thread that reads an SDK worker's output) ends the TaskManager, so
        # the job fails; by default Flink only logs it, and the job waits forever
        # for a bundle whose data stream died with it.
        "cluster.uncaught-exception-handling": "FAIL",
        # A job that finds no free slot (its TaskManager died) fails after this long, naming why
        # (NoResourceAvailableException); with Flink's default, 5 minutes, it said nothing that long.
        # Batch jobs queued behind another job's tasks are not timed out: their slots exist.
        "slot.request.timeout": SLOT_REQUEST_TIMEOUT_MS,
    }, **(config or {})}
    # Flat "key: value" lines: valid in Flink's legacy format and in its YAML one.
    (conf_dir / "config.yaml").write_text("".join(f"{k}: {v}\n" for k, v in config.items()))
    jvm_common = [f"-Djava.io.tmpdir={tmp_dir}", *_JAVA_OPTS]
    master = f"127.0.0.1:{rest_port}"
    try:
        with _processes() as procs:
            procs.append(_Process(
                "flink-jobmanager",
                [java, *jvm_common, "-cp", classpath,
                 "org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint",
                 "--configDir", str(conf_dir)],
                logs / "jobmanager.log", cwd=workdir,
            ))
            jvm_opts, dynamic = _tm_resource_params(java, classpath, conf_dir, logs / "tm-resources.log")
            procs.append(_Process(
                "flink-taskmanager",
                [java, *jvm_common, *jvm_opts, "-cp", classpath,
                 "org.apache.flink.runtime.taskexecutor.TaskManagerRunner",
                 "--configDir", str(conf_dir), *dynamic],
                logs / "taskmanager.log", cwd=workdir,
            ))

            def ready() -> bool:
                overview = _http_json(f"http://{master}/overview")
                return overview["taskmanagers"] >= 1 and overview["slots-available"] >= 1

            _wait_until(ready, procs, f"Flink cluster (REST port {rest_port})", timeout)
            yield FlinkCluster(master=master, rest_url=f"http://{master}", workdir=workdir, logs=logs,
                               jobmanager_pid=procs[0].popen.pid, taskmanager_pid=procs[1].popen.pid)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --- Beam SDK worker pool -----------------------------------------------------


def descendants(root: int) -> list[int]:
    """Every live process under ``root`` (children, grandchildren...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # gone meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def vm_hwm_bytes(pid: int) -> int:
    """The peak resident set size of a process (VmHWM), 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


class WorkerPool:
    """A running Beam SDK worker pool (``worker_pool()``)."""

    def __init__(self, endpoint: str, log: Path, pid: int, interval: float = 0.2):
        self.endpoint = endpoint  # "127.0.0.1:<port>", for --environment_config
        self.log = log
        self.pid = pid
        self._peak = 0
        self._peaks: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._interval = interval
        self._sampler = threading.Thread(target=self._sample_until_stopped, name="worker-pool-rss", daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        if not sys.platform.startswith("linux"):
            return
        for pid in descendants(self.pid):
            hwm = vm_hwm_bytes(pid)
            with self._lock:
                self._peaks[pid] = max(self._peaks.get(pid, 0), hwm)
                self._peak = max(self._peak, hwm)

    def _sample_until_stopped(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self._interval)

    def peak_rss_bytes(self) -> int:
        """The highest peak RSS (VmHWM) seen among the SDK worker processes the pool started.

        Sampled every ~0.2 s from the pool's start (and once more now), so a
        worker that lived less than that may be missed; 0 before any worker.
        """
        self._sample()
        with self._lock:
            return self._peak

    def worker_peaks(self) -> dict[int, int]:
        """Peak RSS in bytes of each SDK worker process seen so far, by pid."""
        self._sample()
        with self._lock:
            return dict(self._peaks)

    def close(self) -> None:
        self._stop.set()
        self._sampler.join(5.0)


# Beam's worker_pool_main (what the SDK container's --worker_pool runs), but
# listening on 127.0.0.1 only: worker_pool_main binds every interface, and
# anyone reaching the pool can run code in it. Each worker starts through
# SDK_WORKER_BOOT, as the container's workers start through its boot program.
_WORKER_POOL_MAIN = """
import logging, sys
import grpc
from apache_beam.portability.api import beam_fn_api_pb2_grpc
from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer
from apache_beam.utils import thread_pool_executor

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
server = grpc.server(thread_pool_executor.shared_unbounded_instance(),
                     options=[("grpc.http2.max_pings_without_data", 0), ("grpc.http2.max_ping_strikes", 0)])
beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(
    BeamFnExternalWorkerPoolServicer(use_process=True, container_executable=sys.argv[2], data_buffer_time_limit_ms=-1),
    server)
address = "127.0.0.1:%s" % sys.argv[1]
if not server.add_insecure_port(address):
    sys.exit("worker pool: cannot listen on " + address)
server.start()
logging.info("Beam worker pool listening at %s", address)
server.wait_for_termination()
"""

# An SDK worker as the SDK container's boot program starts one: the job's pipeline options come from
# the runner's provision service, and sdk_worker_main runs with them. (Beam's pool alone starts a bare
# SdkHarness, without the options: no s3:// settings, so every s3:// path failed on its workers.)
SDK_WORKER_BOOT = "sdk_worker_boot.py"  # in the command line of every SDK worker process
_SDK_WORKER_BOOT = """
import argparse, os, sys, tempfile
import grpc
from google.protobuf import json_format, text_format
from apache_beam.portability.api import beam_provision_api_pb2, beam_provision_api_pb2_grpc, endpoints_pb2

flags = argparse.ArgumentParser()
for name in ("id", "logging_endpoint", "artifact_endpoint", "provision_endpoint", "control_endpoint"):
    flags.add_argument("--" + name, default="")
args = flags.parse_args()
with grpc.insecure_channel(args.provision_endpoint) as channel:
    info = beam_provision_api_pb2_grpc.ProvisionServiceStub(channel).GetProvisionInfo(
        beam_provision_api_pb2.GetProvisionInfoRequest(), metadata=[("worker_id", args.id)]).info


def descriptor(url):
    return text_format.MessageToString(endpoints_pb2.ApiServiceDescriptor(url=url))


os.environ.update(
    WORKER_ID=args.id,
    PIPELINE_OPTIONS=json_format.MessageToJson(info.pipeline_options),
    CONTROL_API_SERVICE_DESCRIPTOR=descriptor(args.control_endpoint),
    LOGGING_API_SERVICE_DESCRIPTOR=descriptor(args.logging_endpoint),
    RUNNER_CAPABILITIES=" ".join(info.runner_capabilities),
    SEMI_PERSISTENT_DIRECTORY=tempfile.gettempdir(),
)
from apache_beam.runners.worker import sdk_worker_main

sdk_worker_main.main(sys.argv[:1])
"""


@contextlib.contextmanager
def worker_pool(port: int | None = None, timeout: float = 60.0,
                cwd: str | os.PathLike | None = None, log_dir: Path | None = None) -> Iterator[WorkerPool]:
    """A Beam SDK worker pool on 127.0.0.1: SDK workers in processes of their own (EXTERNAL environment).

    The pool (Beam's ``worker_pool_main`` on loopback, in this Python) starts
    one SDK worker process per request of the runner, in this Python, with the
    job's pipeline options (``SDK_WORKER_BOOT``). Pass the pool to
    ``FlinkJobServer.pipeline_options(worker_pool=...)``. The pool and its
    workers are in one process group, killed together on exit. The workers
    inherit this process's environment, and run in ``cwd`` (default: a
    temporary folder), where relative paths of a job resolve. Its log (the
    workers' output too) stays in ``log_dir`` if given.
    """
    port = port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="beam-worker-pool-"))
    boot = workdir / SDK_WORKER_BOOT
    boot.write_text(f"#!{sys.executable}\n{_SDK_WORKER_BOOT}")
    boot.chmod(0o755)
    cmd = [sys.executable, "-c", _WORKER_POOL_MAIN, str(port), str(boot)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        with _processes() as procs:
            proc = _Process("beam-worker-pool", cmd, (log_dir or workdir) / "worker-pool.log", env=env,
                            cwd=cwd or workdir)
            procs.append(proc)
            pool = WorkerPool(f"127.0.0.1:{port}", proc.log, proc.popen.pid)
            try:
                _wait_until(lambda: _port_open(port), procs, f"Beam worker pool on port {port}", timeout)
                yield pool
            finally:
                pool.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
