"""`beamsplitter run` on DirectRunner: outputs, failures, idempotence, resumption, model folders."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from models import decoding
from models.errors import InputError
from models.ffmpeg_process import ffmpeg_binary
from models.provider import load_separator
from pipeline.run import run
from pipeline import demo
from tests.pipeline.conftest import BAD, GOOD, write_manifest

pytestmark = pytest.mark.slow  # the catalogue job run again and again, killed, stalled

INSTRUMENTS = ("vocals", "accompaniment")


def run_job(capsys, *args):
    status = run(list(args)).exit_status
    return status, capsys.readouterr().out


def files_under(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file, with (inode, mtime_ns): a rewritten file changes both."""
    return {str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


def stem_folder(prefix: Path) -> Path:
    (model,) = (prefix / "stems").iterdir()
    return model


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, catalogue, checkpoint_2stems):
    prefix = tmp_path_factory.mktemp("out") / "prefix"
    before = files_under(catalogue)
    status = run(["--manifest", str(catalogue / "manifest.csv"), "--output", str(prefix),
                  "--checkpoint", str(checkpoint_2stems)]).exit_status
    assert files_under(catalogue) == before  # nothing written beside the sources
    return status, prefix


def test_every_good_track_has_stems_and_metadata(first_run, catalogue):
    status, prefix = first_run
    assert status == 1  # some rows failed
    model = stem_folder(prefix)
    for track_id in GOOD:
        folder = model / track_id
        assert sorted(p.name for p in folder.iterdir()) == ["_SUCCESS.json", "accompaniment.wav", "vocals.wav"]
        record = json.loads((folder / "_SUCCESS.json").read_text())
        assert record["source_uri"] == str(catalogue / GOOD[track_id])
    table = pq.read_table(prefix / "metadata").to_pandas()  # pyarrow reads the folder as a dataset
    assert len(table) == len(GOOD) * 2
    assert set(zip(table.track_id, table.instrument)) == {(t, i) for t in GOOD for i in INSTRUMENTS}
    row = table[(table.track_id == "rock/three") & (table.instrument == "vocals")].iloc[0]
    assert row.uri == str(model / "rock/three/vocals.wav") and row.source_uri == str(catalogue / "three.mp3")
    assert row.duration_s == pytest.approx(14.0, abs=0.06) and (row.sample_rate, row.channels) == (44100, 2)
    assert row.codec == "wav" and row.model.startswith("spleeter:2stems@sha256:") and row.artist == "artist 2"
    assert 0 < row.rms < row.peak <= 1.0
    files = sorted(str(p) for p in (prefix / "metadata").rglob("*.parquet"))
    assert len(pd.concat(pd.read_parquet(f) for f in files)) == len(GOOD) * 2
    query = f"select count(distinct track_id) from read_parquet('{prefix}/metadata/*/*.parquet')"
    assert duckdb.connect().execute(query).fetchall() == [(len(GOOD),)]


def test_every_bad_row_is_one_failure(first_run):
    _, prefix = first_run
    failures = pq.read_table(prefix / "failures").to_pandas()
    assert len(failures) == len(BAD)
    for track_id, uri, stage, fragment in BAD:
        matches = failures[(failures.stage == stage) & failures.message.str.contains(fragment, regex=False)]
        assert len(matches) == 1, (track_id, fragment, failures.to_dict("records"))
    assert set(failures.error_type) == {"InputError", "AudioError"}
    model = stem_folder(prefix)
    written = {str(p.relative_to(model).parent) for p in model.rglob("_SUCCESS.json")}
    assert written == set(GOOD)
    assert not (model / "half").exists()  # its first chunk was separated, then decoding failed


def test_output_equals_separate(first_run, catalogue, checkpoint_2stems):
    _, prefix = first_run
    separator = load_separator("spleeter:2stems", str(checkpoint_2stems))
    expected = separator.separate(decoding.load(str(catalogue / "two.flac"), 44100))
    for name in INSTRUMENTS:
        ours = decoding.load(str(stem_folder(prefix) / "pop/two" / f"{name}.wav"), 44100)
        reference = np.round(np.clip(expected[name], -1, 1) * 32768) / 32768
        error = np.sum((ours - reference) ** 2)
        assert error == 0 or 10 * np.log10(np.sum(reference ** 2) / error) >= 90


