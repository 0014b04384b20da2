"""Two runs started together on one output (a scheduled run and a manual one): one writes, the other refuses.

Without the lease both found the same tracks undone, separated them, and
listed every metadata row twice.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from apache_beam.io.filesystems import FileSystems

from pipeline import demo
from tests import services
from tests.pipeline.conftest import write_manifest
from tests.pipeline.test_runners import read_parquet_folder

BEAMSPLITTER = str(Path(sys.executable).parent / "beamsplitter")


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("overlap")
    demo.make_track(folder / "Song [Live].wav", seconds=200.0, seed=61)
    demo.make_track(folder / "intro.wav", seconds=30.0, seed=62)
    write_manifest(folder / "m.csv", [("song", "Song [Live].wav", "a"), ("intro", "intro.wav", "b")])
    return folder


def run_two_together(manifest: str, output: str, checkpoint) -> tuple[tuple, tuple]:
    command = [BEAMSPLITTER, "run", "--manifest", manifest, "--output", output, "--checkpoint", str(checkpoint)]
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


def test_two_runs_started_together_on_gcs(songs, checkpoint_2stems):
    with services.gcs_emulator() as gcs:
        for name in ("Song [Live].wav", "intro.wav", "m.csv"):
            with FileSystems.create(gcs.url(f"catalogue/{name}")) as out:
                out.write((songs / name).read_bytes())
        winner, loser = run_two_together(gcs.url("catalogue/m.csv"), gcs.url("out"), checkpoint_2stems)
        (card,) = [m.path for m in FileSystems.match([gcs.url("out/stems/*/_MODEL.json")])[0].metadata_list]
        model = card.rsplit("/", 2)[-2]
        check_one_writer(winner, loser, gcs.url(f"out/metadata/{model}"), card.replace("_MODEL.json", "_LEASE.json"))
