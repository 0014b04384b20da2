"""The same job on object storage (a GCS emulator) and on Flink (embedded and standalone), for real.

Each must write exactly what the local runner writes on local disk: the same
stem bytes, the same metadata rows, the same failures.
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystems import FileSystems

from pipeline import demo
from pipeline.run import run
from tests import services
from tests.pipeline.conftest import write_manifest

# Flink's LOOPBACK workers end with gRPC "socket closed" tracebacks in their threads.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
REPO = Path(__file__).resolve().parents[2]
INSTRUMENTS = ("accompaniment", "vocals")


@pytest.fixture(scope="module")
def small_catalogue(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("small")
    for i in range(2):
        demo.make_track(folder / f"s{i}.wav", seconds=8.0, seed=30 + i)
    write_manifest(folder / "m.csv", [("s0", "s0.wav", "a"), ("s1", "s1.wav", "b"), ("lost", "gone.wav", "c")])
    return folder


@pytest.fixture(scope="module")
def local_result(small_catalogue, checkpoint_2stems, tmp_path_factory) -> dict[str, bytes]:
    """Stem bytes by ``track_id/instrument`` from the local runner, the reference for the others."""
    prefix = tmp_path_factory.mktemp("local")
    assert run(["--manifest", str(small_catalogue / "m.csv"), "--output", str(prefix),
                "--checkpoint", str(checkpoint_2stems)]) == 1
    return {f"{p.parent.name}/{p.stem}": p.read_bytes() for p in prefix.glob("stems/*/*/*.wav")}


@pytest.fixture(scope="module")
def flink_jar() -> str:
    result = subprocess.run([str(REPO / "scripts" / "fetch-flink-jobserver")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def read_parquet_folder(folder: str):
    paths = [m.path for m in FileSystems.match([FileSystems.join(folder, "*.parquet")])[0].metadata_list]
    tables = []
    for path in paths:
        with FileSystems.open(path, compression_type="uncompressed") as f:
            tables.append(pq.read_table(io.BytesIO(f.read())).to_pandas())
    return tables


def check_same_as_local(prefix: str, local_result: dict[str, bytes], failures_expected: int = 1) -> None:
    stems = FileSystems.match([FileSystems.join(prefix, "stems", "*", "*", "*.wav")])[0].metadata_list
    found = {}
    for entry in stems:
        parts = entry.path.rsplit("/", 2)
        with FileSystems.open(entry.path, compression_type="uncompressed") as f:
            found[f"{parts[1]}/{parts[2][:-4]}"] = f.read()
    assert sorted(found) == sorted(local_result)
    different = [name for name in found if found[name] != local_result[name]]
    assert not different, f"stems differ from the local runner's: {different}"
    model = stems[0].path.split("/")[-3]
    metadata = read_parquet_folder(FileSystems.join(prefix, "metadata", model))
    assert sum(len(t) for t in metadata) == len(local_result)
    failures = read_parquet_folder(FileSystems.join(prefix, "failures"))
    assert sum(len(t) for t in failures) == failures_expected
    assert "no such file" in failures[0].message.iloc[0]


def test_catalogue_on_object_storage(small_catalogue, checkpoint_2stems, local_result):
    with services.gcs_emulator() as gcs:
        for path in small_catalogue.iterdir():
            with FileSystems.create(gcs.url(f"catalogue/{path.name}")) as out:
                out.write(path.read_bytes())
        args = ["--manifest", gcs.url("catalogue/m.csv"), "--output", gcs.url("out"),
                "--checkpoint", str(checkpoint_2stems)]
        assert run(args) == 1
        check_same_as_local(gcs.url("out"), local_result)
        records = FileSystems.match([gcs.url("out/stems/*/*/_SUCCESS.json")])[0].metadata_list
        before = {m.path: m.last_updated_in_seconds for m in records}
        assert len(before) == 2
        assert run(args) == 1  # nothing to redo
        after = FileSystems.match([gcs.url("out/stems/*/*/_SUCCESS.json")])[0].metadata_list
        assert {m.path: m.last_updated_in_seconds for m in after} == before


def test_catalogue_on_embedded_flink(small_catalogue, checkpoint_2stems, local_result, flink_jar, tmp_path):
    with services.flink_job_server(flink_jar, master="[local]") as server:
        assert run(["--manifest", str(small_catalogue / "m.csv"), "--output", str(tmp_path),
                    "--checkpoint", str(checkpoint_2stems), *server.pipeline_options()]) == 1
    check_same_as_local(str(tmp_path), local_result)


def test_catalogue_on_a_flink_cluster(small_catalogue, checkpoint_2stems, local_result, flink_jar, tmp_path):
    with services.flink_cluster(flink_jar) as cluster, services.flink_job_server(flink_jar, cluster.master) as server:
        assert run(["--manifest", str(small_catalogue / "m.csv"), "--output", str(tmp_path),
                    "--checkpoint", str(checkpoint_2stems), *server.pipeline_options(parallelism=2)]) == 1
        jobs = cluster.overview()
    check_same_as_local(str(tmp_path), local_result)
    assert jobs.get("jobs-finished", 0) >= 1, jobs


def test_catalogue_on_s3(small_catalogue, checkpoint_2stems, local_result, monkeypatch):
    """s3:// through Beam's S3 filesystem against moto's S3 server on loopback."""
    import boto3
    from apache_beam.options.pipeline_options import PipelineOptions
    from moto.server import ThreadedMotoServer

    port = services.free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        for name, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                            ("AWS_DEFAULT_REGION", "us-east-1")):
            monkeypatch.setenv(name, value)
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket="catalogue")
        for path in small_catalogue.iterdir():
            s3.upload_file(str(path), "catalogue", f"in/{path.name}")
        s3_options = [f"--s3_endpoint_url={endpoint}", "--s3_access_key_id=test", "--s3_secret_access_key=test",
                      "--s3_region_name=us-east-1"]
        args = ["--manifest", "s3://catalogue/in/m.csv", "--output", "s3://catalogue/out",
                "--checkpoint", str(checkpoint_2stems), *s3_options]
        assert run(args) == 1
        FileSystems.set_options(PipelineOptions(s3_options))
        check_same_as_local("s3://catalogue/out", local_result)
        assert run(args) == 1  # a second run finds every track done
        records = s3.list_objects_v2(Bucket="catalogue", Prefix="out/stems/")["Contents"]
        assert sum(o["Key"].endswith("_SUCCESS.json") for o in records) == 2
    finally:
        FileSystems.set_options(PipelineOptions([]))
        server.stop()
