"""Runs killed at the worst moments, then run again: nothing lost, nothing doubled, and reruns converge."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import cli, demo
from pipeline.options import BeamsplitterOptions, pin_local_runner
from pipeline.run import build, resolve_run, run
from tests.pipeline.conftest import write_manifest
from tests.pipeline.test_catalogue import files_under, stem_folder

pytestmark = pytest.mark.slow  # runs killed and recovered

REPO = Path(__file__).resolve().parents[2]
INSTRUMENTS = ("vocals", "accompaniment")


def catalogue(folder: Path, track_ids: list[str], seconds: float = 3.0) -> Path:
    """A manifest over short tracks (one model chunk each), one per id."""
    folder.mkdir()
    rows = []
    for i, track_id in enumerate(track_ids):
        demo.make_track(folder / f"t{i}.wav", seconds=seconds, seed=300 + i)
        rows.append((track_id, f"t{i}.wav", f"artist {i}"))
    return write_manifest(folder / "m.csv", rows)


def killed(moment: str, *args: str) -> None:
    """``beamsplitter run ARGS``, killed with SIGKILL at ``moment`` (see tests/pipeline/killed_run.py)."""
    result = subprocess.run([sys.executable, "-m", "tests.pipeline.killed_run", moment, "run", *args], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]


def rows_per_stem(prefix: Path) -> Counter:
    """How many rows the whole metadata dataset holds for each (track, instrument)."""
    if not (prefix / "metadata").exists():
        return Counter()
    return Counter((row["track_id"], row["instrument"]) for row in pq.read_table(prefix / "metadata").to_pylist())


def track_folder(prefix: Path, track_id: str) -> Path:
    return stem_folder(prefix) / track_id


def run_in_waves(args: list[str]) -> None:
    """The local runner's way: the driver checks the tracks, a pipeline per wave."""
    assert run(args).exit_status == 0


def run_in_one_pipeline(args: list[str]) -> None:
    """The distributed runners' way: one pipeline reads, checks and recovers the whole catalogue."""
    options = PipelineOptions(args)
    pin_local_runner(options)
    settings = resolve_run(options.view_as(BeamsplitterOptions))
    with beam.Pipeline(options=options) as pipeline:
        build(pipeline, settings)


def outputs(prefix: Path) -> dict:
    """Every file under ``prefix`` but the runs' figures (metadata/<model>/_runs), which each run adds."""
    return {path: stat for path, stat in files_under(prefix).items() if "/_runs/" not in path}


@pytest.mark.parametrize("rerun", [run_in_waves, run_in_one_pipeline], ids=["waves", "one-pipeline"])
def test_rows_recovered_after_a_kill_land_once(tmp_path, checkpoint_2stems, rerun):
    """Killed after the track's record appeared, before its metadata commit landed: the rows land once."""
    manifest = catalogue(tmp_path / "cat", ["song"])
    prefix = tmp_path / "out"
    args = ["--manifest", str(manifest), "--output", str(prefix), "--checkpoint", str(checkpoint_2stems)]
    killed("after-record", *args)
    record = track_folder(prefix, "song") / "_SUCCESS.json"
    assert record.exists() and rows_per_stem(prefix) == Counter()
    # The recovering run dies too, right after it moved the record to its own commit: nothing is lost.
    killed("after-record", *args)
    assert rows_per_stem(prefix) == Counter()
    one_each = Counter({("song", instrument): 1 for instrument in INSTRUMENTS})
    rerun(args)
    assert rows_per_stem(prefix) == one_each
    recovered = outputs(prefix)
    for _ in range(2):  # converged: nothing new, nothing rewritten (but each run's own figures)
        rerun(args)
        assert rows_per_stem(prefix) == one_each
        assert outputs(prefix) == recovered
    assert json.loads(record.read_text())["metadata_commit"] in {
        p.name.removeprefix("run-") for p in prefix.glob("metadata/*/_committed/run-*")}


