"""A live set of twenty minutes through each object store: read from gs:// and s3://, its stems written back.

The storage paths' other tests use short tracks and songs (tests/pipeline/test_runners.py,
test_names.py, test_overlapping_runs.py); a long track is where the stores' own
code paths change: a source read in many ranged requests while ffmpeg decodes
it, stems of hundreds of megabytes written as resumable (GCS) and multipart
(S3) uploads. Each store must give back exactly the stems the local runner
writes, once, with one metadata row per stem.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from models.ffmpeg_process import ffmpeg_binary
from pipeline import demo
from tests import services
from tests.pipeline.conftest import write_manifest
from tests.pipeline.test_runners import read_parquet_folder, run_catalogue, stems_of

pytestmark = pytest.mark.slow  # 20 minutes of audio, separated three times

LIVE_SET = "Live at the Pavilion (2019) [Set 2] – encore's.flac"
MINUTES = 20


@pytest.fixture(scope="module")
def live_set(tmp_path_factory) -> Path:
    """The folder holding the set."""
    folder = tmp_path_factory.mktemp("live")
    # Ten passes of a two-minute piece: chunk borders fall elsewhere in each pass.
    piece = demo.make_track(folder / "piece.wav", seconds=120.0, seed=61)
    subprocess.run([ffmpeg_binary(), "-v", "error", "-stream_loop", str(MINUTES // 2 - 1), "-i", str(piece),
                    "-c:a", "flac", str(folder / LIVE_SET)], check=True)
    piece.unlink()
    return folder


def manifest(folder: Path, store: str, prefix: str) -> Path:
    """A manifest in ``folder`` naming the set under ``prefix``."""
    return write_manifest(folder / f"m-{store}.csv", [("pavilion/set-2", f"{prefix}/{LIVE_SET}", "a")])


@pytest.fixture(scope="module")
def local_stems(live_set, checkpoint_2stems, tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("local-out")
    run_catalogue(manifest(live_set, "local", str(live_set)), out, checkpoint_2stems, failures=0)
    stems = stems_of(str(out))
    assert sorted(stems) == ["pavilion/set-2/accompaniment", "pavilion/set-2/vocals"]
    # 16-bit stereo at 44.1 kHz: the whole set in each stem, not a part of it.
    assert all(len(data) > MINUTES * 60 * 44100 * 4 for data in stems.values())
    return stems


def check_output(prefix: str, expected: dict[str, bytes]) -> None:
    assert stems_of(prefix) == expected
    (card,) = FileSystems.match([FileSystems.join(prefix, "stems", "*", "_MODEL.json")])[0].metadata_list
    metadata = read_parquet_folder(FileSystems.join(prefix, "metadata", card.path.split("/")[-2]))
    assert sorted(row.instrument for table in metadata for row in table.itertuples()) == ["accompaniment",
                                                                                         "vocals"]
    assert not FileSystems.match([FileSystems.join(prefix, "scratch", "**")])[0].metadata_list


def test_a_live_set_on_gcs(live_set, checkpoint_2stems, local_stems):
    with services.gcs_emulator() as gcs:
        with FileSystems.create(gcs.url(f"music/{LIVE_SET}")) as out:
            out.write((live_set / LIVE_SET).read_bytes())
        rows = manifest(live_set, "gcs", gcs.url("music"))
        run_catalogue(rows, gcs.url("out"), checkpoint_2stems, failures=0)
        check_output(gcs.url("out"), local_stems)


def test_a_live_set_on_s3(live_set, checkpoint_2stems, local_stems):
    with services.s3_server("catalogue") as s3:
        s3.client.upload_file(str(live_set / LIVE_SET), "catalogue", f"music/{LIVE_SET}")
        rows = manifest(live_set, "s3", "s3://catalogue/music")
        try:
            run_catalogue(rows, "s3://catalogue/out", checkpoint_2stems, *s3.beam_options(), failures=0)
            FileSystems.set_options(PipelineOptions(s3.beam_options()))
            check_output("s3://catalogue/out", local_stems)
        finally:
            FileSystems.set_options(PipelineOptions([]))