def test_several_tracks_at_once_write_the_same_stems(first_run, catalogue, checkpoint_2stems, tmp_path):
    """With an accelerator a worker decodes --inference_batch_size tracks at once and the model's batches
    mix their chunks (issue 18, item 4; the local runner ignores the hint itself): the same bytes, and
    the same failures, the half-decoded track's included."""
    _, prefix = first_run
    ours = tmp_path / "prefix"
    status = run(["--manifest", str(catalogue / "manifest.csv"), "--output", str(ours),
                  "--checkpoint", str(checkpoint_2stems), "--inference_accelerator=type:nvidia-l4;count:1",
                  "--inference_batch_size=3"]).exit_status
    assert status == 1
    for track_id in GOOD:
        for name in INSTRUMENTS:
            relative = Path(track_id) / f"{name}.wav"
            assert (stem_folder(ours) / relative).read_bytes() == (stem_folder(prefix) / relative).read_bytes()
    assert not (stem_folder(ours) / "half").exists()
    failures = pq.read_table(ours / "failures").to_pandas()
    assert sorted(failures.message) == sorted(pq.read_table(prefix / "failures").to_pandas().message)


def test_second_run_rewrites_nothing(first_run, catalogue, checkpoint_2stems, capsys):
    _, prefix = first_run
    stems_before = files_under(prefix / "stems")
    metadata_before = files_under(prefix / "metadata")
    status, out = run_job(capsys, "--manifest", str(catalogue / "manifest.csv"), "--output", str(prefix),
                          "--checkpoint", str(checkpoint_2stems))
    assert status == 1
    assert f"0 tracks done, {len(GOOD)} skipped, {len(BAD)} failed" in out
    assert files_under(prefix / "stems") == stems_before
    # Only the run's own figures are added (for `beamsplitter report`): no metadata file is written again.
    metadata_after = files_under(prefix / "metadata")
    added = set(metadata_after) - set(metadata_before)
    assert len(added) == 1 and "/_runs/run-" in next(iter(added)), added
    assert {path: metadata_after[path] for path in metadata_before} == metadata_before


def test_grown_manifest_and_changed_source(tmp_path, catalogue, checkpoint_2stems, capsys):
    folder = tmp_path / "cat"
    shutil.copytree(catalogue, folder)
    prefix = tmp_path / "prefix"
    good = [(t, u, "a") for t, u in GOOD.items()]
    write_manifest(folder / "m.csv", good)
    assert run_job(capsys, "--manifest", str(folder / "m.csv"), "--output", str(prefix),
                   "--checkpoint", str(checkpoint_2stems))[0] == 0
    demo.make_track(folder / "five.wav", seconds=5.0, seed=42)
    demo.make_track(folder / "one.wav", seconds=6.0, seed=43)  # the source of pop/one changed
    write_manifest(folder / "m.csv", good + [("five", "five.wav", "new")])
    status, out = run_job(capsys, "--manifest", str(folder / "m.csv"), "--output", str(prefix),
                          "--checkpoint", str(checkpoint_2stems))
    assert status == 0 and f"2 tracks done, {len(GOOD) - 1} skipped, 0 failed" in out
    vocals = decoding.load(str(stem_folder(prefix) / "pop/one/vocals.wav"), 44100)
    assert len(vocals) == 6 * 44100

    status, out = run_job(capsys, "--manifest", str(folder / "m.csv"), "--output", str(prefix),
                          "--checkpoint", str(checkpoint_2stems), "--force")
    assert f"{len(GOOD) + 1} tracks done, 0 skipped" in out

    # docs/catalogue.md's query for the current row of every stem: one each, from the run that wrote it.
    page = (Path(__file__).parents[2] / "docs" / "catalogue.md").read_text()
    query = re.search(r"```sql\n(select .*? = 1)\n```", page, re.S)[1].replace("out/", f"{prefix}/")
    current = duckdb.connect().execute(query).df()
    assert len(pq.read_table(prefix / "metadata").to_pandas()) == 2 * (len(GOOD) + 2 + len(GOOD) + 1)  # 3 runs
    assert sorted(zip(current.track_id, current.instrument)) == sorted(
        (t, i) for t in [*GOOD, "five"] for i in INSTRUMENTS)
    records = {t: json.loads((stem_folder(prefix) / t / "_SUCCESS.json").read_text()) for t in [*GOOD, "five"]}
    assert all(row.run_id == records[row.track_id]["run_id"] for row in current.itertuples())


