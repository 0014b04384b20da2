"""``beamsplitter evaluate`` end to end on a tiny musdb-style dataset.

The dataset: two 4 s tracks of synthetic music with their four stems, and a
third whose mixture is not audio. The random-weight 4stems model goes through
the catalogue job; the oracle (ideal ratio masks) through the same chunking,
STFT and masks; both are scored with BSSEval v4 (whose agreement with museval
is tests/unit/test_bsseval.py's business). Run with ``-s`` to see the summaries.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystems import FileSystems
from PIL import Image

from models import decoding
from pipeline.cli import main
from tests import music
from tests import services
from transforms.catalogue.dataset import discover

pytestmark = pytest.mark.slow  # catalogue jobs evaluated end to end, museval beside them

SECONDS = 4.0
INSTRUMENTS = ("vocals", "drums", "bass", "other")  # spleeter:4stems's, in its order
GOOD = ("song-a", "song-b")
BROKEN = "zz-broken"
FRAME_COLUMNS = ["track", "instrument", "frame", "time_s", "sdr", "isr", "sir", "sar", "model"]
TRACK_COLUMNS = ["track", "instrument", "frames", "sdr", "isr", "sir", "sar", "model"]
# The oracle must beat the untrained model by this much on every instrument (measured: 9 to 16 dB).
ORACLE_MARGIN_DB = 5.0


@dataclass
class Outcome:
    status: int
    stdout: str
    stderr: str
    output: Path

    def table(self, name: str) -> pd.DataFrame:
        return pd.read_parquet(self.output / name)

    def errors(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error: ")]


def evaluate(output: Path, *args: str) -> Outcome:
    """``beamsplitter evaluate -o OUTPUT ARGS...`` in this process (TensorFlow loads once).

    ``sys.argv`` holds options that would break the job if they reached it: evaluate's
    catalogue job must take only the options it is given.
    """
    out, err = io.StringIO(), io.StringIO()
    argv = ["beamsplitter", "--runner=NoSuchRunner", "--fan_out=sideways"]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), mock.patch.object(sys, "argv", argv):
        status = main(["evaluate", "-o", str(output), "-p", "spleeter:4stems", *args])
    print(out.getvalue())
    return Outcome(status, out.getvalue(), err.getvalue(), output)


@pytest.fixture(scope="module")
def musdb(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("musdb")
    for seed, name in enumerate(GOOD):
        music.make_multitrack(root / name, SECONDS, seed, INSTRUMENTS)
    broken = music.make_multitrack(root / BROKEN, 1.0, 9, INSTRUMENTS)
    (broken / "mixture.wav").write_text("no music here\n")
    return root


@pytest.fixture(scope="module")
def evaluations(musdb, random_checkpoint, tmp_path_factory) -> dict[str, Outcome]:
    out = tmp_path_factory.mktemp("evaluations")
    return {
        "random": evaluate(out / "random", "--dataset", str(musdb),
                           "--checkpoint", str(random_checkpoint("spleeter:4stems"))),
        "oracle": evaluate(out / "oracle", "--dataset", str(musdb), "--oracle"),
    }


def check_outputs(outcome: Outcome, model_prefix: str, tracks: tuple[str, ...]) -> None:
    frames, per_track = outcome.table("frames.parquet"), outcome.table("tracks.parquet")
    assert list(frames.columns) == FRAME_COLUMNS
    assert list(per_track.columns) == TRACK_COLUMNS
    schema = pq.read_schema(outcome.output / "frames.parquet")
    assert schema.field("frame").type == pa.int32() and schema.field("sdr").type == pa.float64()
    assert len(frames) == len(tracks) * 4 * int(SECONDS)  # 4 instruments, 1 s frames
    assert sorted(frames.track.unique()) == sorted(tracks)
    assert list(frames.instrument.unique()) == list(INSTRUMENTS)
    assert frames.model.str.startswith(model_prefix).all() and frames.model.nunique() == 1
    np.testing.assert_array_equal(frames.time_s, frames.frame.astype(float))
    assert frames[["sdr", "isr", "sir", "sar"]].notna().all().all()
    medians = frames.groupby(["track", "instrument"])[["sdr", "isr", "sir", "sar"]].median()
    indexed = per_track.set_index(["track", "instrument"])
    pd.testing.assert_frame_equal(indexed[["sdr", "isr", "sir", "sar"]].sort_index(), medians.sort_index())
    assert (per_track.frames == int(SECONDS)).all()
    # the terminal summary: the header, then one line per instrument with four figures
    lines = outcome.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("instrument"))
    assert lines[header].split() == ["instrument", "SDR", "SIR", "ISR", "SAR"]
    for instrument, line in zip(INSTRUMENTS, lines[header + 1:header + 5]):
        cells = line.split()
        assert cells[0] == instrument and len(cells) == 5
        assert float(cells[1]) == pytest.approx(per_track[per_track.instrument == instrument].sdr.median(), abs=0.006)
    figure = outcome.output / "sdr.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(figure) as image:
        image.verify()
    with Image.open(figure) as image:
        assert image.format == "PNG" and image.size[0] >= 400 and image.size[1] >= 300


def test_a_random_model_through_the_catalogue_job(evaluations, musdb):
    outcome = evaluations["random"]
    assert outcome.status == 1, outcome.stderr  # the broken track
    assert "Traceback" not in outcome.stderr
    errors = outcome.errors()
    assert len(errors) == 1 and errors[0].startswith(f"error: {BROKEN}: {musdb / BROKEN / 'mixture.wav'}: "
                                                     "not decodable audio (")
    check_outputs(outcome, "spleeter:4stems@sha256:", GOOD)
    # the job's own stems, float WAV, as long as the mixtures
    folders = list((outcome.output / "separation" / "stems").glob("4stems-*/song-a"))
    assert len(folders) == 1
    for instrument in INSTRUMENTS:
        assert len(decoding.load(str(folders[0] / f"{instrument}.wav"), 44100)) == int(SECONDS * 44100)


def test_the_oracle_scores_far_above_a_random_model(evaluations):
    oracle, random = evaluations["oracle"], evaluations["random"]
    assert oracle.status == 1 and len(oracle.errors()) == 1 and BROKEN in oracle.errors()[0]
    check_outputs(oracle, "oracle:spleeter:4stems", GOOD)
    sdr = {name: o.table("tracks.parquet").groupby("instrument").sdr.median()
           for name, o in (("oracle", oracle), ("random", random))}
    print("\nmedian SDR (dB)  oracle  random")
    for instrument in INSTRUMENTS:
        print(f"{instrument:<15}{sdr['oracle'][instrument]:>8.2f}{sdr['random'][instrument]:>8.2f}")
    for instrument in INSTRUMENTS:
        assert sdr["oracle"][instrument] > sdr["random"][instrument] + ORACLE_MARGIN_DB, instrument
    assert (sdr["oracle"] > 5).all()


def test_a_dataset_on_object_storage_scores_as_on_disk(evaluations, musdb, tmp_path):
    """gs:// (an emulator on loopback), one level deeper, as musdb's test/ folder."""
    with services.gcs_emulator() as gcs:
        for path in (musdb / "song-a").iterdir():
            with FileSystems.create(gcs.url(f"musdb/test/song-a/{path.name}")) as out:
                out.write(path.read_bytes())
        outcome = evaluate(tmp_path / "out", "--dataset", gcs.url("musdb"), "--oracle")
    assert outcome.status == 0, outcome.stderr
    ours = outcome.table("tracks.parquet")
    assert list(ours.track.unique()) == ["test/song-a"]
    local = evaluations["oracle"].table("tracks.parquet")
    local = local[local.track == "song-a"]
    np.testing.assert_allclose(ours[["sdr", "isr", "sir", "sar"]], local[["sdr", "isr", "sir", "sar"]], atol=1e-9)


