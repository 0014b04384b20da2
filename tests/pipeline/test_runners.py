"""The same job on Flink (embedded, and a standalone cluster with a Beam worker pool) and on object storage.

Real music lengths, as a catalogue has them: songs of 3.5 and 4.7 minutes, a
33-minute live set, a track that stops decoding after three minutes, a missing
file. (The suite's runner tests once used 8-second tracks and passed while
every ordinary song failed on Flink.) Each runner must write exactly what the
local runner writes: the same stem bytes, the same metadata rows, the same
failures, with both ways of spreading the work (``--fan_out`` tracks and
chunks) and both model shapes (2 and 4 stems); nothing may be left in scratch
storage.

Each catalogue path gets the long set too: the local runner reads and writes
local files, embedded Flink gs:// (a GCS emulator), the Flink cluster s3://
(moto). A long track is where the stores' own code paths change: a source read
in many ranged requests while ffmpeg decodes it, stems of hundreds of megabytes
written as resumable (GCS) and multipart (S3) uploads, from SDK workers in
other processes.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystems import FileSystems

from models.ffmpeg_process import ffmpeg_binary
from pipeline import demo
from pipeline.run import run
from tests import services
from tests.pipeline.conftest import write_manifest

pytestmark = [
    pytest.mark.slow,  # minutes-long songs and a 33-minute mix, on every runner
    # Flink's LOOPBACK workers end with gRPC "socket closed" tracebacks in their threads.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning"),
]
GB = 1 << 30
# The SDK worker's peak RSS on the 33-minute mix, 2stems (docs/flink.md).
WORKER_RSS_BOUND_2STEMS = 2.5 * GB

BALLAD = "Café del Mar - l'été, 1999.wav"  # 3.5 min; accents, a quote, a comma
SONG = "song.mp3"  # 4.7 min, the length that failed on Flink
MIX = "Live at the Pavilion (2019) [Set 2] – encore's.flac"  # 33 min; brackets are glob syntax to a store
CUT = "cut.flac"  # decodes for about 3 minutes, then fails
FAILURES = {"cut": "truncated", "lost": "no such file"}


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_binary(), "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> Path:
    """The catalogue folder with ``m2.csv`` (every track) and ``m4.csv`` (the ballad and the failures)."""
    folder = tmp_path_factory.mktemp("songs")
    demo.make_track(folder / BALLAD, seconds=210.0, seed=41)
    song = demo.make_track(folder / "song.wav", seconds=282.0, seed=42)
    _ffmpeg("-i", str(song), "-b:a", "192k", str(folder / SONG))
    _ffmpeg("-i", str(song), str(folder / "song.flac"))
    flac = (folder / "song.flac").read_bytes()
    (folder / CUT).write_bytes(flac[: len(flac) * 2 // 3])
    # The mix loops a 3-minute piece 11 times: chunk borders fall elsewhere in each pass.
    piece = demo.make_track(folder / "piece.wav", seconds=180.0, seed=43)
    _ffmpeg("-stream_loop", "10", "-i", str(piece), "-c:a", "flac", str(folder / MIX))
    for leftover in (song, folder / "song.flac", piece):
        leftover.unlink()
    rows = [("ballad", BALLAD, "a"), ("song", SONG, "b"), ("cut", CUT, "c"), ("lost", "gone.wav", "d")]
    write_manifest(folder / "m2.csv", rows + [("live/mix", MIX, "e")])
    # 4stems weighs twice as much per minute: one song is enough to show the shape on every runner.
    write_manifest(folder / "m4.csv", [row for row in rows if row[0] != "song"])
    return folder


def run_catalogue(manifest: Path, output, checkpoint, *options: str, failures: int = len(FAILURES)) -> None:
    """Runs the catalogue, whose ``failures`` tracks fail to decode (the cut and the lost track of ``songs``)."""
    result = run(["--manifest", str(manifest), "--output", str(output), "--checkpoint", str(checkpoint), *options])
    assert result.exit_status == (1 if failures else 0)
    # Counted right on every runner: Flink's job server reports a step once per fused stage it runs in,
    # and the summary once took one of those reports (1 failed, with 2 failure rows).
    summary = result.summary
    assert (summary.failed, summary.failed_by_stage) == (failures, {"decode": failures} if failures else {})
    with FileSystems.open(str(manifest), compression_type="uncompressed") as rows:
        assert summary.done + summary.skipped + summary.failed == rows.read().count(b"\n") - 1  # all but the header


def stems_of(prefix: str) -> dict[str, bytes]:
    """Stem bytes by ``track_id/instrument``."""
    found = {}
    for entry in FileSystems.match([FileSystems.join(prefix, "stems", "*", "**")])[0].metadata_list:
        if entry.path.endswith(".wav"):
            track_id, name = entry.path.split("/stems/", 1)[1].split("/", 1)[1].rsplit("/", 1)
            with FileSystems.open(entry.path, compression_type="uncompressed") as f:
                found[f"{track_id}/{name[:-4]}"] = f.read()
    return found


@pytest.fixture(scope="module")
def checkpoint_4stems(random_checkpoint):
    return random_checkpoint("spleeter:4stems")


@pytest.fixture(scope="module")
def local_2stems(songs, checkpoint_2stems, tmp_path_factory) -> dict[str, bytes]:
    """The local runner's stems for m2.csv, the reference for the other runners."""
    prefix = tmp_path_factory.mktemp("local2")
    run_catalogue(songs / "m2.csv", prefix, checkpoint_2stems)
    stems = stems_of(str(prefix))
    assert sorted(stems) == [f"{t}/{i}" for t in ("ballad", "live/mix", "song") for i in ("accompaniment", "vocals")]
    return stems