def test_input_glob_and_another_model(tmp_path, catalogue, random_checkpoint, checkpoint_2stems, capsys):
    prefix = tmp_path / "prefix"
    args = ["--input", str(catalogue / "*.flac"), "--output", str(prefix)]  # two.flac, the empty and the cut one
    status, out = run_job(capsys, *args, "--checkpoint", str(checkpoint_2stems), "-c", "flac")
    assert status == 1 and "1 tracks done, 0 skipped, 2 failed (decode: 2)" in out
    status, out = run_job(capsys, *args, "-p", "spleeter:4stems", "--checkpoint",
                          str(random_checkpoint("spleeter:4stems")), "-c", "mp3", "-b", "96k")
    assert "1 tracks done, 0 skipped, 2 failed" in out
    folders = sorted(p.name for p in (prefix / "stems").iterdir())
    assert [f.split("-")[0] for f in folders] == ["2stems", "4stems"]
    four = next(p for p in (prefix / "stems").iterdir() if p.name.startswith("4stems"))
    assert sorted(p.name for p in (four / "two.flac").iterdir()) == [
        "_SUCCESS.json", "bass.mp3", "drums.mp3", "other.mp3", "vocals.mp3"]


def test_killed_run_resumes_without_loss_or_repeats(tmp_path, catalogue, checkpoint_2stems):
    folder = tmp_path / "cat"
    folder.mkdir()
    rows = []
    for i in range(6):
        demo.make_track(folder / f"t{i}.wav", seconds=12.0, seed=100 + i)
        rows.append((f"t{i}", f"t{i}.wav", str(i)))
    write_manifest(folder / "m.csv", rows)
    prefix = tmp_path / "prefix"
    command = [str(Path(sys.executable).parent / "beamsplitter"), "run", "--manifest", str(folder / "m.csv"),
               "--output", str(prefix), "--checkpoint", str(checkpoint_2stems), "--local_wave_tracks=2"]
    victim = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not list(prefix.rglob("_SUCCESS.json")) and time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.2)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    first = {p.parent.name: json.loads(p.read_text())["run_id"] for p in prefix.rglob("_SUCCESS.json")}
    assert 0 < len(first) < 6, "the run should have been killed part-way"
    # as if killed while publishing a stem of a track that is not done yet
    unfinished = next(f"t{i}" for i in range(6) if f"t{i}" not in first)
    leftover = stem_folder(prefix) / unfinished / ".vocals.wav.0123456789ab.part"
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"half a stem")

    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{6 - len(first)} tracks done, {len(first)} skipped, 0 failed" in again.stdout
    records = {p.parent.name: json.loads(p.read_text())["run_id"] for p in prefix.rglob("_SUCCESS.json")}
    assert set(records) == {f"t{i}" for i in range(6)}
    assert all(records[t] == run_id for t, run_id in first.items())  # not done twice
    table = pq.read_table(prefix / "metadata").to_pandas()
    assert sorted(table.track_id) == sorted(f"t{i}" for i in range(6) for _ in INSTRUMENTS)
    assert not [p for p in prefix.rglob("*") if p.name.endswith(".part")]