@pytest.mark.parametrize("rerun", [run_in_waves, run_in_one_pipeline], ids=["waves", "one-pipeline"])
def test_stems_added_to_a_track_whose_first_commit_never_landed_land_once_each(tmp_path, checkpoint_2stems, rerun):
    """--stems accompaniment killed after the record, before its commit; a full run then adds the vocals and
    lists the accompaniment's row with them, once, keeping the accompaniment's file as it was."""
    manifest = catalogue(tmp_path / "cat", ["song"])
    prefix = tmp_path / "out"
    args = ["--manifest", str(manifest), "--output", str(prefix), "--checkpoint", str(checkpoint_2stems)]
    killed("after-record", *args, "--stems", "accompaniment")
    folder = track_folder(prefix, "song")
    assert sorted(p.name for p in folder.iterdir()) == ["_SUCCESS.json", "accompaniment.wav"]
    assert rows_per_stem(prefix) == Counter()
    kept = (folder / "accompaniment.wav").stat()
    rerun(args)
    one_each = Counter({("song", instrument): 1 for instrument in INSTRUMENTS})
    assert rows_per_stem(prefix) == one_each
    after = (folder / "accompaniment.wav").stat()
    assert (after.st_mtime_ns, after.st_size) == (kept.st_mtime_ns, kept.st_size)
    for _ in range(2):
        rerun(args)
        assert rows_per_stem(prefix) == one_each


def test_a_run_id_already_used_is_refused(tmp_path, checkpoint_2stems, capsys):
    """A run id names one run: another run under it would overwrite its metadata and failure files."""
    manifest = catalogue(tmp_path / "cat", ["song"])
    with open(manifest, "a") as f:
        f.write("gone,missing.wav,x\n")  # a failure row: the run writes failure files too
    prefix = tmp_path / "out"
    args = ["run", "--manifest", str(manifest), "--output", str(prefix), "--checkpoint", str(checkpoint_2stems),
            "--run_id", "nightly"]
    assert cli.main(args) == 1
    capsys.readouterr()
    traces = {"metadata": "metadata/*/run-nightly-*.parquet", "commit marker": "metadata/*/_committed/run-nightly-*",
              "failures": "failures/run-nightly-*.parquet"}
    for kind, pattern in traces.items():  # each trace alone is enough to refuse
        assert list(prefix.glob(pattern)), kind
        before = files_under(prefix)
        assert cli.main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --run_id nightly:") and len(err.splitlines()) == 1, err
        assert str(next(prefix.glob(pattern))) in err
        assert files_under(prefix) == before  # nothing ran, nothing was written
        for path in prefix.glob(pattern):
            path.unlink()
    # A run id that only starts like it is another run's.
    assert cli.main([*args[:-1], "night"]) == 1


def test_a_redo_killed_after_withdrawing_its_record_leaves_only_new_stems(tmp_path, checkpoint_2stems):
    """A -c flac redo of WAV stems, killed just after withdrawing a record: the rerun keeps FLAC stems only.

    Track ``a/b`` lives inside track ``a``'s folder: sweeping ``a``'s stems leaves it alone.
    """
    manifest = catalogue(tmp_path / "cat", ["a/b", "a"])
    prefix = tmp_path / "out"
    args = ["--manifest", str(manifest), "--output", str(prefix), "--checkpoint", str(checkpoint_2stems)]
    run_in_waves(args)
    (track_folder(prefix, "a") / "cover.jpg").write_bytes(b"not a stem")
    killed("after-withdrawal", *args, "-c", "flac")
    first = track_folder(prefix, "a/b")  # the catalogue's first track: its record was withdrawn
    assert not (first / "_SUCCESS.json").exists() and (first / "vocals.wav").exists()
    run_in_waves([*args, "-c", "flac"])
    for track_id, others in (("a/b", []), ("a", ["b", "cover.jpg"])):
        folder = track_folder(prefix, track_id)
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            ["_SUCCESS.json", "accompaniment.flac", "vocals.flac", *others])
        record = json.loads((folder / "_SUCCESS.json").read_text())
        assert record["stems"] == {name: str(folder / f"{name}.flac") for name in INSTRUMENTS}