@pytest.fixture(scope="module")
def local_4stems(songs, checkpoint_4stems, tmp_path_factory) -> dict[str, bytes]:
    prefix = tmp_path_factory.mktemp("local4")
    run_catalogue(songs / "m4.csv", prefix, checkpoint_4stems, "-p", "spleeter:4stems")
    stems = stems_of(str(prefix))
    assert len(stems) == 4
    assert len({stems[f"ballad/{i}"] for i in ("vocals", "drums", "bass", "other")}) == 4  # the stems differ
    return stems


@pytest.mark.parametrize("model", ["spleeter:2stems", "spleeter:4stems"])
def test_the_local_runner_writes_what_separate_writes(model, songs, checkpoint_2stems, checkpoint_4stems,
                                                      request, tmp_path):
    """The chain: every runner writes the local runner's bytes, which are `beamsplitter separate`'s."""
    from pipeline.cli import main

    two = model.endswith("2stems")
    local = request.getfixturevalue("local_2stems" if two else "local_4stems")
    tracks = (("song", SONG), ("ballad", BALLAD)) if two else (("ballad", BALLAD),)
    assert main(["separate", *(str(songs / name) for _, name in tracks), "-o", str(tmp_path), "-p", model,
                 "--checkpoint", str(checkpoint_2stems if two else checkpoint_4stems)]) == 0
    for track_id, name in tracks:
        stems = sorted((tmp_path / Path(name).stem).glob("*.wav"))
        assert len(stems) == (2 if two else 4)
        for stem in stems:
            assert stem.read_bytes() == local[f"{track_id}/{stem.stem}"], stem


def read_parquet_folder(folder: str):
    paths = [m.path for m in FileSystems.match([FileSystems.join(folder, "*.parquet")])[0].metadata_list]
    tables = []
    for path in paths:
        with FileSystems.open(path, compression_type="uncompressed") as f:
            tables.append(pq.read_table(io.BytesIO(f.read())).to_pandas())
    return tables


def check_same_as_local(prefix: str, local: dict[str, bytes], failures: dict[str, str]) -> None:
    found = stems_of(prefix)
    assert sorted(found) == sorted(local)
    different = [name for name in found if found[name] != local[name]]
    assert not different, f"stems differ from the local runner's: {different}"
    model = FileSystems.match([FileSystems.join(prefix, "stems", "*", "_MODEL.json")])[0].metadata_list
    metadata = read_parquet_folder(FileSystems.join(prefix, "metadata", model[0].path.split("/")[-2]))
    assert sum(len(t) for t in metadata) == len(local)
    rows = [row for t in read_parquet_folder(FileSystems.join(prefix, "failures")) for row in t.itertuples()]
    assert {row.track_id: row.stage for row in rows} == dict.fromkeys(failures, "decode")
    for row in rows:
        assert failures[row.track_id] in row.message, row.message
    assert not FileSystems.match([FileSystems.join(prefix, "scratch", "**")])[0].metadata_list


# --- Flink -------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded_flink(flink_jar):
    """A job server running each job in a Flink mini cluster of its own; SDK workers in this process."""
    with services.flink_job_server(flink_jar, master="[local]") as server:
        yield server