@pytest.mark.parametrize("name,content,message", [
    ("m.csv", "track,uri\nx,a.wav\n", "manifest lacks the column(s) track_id (has: track, uri)"),
    ("m.txt", "track_id,uri\n", "unknown manifest format"),
    ("m.parquet", "not parquet", "not a Parquet file"),
])
def test_unusable_manifest_stops_before_anything_runs(tmp_path, checkpoint_2stems, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(InputError, match=re.escape(message)):
        run(["--manifest", str(tmp_path / name), "--output", str(tmp_path / "out"),
             "--checkpoint", str(checkpoint_2stems)])
    assert not (tmp_path / "out" / "metadata").exists()


def test_metadata_is_committed_by_the_job_itself(tmp_path, catalogue, checkpoint_2stems):
    """Launchers that do not wait (Dataflow templates, schedulers) still leave committed metadata."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.options import BeamsplitterOptions, pin_local_runner
    from pipeline.run import build, resolve_run

    write_manifest(tmp_path / "m.csv", [("pop/two", str(catalogue / "two.flac"), "x")])
    options = PipelineOptions(["--manifest", str(tmp_path / "m.csv"), "--output", str(tmp_path / "out"),
                               "--checkpoint", str(checkpoint_2stems)])
    pin_local_runner(options)
    settings = resolve_run(options.view_as(BeamsplitterOptions))
    with beam.Pipeline(options=options) as pipeline:
        build(pipeline, settings)
    markers = list((tmp_path / "out" / "metadata").glob("*/_committed/run-*"))
    assert [m.name for m in markers] == [f"run-{settings.job.run_id}"]
    assert len(pq.read_table(tmp_path / "out" / "metadata").to_pandas()) == 2


def test_sources_are_named_literally_not_as_globs(tmp_path, catalogue, checkpoint_2stems):
    """Brackets and question marks are common in music file names; a name is never a glob."""
    music = tmp_path / "music"
    music.mkdir()
    source = (catalogue / "one.wav").read_bytes()
    (music / "Song [Live] (feat. X).wav").write_bytes(source)
    (music / "take1.wav").write_bytes(source[: len(source) // 2])  # what "take?.wav" would match as a glob
    (music / "take?.wav").write_bytes(source)
    write_manifest(tmp_path / "m.csv", [("live", "music/Song [Live] (feat. X).wav", "a"),
                                        ("take", "music/take?.wav", "b")])
    # The output prefix too: its metadata is listed to settle earlier runs.
    out = tmp_path / "out [2024]?"
    args = ["--manifest", str(tmp_path / "m.csv"), "--output", str(out), "--checkpoint", str(checkpoint_2stems)]
    assert run(args).exit_status == 0
    records = {p.parent.name: json.loads(p.read_text()) for p in stem_folder(out).glob("*/_SUCCESS.json")}
    assert sorted(records) == ["live", "take"]
    assert records["take"]["source_fingerprint"]["size"] == len(source)  # its own size, not take1.wav's
    assert run(args).exit_status == 0  # and a second run finds both done
    assert {p.parent.name: json.loads(p.read_text())["run_id"]
            for p in stem_folder(out).glob("*/_SUCCESS.json")} == {k: r["run_id"] for k, r in records.items()}
    # ... and its metadata committed: the second run lists no row again.
    assert len(pd.concat(pd.read_parquet(p) for p in (out / "metadata").rglob("*.parquet"))) == 4


def test_a_stalled_source_fails_alone_and_the_run_ends(tmp_path, checkpoint_2stems, stalled_source):
    """A source that stops delivering (a stalled mount, a stuck decoder) fails its track; the rest finish."""
    from tests.conftest import running_ffmpeg
    from tests.services import descendants

    folder = tmp_path / "cat"
    folder.mkdir()
    for i in range(2):
        demo.make_track(folder / f"t{i}.wav", seconds=150.0, seed=200 + i)
    stalled = stalled_source(folder / "stalled.wav", seconds=60)  # five model chunks, then nothing
    write_manifest(folder / "m.csv", [("t0", "t0.wav", "a"), ("stalled", "stalled.wav", "b"), ("t1", "t1.wav", "c")])
    prefix = tmp_path / "out"
    assert run(["--manifest", str(folder / "m.csv"), "--output", str(prefix), "--checkpoint", str(checkpoint_2stems),
                "--stall_timeout=5"]).exit_status == 1
    assert stalled.stalled.is_set()
    assert sorted(p.parent.name for p in prefix.glob("stems/*/*/_SUCCESS.json")) == ["t0", "t1"]
    assert not any(p.is_file() for p in (stem_folder(prefix) / "stalled").rglob("*"))  # its first chunks too
    failures = pq.read_table(prefix / "failures").to_pandas()
    assert failures[["track_id", "stage", "message"]].values.tolist() == [[
        "stalled", "decode",
        f"{folder / 'stalled.wav'}: no data from the source for 5 s (--stall_timeout); decoding stopped"]]
    assert running_ffmpeg(descendants(os.getpid())) == []


def test_other_encoding_options_redo_the_track(tmp_path, catalogue, checkpoint_2stems, capsys):
    """Done means: this source, this model, these encoding options; a run asking for other stems writes them."""
    write_manifest(tmp_path / "m.csv", [("pop/one", str(catalogue / "one.wav"), "a"),
                                        ("pop/two", str(catalogue / "two.flac"), "b")])
    args = ["--manifest", str(tmp_path / "m.csv"), "--output", str(tmp_path / "out"),
            "--checkpoint", str(checkpoint_2stems)]

    def stems_and_record(track):
        folder = stem_folder(tmp_path / "out") / track
        return sorted(p.name for p in folder.iterdir()), json.loads((folder / "_SUCCESS.json").read_text())

    assert run_job(capsys, *args)[0] == 0
    status, out = run_job(capsys, *args, "-c", "flac")
    assert status == 0 and "2 tracks done, 0 skipped" in out
    names, record = stems_and_record("pop/one")
    assert names == ["_SUCCESS.json", "accompaniment.flac", "vocals.flac"]  # the wav stems are gone
    assert record["encoding"] == {"codec": "flac", "bitrate": None, "sample_format": "s16"}
    assert "0 tracks done, 2 skipped" in run_job(capsys, *args, "-c", "flac", "-b", "320k")[1]  # flac has no bitrate
    assert "2 tracks done, 0 skipped" in run_job(capsys, *args, "-c", "flac", "--sample_format", "s24")[1]
    assert "2 tracks done, 0 skipped" in run_job(capsys, *args, "-c", "mp3", "-b", "96k")[1]
    assert "2 tracks done, 0 skipped" in run_job(capsys, *args, "-c", "mp3", "-b", "192k")[1]
    assert stems_and_record("pop/two")[1]["encoding"] == {"codec": "mp3", "bitrate": "192k", "sample_format": None}
    table = pq.read_table(tmp_path / "out" / "metadata").to_pandas()
    latest = table[table.run_id == table.sort_values("processed_at").run_id.iloc[-1]]
    assert set(zip(latest.codec, latest.bitrate, latest.sample_format.isna())) == {("mp3", "192k", True)}
    assert set(zip(table.codec, table.sample_format.fillna("-"))) == {
        ("wav", "s16"), ("flac", "s16"), ("flac", "s24"), ("mp3", "-")}


def test_a_redo_that_dies_part_way_leaves_the_track_not_done(tmp_path, catalogue, checkpoint_2stems, capsys):
    """The old record is withdrawn before the first stem is replaced: never old and new stems under a record."""
    write_manifest(tmp_path / "m.csv", [("pop/one", str(catalogue / "one.wav"), "a")])
    args = ["--manifest", str(tmp_path / "m.csv"), "--output", str(tmp_path / "out"),
            "--checkpoint", str(checkpoint_2stems)]
    assert run_job(capsys, *args)[0] == 0
    folder = stem_folder(tmp_path / "out") / "pop/one"
    # vocals.wav is replaced first; then accompaniment.wav cannot be (a folder took its name).
    (folder / "accompaniment.wav").unlink()
    (folder / "accompaniment.wav").mkdir()
    status, out = run_job(capsys, *args, "--force")
    assert status == 1 and "0 tracks done, 0 skipped, 1 failed (encode: 1)" in out
    assert not (folder / "_SUCCESS.json").exists()
    (folder / "accompaniment.wav").rmdir()
    status, out = run_job(capsys, *args)
    assert status == 0 and "1 tracks done, 0 skipped" in out


def test_sources_and_stems_are_stored_absolute_whatever_their_spelling(tmp_path, checkpoint_2stems, capsys,
                                                                       monkeypatch):
    # Files reached by a relative glob, then by an absolute one, by file:// URIs and through a manifest,
    # from other working folders, are the same files: done once, skipped after.
    music = tmp_path / "work" / "music"
    music.mkdir(parents=True)
    for seed, name in enumerate(("a", "b")):
        demo.make_track(music / f"{name}.wav", seconds=2.0, seed=seed)
    (music / "bad.wav").write_text("no music here\n")
    write_manifest(tmp_path / "work" / "cat.csv", [("a.wav", "music/a.wav", "x"), ("b.wav", "./music/../music/b.wav", "y")])
    (tmp_path / "elsewhere").mkdir()
    checkpoint = ["--checkpoint", str(checkpoint_2stems)]
    monkeypatch.chdir(tmp_path / "work")
    status, out = run_job(capsys, "--input", "music/*.wav", "--output", "./x/../out/", *checkpoint)
    assert status == 1 and "2 tracks done, 0 skipped, 1 failed" in out
    prefix = tmp_path / "work" / "out"
    rows = pd.read_parquet(prefix / "metadata")
    assert sorted(rows.source_uri.unique()) == [str(music / "a.wav"), str(music / "b.wav")]
    assert all(uri.startswith(str(prefix / "stems") + "/") and os.path.isfile(uri) for uri in rows.uri)
    (failed,) = pd.read_parquet(prefix / "failures").source_uri
    assert failed == str(music / "bad.wav")
    for record in (prefix / "stems").glob("*/*/_SUCCESS.json"):
        assert json.loads(record.read_text())["source_uri"] in {str(music / "a.wav"), str(music / "b.wav")}
    # No temporary folders of Beam's file writes are left behind.
    assert not [p for p in prefix.rglob(".temp*")]
    monkeypatch.chdir(tmp_path / "elsewhere")
    for args in (["--input", str(music / "*.wav"), "--output", "../work/out"],
                 ["--input", f"file://{music}/*.wav", "--output", f"file://{prefix}"],
                 ["--manifest", f"file://{tmp_path}/work/cat.csv", "--output", f"{prefix}/"]):
        status, out = run_job(capsys, *args, *checkpoint)
        assert "0 tracks done, 2 skipped" in out, (args, out)
    assert not [p for p in prefix.rglob(".temp*")]


@pytest.mark.parametrize("tracks,per_wave", [(4, 2), (2, 1)])
def test_local_waves_hold_local_wave_tracks_tracks(tmp_path, checkpoint_2stems, capsys, tracks, per_wave):
    """4 tracks at 2 per wave went 3+1, and 2 at 1 per wave 2+0 (issue 11, item 16). Each wave makes its
    own metadata commit (``run-<run_id>-w<wave>``): the tracks in each commit are the tracks of its wave.
    The README's spelling of the options reaches the job too (item 9: --sample-format f32 wrote 16-bit)."""
    for i in range(tracks):
        demo.make_track(tmp_path / f"t{i}.wav", seconds=3.0, seed=700 + i)
    write_manifest(tmp_path / "m.csv", [(f"t{i}", f"t{i}.wav", "x") for i in range(tracks)])
    prefix = tmp_path / "out"
    status, out = run_job(capsys, "--manifest", str(tmp_path / "m.csv"), "--output", str(prefix),
                          "--checkpoint", str(checkpoint_2stems), f"--local-wave-tracks={per_wave}",
                          "--sample-format", "f32")
    assert status == 0 and f"{tracks} tracks done" in out
    (model,) = (prefix / "metadata").iterdir()
    markers = sorted(p.name for p in (model / "_committed").iterdir())
    assert len(markers) == tracks // per_wave
    waves = [sorted(pd.concat(pd.read_parquet(f) for f in model.glob(f"{marker}-*.parquet")).track_id.unique())
             for marker in markers]
    assert waves == [[f"t{i}" for i in range(w * per_wave, (w + 1) * per_wave)] for w in range(len(markers))]
    probe = subprocess.run([ffmpeg_binary(), "-hide_banner", "-i", str(stem_folder(prefix) / "t0" / "vocals.wav")],
                           capture_output=True, text=True).stderr
    assert "pcm_f32le" in probe


def test_worker_processes_keep_their_noise_to_themselves(tmp_path, catalogue, checkpoint_2stems):
    """--direct_running_mode=multi_processing printed Beam's warnings and gRPC's fork notices for every worker."""
    write_manifest(tmp_path / "m.csv", [("pop/one", str(catalogue / "one.wav"), "a"),
                                        ("pop/two", str(catalogue / "two.flac"), "b")])
    result = subprocess.run([str(Path(sys.executable).parent / "beamsplitter"), "run", "--manifest",
                             str(tmp_path / "m.csv"), "--output", str(tmp_path / "out"), "--checkpoint",
                             str(checkpoint_2stems), "--direct_running_mode=multi_processing",
                             "--direct_num_workers=2"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 tracks done, 0 skipped, 0 failed" in result.stdout
    assert "Worker: severity" not in result.stderr and "fork_posix" not in result.stderr, result.stderr[-3000:]