def test_bad_tracks_of_a_manifest_are_reported_and_the_others_scored(musdb, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(musdb / "song-a", data / "song-a")
    (data / "notes.wav").write_text("no music here\n")
    short = music.write_wav(data / "short.wav", np.zeros((3 * 44100, 2)) + 0.1, 44100)
    good = {"mixture": "data/song-a/mixture.wav",  # relative to the manifest's folder
            **{i: str(data / "song-a" / f"{i}.wav") for i in INSTRUMENTS}}
    rows = [("song-a", good), ("no-drums", dict(good, drums=str(data / "missing" / "drums.wav"))),
            ("not-audio", dict(good, vocals=str(data / "notes.wav"))), ("short", dict(good, bass=str(short)))]
    manifest = tmp_path / "dataset.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["track_id", "mixture", *INSTRUMENTS, "notes"])
        writer.writerows([track_id, row["mixture"], *(row[i] for i in INSTRUMENTS), ""]
                         for track_id, row in rows)
    outcome = evaluate(tmp_path / "out", "--dataset", str(manifest), "--oracle")
    assert outcome.status == 1
    assert "Traceback" not in outcome.stderr
    errors = outcome.errors()
    assert errors[0] == (f"error: no-drums: {data / 'missing' / 'drums.wav'}: no such file "
                         f"(the drums of row 2 of {manifest})")
    assert errors[1].startswith(f"error: not-audio: {data / 'notes.wav'}: not decodable audio")
    assert errors[2] == (f"error: short: {short}: {3 * 44100} samples, but {data / 'song-a' / 'vocals.wav'} "
                         f"has {int(SECONDS * 44100)}: the stems of a track must be equally long")
    assert len(errors) == 3
    assert list(outcome.table("tracks.parquet").track.unique()) == ["song-a"]


def test_dual_mono_and_silent_stems_are_scored(tmp_path):
    """Stems as real datasets hold them: dual-mono vocals (left and right the same samples) with a
    stretch of digital silence, and an instrumental whose vocals are silent throughout. The first
    stopped the scoring with a LinAlgError from a singular matrix; museval scores it (the figures'
    agreement with museval is tests/unit/test_bsseval.py's), and refuses the second."""
    root = tmp_path / "musdb"
    for seed, track in enumerate(("dual-mono", "instrumental")):
        stems = music.synthesize_stems(SECONDS, seed)
        vocals = stems["vocals"]
        if track == "dual-mono":
            vocals[:, 1] = vocals[:, 0]
            vocals[44100:int(2.5 * 44100)] = 0.0  # frame 1 silent, frame 2 in part
        else:
            vocals[:] = 0.0
        for instrument in INSTRUMENTS:
            music.write_wav(root / track / f"{instrument}.wav", stems[instrument], 44100)
        music.write_wav(root / track / "mixture.wav", sum(stems[i] for i in INSTRUMENTS), 44100)
    left, right = decoding.load(str(root / "dual-mono" / "vocals.wav"), 44100).T
    assert np.array_equal(left, right)
    outcome = evaluate(tmp_path / "out", "--dataset", str(root), "--oracle")
    assert outcome.status == 0, outcome.stderr
    assert "Traceback" not in outcome.stderr and outcome.errors() == []
    frames = outcome.table("frames.parquet").set_index(["track", "frame"])[["sdr", "isr", "sir", "sar"]]
    # a frame where any stem is silent has no figure, for every stem (museval's rule)
    assert frames.loc["dual-mono"].loc[1].isna().all().all()
    assert frames.loc["dual-mono"].loc[[0, 2, 3]].notna().all().all()
    assert frames.loc["instrumental"].isna().all().all()
    per_track = outcome.table("tracks.parquet").set_index(["track", "instrument"])
    assert (per_track.loc["dual-mono"].frames == int(SECONDS) - 1).all()
    assert (per_track.loc["instrumental"].frames == 0).all()
    # the summary is the dual-mono track's: the instrumental adds no figure
    lines = outcome.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("instrument"))
    for instrument, line in zip(INSTRUMENTS, lines[header + 1:header + 5]):
        cells = line.split()
        assert cells[0] == instrument
        assert float(cells[1]) == pytest.approx(per_track.loc[("dual-mono", instrument)].sdr, abs=0.006)
        assert float(cells[1]) > 5