@pytest.fixture(scope="module")
def flink_cluster(flink_jar):
    """A standalone Flink cluster (JobManager, TaskManager with 2 slots), its job server, and a Beam
    worker pool whose SDK worker processes run the job's code: the shape infra/flink deploys."""
    with (services.flink_cluster(flink_jar) as cluster,
          services.flink_job_server(flink_jar, cluster.master) as server,
          services.worker_pool() as pool):
        yield cluster, server, pool


def upload(folder: Path, manifest: str, put) -> None:
    """Copies ``manifest`` and every local file it names into a store: ``put(local path, name)``."""
    put(folder / manifest, manifest)
    for name in (BALLAD, SONG, CUT, MIX):
        put(folder / name, name)


def test_songs_and_a_long_mix_on_embedded_flink_and_gcs(songs, checkpoint_2stems, local_2stems, embedded_flink):
    """2stems, whole tracks per worker (the default on a CPU cluster); sources and outputs on gs://."""
    def put(path: Path, name: str) -> None:
        with open(path, "rb") as source, FileSystems.create(gcs.url(f"catalogue/{name}")) as out:
            shutil.copyfileobj(source, out, 8 << 20)

    with services.gcs_emulator() as gcs:
        upload(songs, "m2.csv", put)
        run_catalogue(gcs.url("catalogue/m2.csv"), gcs.url("out"), checkpoint_2stems,
                      *embedded_flink.pipeline_options(parallelism=2))
        check_same_as_local(gcs.url("out"), local_2stems, FAILURES)


def test_songs_and_a_long_mix_on_a_flink_cluster_and_s3_in_flat_memory(songs, checkpoint_2stems, local_2stems,
                                                                       flink_cluster, tmp_path):
    """2stems, chunks fanned out to the inference step, sources and outputs on s3://, written from the
    pool's SDK worker processes; every one of them stays under the memory bound. The chunks wait in a
    local folder (``--scratch_location``; scratch on object storage is tested with short tracks): through
    moto, 2.8 GB of them more than doubled the test's time."""
    from apache_beam.options.pipeline_options import PipelineOptions

    cluster, server, pool = flink_cluster
    scratch = tmp_path / "scratch"
    with services.s3_server("catalogue") as s3:
        upload(songs, "m2.csv", lambda path, name: s3.client.upload_file(str(path), "catalogue", f"in/{name}"))
        try:
            run_catalogue("s3://catalogue/in/m2.csv", "s3://catalogue/out", checkpoint_2stems, "--fan_out=chunks",
                          f"--scratch_location={scratch}", *s3.beam_options(),
                          *server.pipeline_options(parallelism=2, worker_pool=pool))
            FileSystems.set_options(PipelineOptions(s3.beam_options()))
            check_same_as_local("s3://catalogue/out", local_2stems, FAILURES)
        finally:
            FileSystems.set_options(PipelineOptions([]))
    assert not [p for p in scratch.rglob("*") if p.is_file()]  # every chunk removed once its track is written
    peak = pool.peak_rss_bytes()
    assert 0.3 * GB < peak < WORKER_RSS_BOUND_2STEMS, f"SDK worker peak RSS {peak / GB:.2f} GB"
    assert cluster.overview().get("jobs-finished", 0) >= 1


def test_4stems_on_embedded_flink_with_chunks(songs, checkpoint_4stems, local_4stems, embedded_flink, tmp_path):
    run_catalogue(songs / "m4.csv", tmp_path, checkpoint_4stems, "-p", "spleeter:4stems", "--fan_out=chunks",
                  *embedded_flink.pipeline_options(parallelism=2))
    check_same_as_local(str(tmp_path), local_4stems, FAILURES)


def test_4stems_on_a_flink_cluster(songs, checkpoint_4stems, local_4stems, flink_cluster, tmp_path):
    _, server, pool = flink_cluster
    run_catalogue(songs / "m4.csv", tmp_path, checkpoint_4stems, "-p", "spleeter:4stems",
                  *server.pipeline_options(parallelism=2, worker_pool=pool))
    check_same_as_local(str(tmp_path), local_4stems, FAILURES)


# --- object storage (short tracks: what is tested here is the storage) ---------


