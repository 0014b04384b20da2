"""Two runs started together on one output (a scheduled run and a manual one): one writes, the other refuses;
and a run that loses its lease while it runs commits nothing.

Without the lease both found the same tracks undone, separated them, and
listed every metadata row twice.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import apache_beam as beam
import pandas as pd
import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import demo
from pipeline.options import BeamsplitterOptions, pin_local_runner
from pipeline.run import build, counters, resolve_run, run
from tests import services
from tests.pipeline.conftest import write_manifest
from tests.pipeline.test_runners import read_parquet_folder

pytestmark = pytest.mark.slow  # whole catalogue runs started together

BEAMSPLITTER = str(Path(sys.executable).parent / "beamsplitter")


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("overlap")
    demo.make_track(folder / "Song [Live].wav", seconds=200.0, seed=61)
    demo.make_track(folder / "intro.wav", seconds=30.0, seed=62)
    write_manifest(folder / "m.csv", [("song", "Song [Live].wav", "a"), ("intro", "intro.wav", "b")])
    return folder


def run_two_together(manifest: str, output: str, checkpoint, *options: str) -> tuple[tuple, tuple]:
    command = [BEAMSPLITTER, "run", "--manifest", manifest, "--output", output, "--checkpoint", str(checkpoint),
               *options]
    started = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    ended = [(p.wait(timeout=900), *p.communicate()) for p in started]
    (winner,), (loser,) = [e for e in ended if e[0] == 0], [e for e in ended if e[0] != 0]
    return winner, loser


def check_one_writer(winner, loser, metadata_folder: str, lease: str) -> None:
    assert loser[0] == 2, loser[2][-2000:]
    run_id = re.search(r"^run (\S+):", winner[1], re.M)[1]
    # One line, the last (a child without cloud credentials logs Beam's credential probe before it).
    last = loser[2].strip().splitlines()[-1]
    assert last.startswith("error: ") and f"_LEASE.json: run {run_id} (pid " in last, loser[2][-2000:]
    assert "2 tracks done, 0 skipped, 0 failed" in winner[1]
    table = pd.concat(read_parquet_folder(metadata_folder))
    assert sorted(zip(table["track_id"], table["instrument"])) == sorted(
        (t, i) for t in ("song", "intro") for i in ("vocals", "accompaniment"))
    assert set(table["run_id"]) == {run_id}
    assert not FileSystems.exists(lease)  # withdrawn by the run that held it


def test_two_local_runs_started_together(songs, checkpoint_2stems, tmp_path):
    out = tmp_path / "out"
    winner, loser = run_two_together(str(songs / "m.csv"), str(out), checkpoint_2stems)
    (model,) = (out / "stems").iterdir()
    check_one_writer(winner, loser, str(out / "metadata" / model.name), str(model / "_LEASE.json"))


def test_two_runs_started_together_on_s3(songs, checkpoint_2stems):
    """An object store whose conditional writes decide (moto's S3 server, as S3 itself; a catalogue job does not
    run on the GCS emulator that honours preconditions, see tests/unit/test_lease_stores.py)."""
    with services.s3_server("catalogue") as s3:
        for name in ("Song [Live].wav", "intro.wav", "m.csv"):
            s3.client.upload_file(str(songs / name), "catalogue", f"in/{name}")
        winner, loser = run_two_together("s3://catalogue/in/m.csv", "s3://catalogue/out", checkpoint_2stems,
                                         *s3.beam_options())
        FileSystems.set_options(PipelineOptions(s3.beam_options()))
        try:
            (card,) = [m.path for m in FileSystems.match(["s3://catalogue/out/stems/*/_MODEL.json"])[0].metadata_list]
            model = card.rsplit("/", 2)[-2]
            check_one_writer(winner, loser, f"s3://catalogue/out/metadata/{model}",
                             card.replace("_MODEL.json", "_LEASE.json"))
        finally:
            FileSystems.set_options(PipelineOptions([]))


@pytest.fixture(scope="module")
def short(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fenced")
    demo.make_track(folder / "a.wav", seconds=4.0, seed=63)
    write_manifest(folder / "m.csv", [("a", "a.wav", "x")])
    return folder


def take_over(lease: Path) -> None:
    """Another run takes the lease over, as once this run's has expired (its driver paused, say)."""
    taken = lease.with_name("taken.json")
    taken.write_text(json.dumps({"run_id": "usurper", "host": "elsewhere.example", "boot_id": None, "pid_ns": None,
                                 "pid": 1, "token": "usurper", "seconds": 300, "expires_at": time.time() + 300}))
    os.replace(taken, lease)


def test_a_pipeline_whose_lease_was_taken_commits_nothing(short, checkpoint_2stems, tmp_path):
    """Fencing (issue 17, 1): the commit step, wherever it runs, finds the lease another run's and writes no
    commit marker; the next run lists the track's rows again, once."""
    from transforms.catalogue.lease import Lease

    out = tmp_path / "out"
    options = PipelineOptions(["--manifest", str(short / "m.csv"), "--output", str(out),
                               "--checkpoint", str(checkpoint_2stems)])
    pin_local_runner(options)
    settings = resolve_run(options.view_as(BeamsplitterOptions))
    lease = Path(settings.job.layout.lease())
    with Lease(str(lease), settings.job.run_id) as held:
        take_over(lease)  # after the driver's last check: one pipeline for the whole catalogue
        pipeline = beam.Pipeline(options=options)
        build(pipeline, settings.holding(held.token))
        result = pipeline.run()
        result.wait_until_finish()
    assert counters(result).get("commits_refused") == 1
    assert not list(out.glob("metadata/*/_committed/*"))
    assert json.loads(lease.read_text())["run_id"] == "usurper"  # not withdrawn: it is not this run's

    lease.unlink()  # the usurper finished
    again = run(["--manifest", str(short / "m.csv"), "--output", str(out), "--checkpoint", str(checkpoint_2stems)])
    assert (again.summary.done, again.summary.skipped) == (0, 1)
    table = pd.concat(read_parquet_folder(str(out / "metadata" / lease.parent.name)))
    assert sorted(table["instrument"]) == ["accompaniment", "vocals"]
    assert [m.name for m in out.glob("metadata/*/_committed/*")] == [f"run-{commit}" for commit in again.commits]


def test_a_run_whose_lease_is_taken_stops_before_its_commit(short, checkpoint_2stems, tmp_path):
    out = tmp_path / "out"
    running = subprocess.Popen([BEAMSPLITTER, "run", "--manifest", str(short / "m.csv"), "--output", str(out),
                                "--checkpoint", str(checkpoint_2stems)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not (leases := list(out.glob("stems/*/_LEASE.json"))):
        assert running.poll() is None, running.communicate()
        time.sleep(0.05)
    take_over(leases[0])
    status, (_, errors) = running.wait(600), running.communicate()
    assert status == 2, errors[-2000:]
    last = errors.strip().splitlines()[-1]
    assert last.startswith("error: ") and "this run's lease was lost: run usurper" in last, errors[-2000:]
    assert not list(out.glob("metadata/*/_committed/*"))
    assert json.loads(leases[0].read_text())["run_id"] == "usurper"