@pytest.mark.parametrize("case", ["empty folder", "csv without a column", "jsonl without a column",
                                  "every track lacks a stem"])
def test_an_unusable_dataset_is_one_clear_error(case, musdb, tmp_path):
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    row = {"track_id": "a", "mixture": "m.wav", "vocals": "v.wav", "drums": "d.wav", "other": "o.wav"}
    if case == "empty folder":
        expected = f"error: {dataset}: neither a manifest (.csv, .jsonl, .parquet) nor a musdb-style folder"
    elif case == "csv without a column":
        dataset = dataset / "d.csv"
        pd.DataFrame([row]).to_csv(dataset, index=False)
        expected = f"error: {dataset}: manifest lacks the column(s) bass"
    elif case == "jsonl without a column":
        dataset = dataset / "d.jsonl"
        dataset.write_text(json.dumps(row) + "\n")
        expected = f"error: {dataset}: manifest lacks the column(s) bass"
    else:
        shutil.copytree(musdb / "song-a", dataset / "song-a")
        (dataset / "song-a" / "drums.wav").unlink()
        expected = f"error: {dataset}: no track to evaluate"
    outcome = evaluate(tmp_path / "out", "--dataset", str(dataset), "--oracle")
    assert outcome.status == 2
    assert "Traceback" not in outcome.stderr
    assert outcome.errors()[-1].startswith(expected), outcome.stderr
    if case == "every track lacks a stem":
        assert outcome.errors()[0] == (f"error: song-a: {dataset / 'song-a' / 'drums.wav'}: no such file "
                                       "(the stem of the model's instrument drums)")
    assert not (tmp_path / "out").exists()


