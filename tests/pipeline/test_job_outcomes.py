"""What a scheduled run needs of the job: --max_failed_fraction (a run in which too many tracks fail ends
with exit status 3, and a distributed run's job fails, so that a scheduler or an alert hears of it; what
was done still lands), and --scratch_location (chunk fan-out's scratch outside the output prefix)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from pipeline import demo
from tests.pipeline.conftest import write_manifest

pytestmark = pytest.mark.slow  # whole jobs run to each of their outcomes

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


def test_the_next_run_removes_the_temporary_files_of_dead_runs_only(half_missing, checkpoint_2stems, tmp_path):
    """A job the runner failed leaves Beam's temporary folders of metadata and failure files
    (``.temp-run-<commit>/``); the next run removes those of dead runs, and keeps those of this run and of
    a live run of another model, which writes into the same failures/ folder."""
    out = tmp_path / "out"
    assert beamsplitter_run(half_missing / "m.csv", out, checkpoint_2stems).returncode == 1
    (model,) = (p.name for p in (out / "stems").iterdir())
    now = time.time()
    # Another model's run, live (its lease runs out in 5 minutes); and one that died (its lease ran out).
    for other, run_id, renewed in (("4stems-0123456789ab", "20240102T030405Z-11aa22", now),
                                   ("5stems-0123456789ab", "20240102T030405Z-33bb44", now - 301)):
        (out / "stems" / other).mkdir()
        lease = out / "stems" / other / "_LEASE.json"
        lease.write_text(json.dumps({"run_id": run_id, "host": "elsewhere", "boot_id": None, "pid_ns": None,
                                     "pid": 1, "token": "t", "seconds": 300}))
        os.utime(lease, (renewed, renewed))  # a local lease's last renewal, by the store's clock

    def temp(folder: Path, commit: str) -> Path:
        shard = folder / f".temp-run-{commit}" / "8419795282937904730_d4ad2766-f803-4266-a9aa-c0bbfbdda9a8"
        shard.parent.mkdir(parents=True)
        shard.write_bytes(b"PAR1 an uncommitted shard")
        return shard.parent

    dead = [temp(out / "metadata" / model, "20240101T000000Z-dead00"),  # a run of this model, killed
            temp(out / "failures", "20240101T000000Z-dead00-w0002"),  # its wave 2, on the local runner
            temp(out / "failures", "20240102T030405Z-33bb44")]  # the other model's run whose lease ran out
    live = [temp(out / "failures", "20240102T030405Z-11aa22"),  # the live run of the other model
            temp(out / "failures", "20240102T030405Z-11aa22-w0001")]
    (out / "metadata" / model / ".temp-run-20240101T000000Z-empty0").mkdir()  # created, nothing written yet
    dead.append(out / "metadata" / model / ".temp-run-20240101T000000Z-empty0")
    again = beamsplitter_run(half_missing / "m.csv", out, checkpoint_2stems, "--run_id", "20240103T000000Z-cc55dd")
    assert again.returncode == 1 and "0 tracks done, 1 skipped, 2 failed" in again.stdout, again.stderr
    assert [p for p in dead if p.exists()] == []
    assert all(p.is_dir() for p in live)
    assert sorted(p.name for p in out.rglob(".temp-*")) == sorted(p.name for p in live)
