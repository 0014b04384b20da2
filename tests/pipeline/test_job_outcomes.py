"""What a scheduled run needs of the job: --max_failed_fraction (a run in which too many tracks fail ends
with exit status 3, and a distributed run's job fails, so that a scheduler or an alert hears of it; what
was done still lands), and --scratch_location (chunk fan-out's scratch outside the output prefix)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline import demo
from tests.pipeline.conftest import write_manifest

BEAMSPLITTER = str(Path(sys.executable).parent / "beamsplitter")
# A runner that is not the local one, in this process: the whole catalogue in one job, as on a cluster.
EMBEDDED = ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"]


@pytest.fixture(scope="module")
def half_missing(tmp_path_factory) -> Path:
    """One good 4-second track among two missing files: two of three tracks fail."""
    folder = tmp_path_factory.mktemp("fraction")
    demo.make_track(folder / "good (take 1).wav", seconds=4.0, seed=71)
    write_manifest(folder / "m.csv", [("good", "good (take 1).wav", "a"), ("gone", "gone.wav", "b"),
                                      ("lost", "lost.flac", "c")])
    return folder


def beamsplitter_run(manifest: Path, output: Path, checkpoint, *args) -> subprocess.CompletedProcess:
    return subprocess.run([BEAMSPLITTER, "run", "--manifest", str(manifest), "--output", str(output),
                           "--checkpoint", str(checkpoint), *args], capture_output=True, text=True, timeout=600)


def parquet_rows(folder: Path) -> pd.DataFrame:
    files = sorted(folder.rglob("run-*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files]) if files else pd.DataFrame()


def test_local_run_over_the_fraction_exits_3_and_keeps_what_it_did(half_missing, checkpoint_2stems, tmp_path):
    out = tmp_path / "out"
    over = beamsplitter_run(half_missing / "m.csv", out, checkpoint_2stems, "--max_failed_fraction", "0.5")
    assert over.returncode == 3, over.stderr
    assert "1 tracks done, 0 skipped, 2 failed" in over.stdout
    assert "error: 2 of 3 tracks tried failed, more than --max_failed_fraction 0.5" in over.stdout
    assert sorted(parquet_rows(out / "metadata").instrument) == ["accompaniment", "vocals"]
    assert sorted(parquet_rows(out / "failures").track_id) == ["gone", "lost"]
    # Under the limit (2 of 3 is not over 0.7), failed tracks are the ordinary exit status 1.
    under = beamsplitter_run(half_missing / "m.csv", tmp_path / "out2", checkpoint_2stems,
                             "--max-failed-fraction=0.7")
    assert under.returncode == 1, under.stderr
    assert "max_failed_fraction" not in under.stdout
    # Skipped tracks are not tried: a rerun tries the two missing files only, and both fail.
    again = beamsplitter_run(half_missing / "m.csv", tmp_path / "out2", checkpoint_2stems,
                             "--max_failed_fraction", "0.7")
    assert again.returncode == 3 and "0 tracks done, 1 skipped, 2 failed" in again.stdout


def test_distributed_job_over_the_fraction_fails_after_its_tables_land(half_missing, checkpoint_2stems, tmp_path):
    out = tmp_path / "out"
    over = beamsplitter_run(half_missing / "m.csv", out, checkpoint_2stems, "--max_failed_fraction=0.5", *EMBEDDED)
    assert over.returncode == 3, over.stderr
    assert "error: 2 of 3 tracks tried failed, more than --max_failed_fraction 0.5" in over.stdout
    assert sorted(parquet_rows(out / "metadata").instrument) == ["accompaniment", "vocals"]
    assert sorted(parquet_rows(out / "failures").track_id) == ["gone", "lost"]
    assert len(list((out / "metadata").rglob("_committed/run-*"))) == 1
    # Without the option the job runs no check: two failed tracks are exit status 1.
    plain = beamsplitter_run(half_missing / "m.csv", tmp_path / "plain", checkpoint_2stems, *EMBEDDED)
    assert plain.returncode == 1, plain.stderr
    assert "1 tracks done, 0 skipped, 2 failed (decode: 2)" in plain.stdout  # each counter report summed once
    assert not list((tmp_path / "plain").rglob("*verdict*"))


@pytest.mark.parametrize("value", ["1.5", "-0.1", "half"])
def test_a_fraction_outside_0_to_1_is_refused(half_missing, tmp_path, value):
    refused = subprocess.run([BEAMSPLITTER, "run", "--manifest", str(half_missing / "m.csv"), "--output",
                              str(tmp_path / "out"), f"--max_failed_fraction={value}"],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: ") and "max_failed_fraction" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "out").exists()


def test_chunk_scratch_goes_where_scratch_location_says(half_missing, checkpoint_2stems, tmp_path):
    """Scratch in a place of its own (a bucket without soft delete, say), never under the output prefix;
    the stems are those of a run that parks its chunks under the prefix."""
    outs = {}
    for name, extra in (("own", ["--scratch_location", str(tmp_path / "scratch [tmp]")]), ("prefix", [])):
        outs[name] = tmp_path / name
        done = beamsplitter_run(half_missing / "m.csv", outs[name], checkpoint_2stems, "--fan_out=chunks",
                                *extra, *EMBEDDED)
        assert done.returncode == 1 and "1 tracks done" in done.stdout, done.stderr
    assert (tmp_path / "scratch [tmp]").is_dir() and not list((tmp_path / "scratch [tmp]").rglob("*"))
    assert not (outs["own"] / "scratch").exists() and not (outs["prefix"] / "scratch").exists()
    for stem in ("vocals.wav", "accompaniment.wav"):
        (own,), (prefix,) = (list(outs[n].rglob(f"good/{stem}")) for n in ("own", "prefix"))
        assert own.read_bytes() == prefix.read_bytes()