@pytest.fixture(scope="module")
def small_catalogue(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("small")
    for i in range(2):
        demo.make_track(folder / f"s{i}.wav", seconds=8.0, seed=30 + i)
    write_manifest(folder / "m.csv", [("s0", "s0.wav", "a"), ("s1", "s1.wav", "b"), ("lost", "gone.wav", "c")])
    return folder


@pytest.fixture(scope="module")
def local_small(small_catalogue, checkpoint_2stems, tmp_path_factory) -> dict[str, bytes]:
    prefix = tmp_path_factory.mktemp("local")
    run_catalogue(small_catalogue / "m.csv", prefix, checkpoint_2stems, failures=1)
    return stems_of(str(prefix))


def test_catalogue_on_object_storage(small_catalogue, checkpoint_2stems, local_small):
    """gs:// sources, outputs and scratch storage (``--fan_out=chunks``) against a GCS emulator."""
    with services.gcs_emulator() as gcs:
        for path in small_catalogue.iterdir():
            with FileSystems.create(gcs.url(f"catalogue/{path.name}")) as out:
                out.write(path.read_bytes())
        args = [gcs.url("catalogue/m.csv"), gcs.url("out"), checkpoint_2stems]
        run_catalogue(*args, "--fan_out=chunks", failures=1)
        check_same_as_local(gcs.url("out"), local_small, {"lost": "no such file"})
        records = FileSystems.match([gcs.url("out/stems/*/*/_SUCCESS.json")])[0].metadata_list
        before = {m.path: m.last_updated_in_seconds for m in records}
        assert len(before) == 2
        run_catalogue(*args, failures=1)  # nothing to redo
        after = FileSystems.match([gcs.url("out/stems/*/*/_SUCCESS.json")])[0].metadata_list
        assert {m.path: m.last_updated_in_seconds for m in after} == before


def test_one_model_shared_by_the_processes_of_a_machine(small_catalogue, checkpoint_2stems, local_small, tmp_path,
                                                         monkeypatch):
    """--model_copies: the network is reached through Beam's model sharing, with the same stems."""
    from transforms.inference import SpleeterModelHandler

    models = []
    run_inference = SpleeterModelHandler.run_inference

    def recording(self, batch, model, inference_args=None):
        models.append(type(model).__name__)
        return run_inference(self, batch, model, inference_args)

    monkeypatch.setattr(SpleeterModelHandler, "run_inference", recording)
    run_catalogue(small_catalogue / "m.csv", tmp_path, checkpoint_2stems, "--model_copies=1", failures=1)
    check_same_as_local(str(tmp_path), local_small, {"lost": "no such file"})
    assert models and set(models) == {"_AutoProxyWrapper"}, models  # a proxy to the one shared model


def test_whole_tracks_with_an_accelerator_on_embedded_flink(small_catalogue, checkpoint_2stems, local_small,
                                                           embedded_flink, tmp_path, monkeypatch):
    """--inference_accelerator on a distributed runner (issue 18, item 4): whole tracks by default,
    several decoded at once into one shared model's batches, the same bytes, and no chunk through
    scratch storage. (Flink ignores the hint itself; the Dataflow job graph test checks where it sits.)"""
    from transforms.stash import Scratch

    parked = []
    monkeypatch.setattr(Scratch, "save", lambda self, array, uri: parked.append(uri))
    run_catalogue(small_catalogue / "m.csv", tmp_path, checkpoint_2stems,
                  "--inference_accelerator=type:nvidia-l4;count:1", *embedded_flink.pipeline_options(parallelism=2),
                  failures=1)
    check_same_as_local(str(tmp_path), local_small, {"lost": "no such file"})
    assert parked == []


def test_catalogue_on_s3(small_catalogue, checkpoint_2stems, local_small):
    """s3:// through Beam's S3 filesystem against moto's S3 server on loopback."""
    from apache_beam.options.pipeline_options import PipelineOptions

    with services.s3_server("catalogue") as s3:
        for path in small_catalogue.iterdir():
            s3.client.upload_file(str(path), "catalogue", f"in/{path.name}")
        try:
            run_catalogue("s3://catalogue/in/m.csv", "s3://catalogue/out", checkpoint_2stems, *s3.beam_options(),
                          failures=1)
            FileSystems.set_options(PipelineOptions(s3.beam_options()))
            check_same_as_local("s3://catalogue/out", local_small, {"lost": "no such file"})
            run_catalogue("s3://catalogue/in/m.csv", "s3://catalogue/out", checkpoint_2stems, *s3.beam_options(),
                          failures=1)
            records = s3.client.list_objects_v2(Bucket="catalogue", Prefix="out/stems/")["Contents"]
            assert sum(o["Key"].endswith("_SUCCESS.json") for o in records) == 2
        finally:
            FileSystems.set_options(PipelineOptions([]))