def test_discovery_of_folders_and_manifests(tmp_path):
    """Which files make a track: no audio is read here."""
    root = tmp_path / "musdb"
    for subset, track in (("train", "one"), ("test", "two")):
        for name in ("mixture", *INSTRUMENTS):
            (root / subset / track).mkdir(parents=True, exist_ok=True)
            (root / subset / track / f"{name}.wav").write_bytes(b"")
    (root / "test" / "two" / ".vocals.wav.0123.part").write_bytes(b"")  # an unfinished write
    (root / "test" / "two" / "vocals.flac").write_bytes(b"")  # the mixture's format wins
    tracks, failures = discover(str(root), ("vocals", "drums", "bass", "other"))
    assert failures == [] and [t.track_id for t in tracks] == ["test/two", "train/one"]
    assert tracks[0].stems["vocals"] == (f"{root}/test/two/vocals.wav",)
    # 2stems on musdb: the accompaniment is the sum of the stems other than vocals
    tracks, _ = discover(str(root), ("vocals", "accompaniment"))
    assert tracks[1].stems["accompaniment"] == tuple(f"{root}/train/one/{n}.wav" for n in ("bass", "drums", "other"))
    # 5stems: no piano stem in musdb
    tracks, failures = discover(str(root), ("vocals", "piano"))
    assert tracks == [] and [f.track_id for f in failures] == ["test/two", "train/one"]
    assert failures[0].message == (f"{root}/test/two/piano.wav: no such file "
                                   "(the stem of the model's instrument piano)")

    # the same tracks from CSV, JSON Lines and Parquet manifests, paths relative to the manifest
    records = [{"track_id": f"{s}/{t}", "mixture": f"musdb/{s}/{t}/mixture.wav",
                **{i: f"musdb/{s}/{t}/{i}.wav" for i in ("vocals", "drums")}}
               for s, t in (("train", "one"), ("test", "two"))]
    pd.DataFrame(records).to_csv(tmp_path / "d.csv", index=False)
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "d.parquet")
    found = [discover(str(tmp_path / name), ("vocals", "drums")) for name in ("d.csv", "d.jsonl", "d.parquet")]
    assert all(f == found[0] for f in found[1:])
    tracks, failures = found[0]
    assert failures == [] and [t.track_id for t in tracks] == ["test/two", "train/one"]
    assert tracks[1].mixture == f"{root}/train/one/mixture.wav"
    assert tracks[1].stems == {i: (f"{root}/train/one/{i}.wav",) for i in ("vocals", "drums")}


@pytest.mark.parametrize("instruments", [("vocals", "accompaniment"), ("vocals", "drums", "bass", "piano", "other")])
def test_the_figures_title_fits_in_the_figure(instruments):
    """The title of a two-instrument sdr.png was cut off at both sides."""
    from models.bsseval import Metrics
    from pipeline.scorecard import Scorecard, TrackScores

    frames = np.linspace(-5, 15, 2 * len(instruments) * 30).reshape(len(instruments), -1)
    scores = [TrackScores(f"t{i}", instruments, Metrics(frames + i, frames, frames, frames, window=44100, hop=44100))
              for i in range(2)]
    figure = Scorecard(scores, "spleeter:2stems@sha256:" + "ab" * 32, 44100).figure()
    renderer = figure.canvas.get_renderer()
    title = figure.axes[0].title.get_window_extent(renderer)
    page = figure.bbox
    assert page.x0 <= title.x0 and title.x1 <= page.x1 and title.y1 <= page.y1
    assert "spleeter:2stems@abababababab, 2 track(s)" in figure.axes[0].get_title()


def test_relative_and_file_uri_datasets_and_outputs(random_checkpoint, tmp_path, monkeypatch):
    # `evaluate --dataset ds2 -o eval2/` from the dataset's parent folder, `--dataset .` from inside it:
    # the manifest under OUT/separation/ is read relative to its own folder, so it must hold absolute paths.
    music.make_multitrack(tmp_path / "ds2" / "song1", 2.0, 1, INSTRUMENTS)
    checkpoint = str(random_checkpoint("spleeter:4stems"))
    monkeypatch.chdir(tmp_path)
    outcome = evaluate("eval2/", "--dataset", "ds2", "--checkpoint", checkpoint)
    assert outcome.status == 0 and not outcome.errors(), outcome.stderr
    listed = (tmp_path / "eval2" / "separation" / "manifest.csv").read_text()
    assert str(tmp_path / "ds2" / "song1" / "mixture.wav") in listed
    monkeypatch.chdir(tmp_path / "ds2")
    outcome = evaluate(f"file://{tmp_path}/eval3", "--dataset", ".", "--checkpoint", checkpoint)
    assert outcome.status == 0 and not outcome.errors(), outcome.stderr
    assert (tmp_path / "eval3" / "tracks.parquet").is_file()
    assert pd.read_parquet(tmp_path / "eval3" / "tracks.parquet").track.unique().tolist() == ["song1"]
