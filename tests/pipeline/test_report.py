"""`beamsplitter report` on real runs' outputs, its page opened in a real headless Chromium."""

from __future__ import annotations

import datetime
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import demo
from pipeline.evaluate import evaluate
from pipeline.report import NOT_MEASURED, write_report
from pipeline.run import run
from tests import browser, services
from tests.music import make_multitrack, synthesize_stems
from tests.pipeline.conftest import write_manifest
from transforms.catalogue import storage
from transforms.catalogue.layout import Layout
from transforms.write import FAILURE_SCHEMA, METADATA_SCHEMA

pytestmark = pytest.mark.slow  # real runs reported, the page opened in Chromium

BEAMSPLITTER = str(Path(sys.executable).parent / "beamsplitter")
HOSTILE = "it's \"<script>alert('x')</script>\" [live] & café"
SECONDS = 6.0


def small_catalogue(folder: Path) -> Path:
    """Four rows: a multitrack's mix (which `evaluate` scores too), a track with a hostile id, an
    instrumental, and a missing file."""
    make_multitrack(folder / "multitrack" / "demo-01", seconds=SECONDS, seed=1)
    demo.make_track(folder / "hostile.wav", seconds=SECONDS, seed=2)
    demo.write_wav(folder / "instrumental.wav", synthesize_stems(SECONDS, seed=3)["accompaniment"], 44100)
    return write_manifest(folder / "manifest.csv", [
        ("demo-01", "multitrack/demo-01/mixture.wav", "one"), (HOSTILE, "hostile.wav", "two"),
        ("instrumental", "instrumental.wav", "three"), ("gone", "missing.wav", "four")])


@pytest.fixture(scope="module")
def reported(tmp_path_factory, checkpoint_2stems):
    """A catalogue run, an evaluation of its first track, and `beamsplitter report` over both."""
    folder = tmp_path_factory.mktemp("report")
    manifest = small_catalogue(folder / "catalogue")
    out = folder / "out"
    assert run(["--manifest", str(manifest), "--output", str(out), "--checkpoint", str(checkpoint_2stems)]).exit_status == 1
    evaluation = folder / "evaluation"
    assert evaluate(str(folder / "catalogue" / "multitrack"), str(evaluation), "spleeter:2stems",
                    str(checkpoint_2stems)) == 0
    done = subprocess.run([BEAMSPLITTER, "report", str(out), "-o", str(folder / "report"), "--sample", "10",
                           "--evaluation", str(evaluation)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    page = folder / "report" / "index.html"
    assert done.stdout.strip() == f"report: {page}"
    with browser.chromium() as driver:
        state = browser.open_page(driver, page)
        text = driver.find_element("tag name", "body").text
        headings = [e.text for e in driver.find_elements("css selector", ".track h3")]
        scripts = driver.execute_script("return document.scripts.length")
        rows = browser.table_rows(driver)
        # Beside the page, not in the checkout: copy it to docs/report.png when the page changes.
        browser.screenshot(driver, folder / "report" / "screenshot.png")
    return out, page, state, text, headings, scripts, rows


def test_the_page_loads_whole_in_chromium(reported):
    _, page, state, _, _, _, _ = reported
    assert state.console_errors == []
    assert state.broken() == []
    # a histogram of each level the run measured and the evaluation's figure; mix and two stems for each of
    # the three tracks done
    assert sorted(i["src"] for i in state.images) == sorted(
        [f"figures/{column}.png" for column in ("peak", "rms", "loudness_lufs", "loudness_range_lu",
                                                 "true_peak_dbtp", "vocal_activity")] + ["figures/evaluation-sdr.png"])
    assert len(state.audio) == 9
    assert all("://" not in src for src in [i["src"] for i in state.images] + [a["src"] for a in state.audio])
    screenshot = page.parent / "screenshot.png"
    assert screenshot.stat().st_size > 10_000
    print(f"\nreport page loaded in {state.load_seconds:.2f} s; screenshot: {screenshot}")


def test_the_page_holds_runs_failures_levels_and_the_evaluation(reported):
    _, _, _, text, headings, _, rows = reported
    (run_row,) = [row for row in rows if row[0].startswith("20")]  # a run id starts with its date
    assert run_row[2:6] == ["3", "0", "1", "1"]  # done, skipped, failed, failed at decode
    assert ["decode", "AudioError", "{source}: no such file", "1", "gone"] in rows
    assert NOT_MEASURED not in text  # the run measured loudness, vocal activity and instrumentals
    assert "of 3)" in text  # the instrumentals' share, of the three tracks done
    assert sorted(headings) == sorted(["demo-01", HOSTILE, "instrumental"])
    assert "vocals · SDR" in text and "1 of them are tracks of this output" in text


def test_a_hostile_track_id_is_shown_as_text(reported):
    _, page, _, text, headings, scripts, _ = reported
    assert HOSTILE in headings and scripts == 0
    assert "<script>" not in page.read_text().replace("&lt;script&gt;", "")


def test_the_run_keeps_its_figures(reported):
    out, _, _, _, _, _, _ = reported
    (model,) = (out / "metadata").iterdir()
    (path,) = (model / "_runs").iterdir()
    summary = json.loads(path.read_text())
    assert (summary["done"], summary["skipped"], summary["failed"]) == (3, 0, 1)
    assert summary["failed_by_stage"] == {"decode": 1}
    assert summary["audio_seconds"] == pytest.approx(3 * SECONDS, abs=0.2) and summary["wall_seconds"] > 0
    assert path.name == f"run-{summary['run_id']}.json"


def thousand_rows(out: Path, audio: Path, tracks: int = 500) -> None:
    """An output of ``tracks`` x 2 metadata rows with the loudness, vocal activity and instrumental columns."""
    layout = Layout(str(out), "2stems-0123456789ab")
    now = datetime.datetime.now(datetime.timezone.utc)
    rows = []
    for t in range(tracks):
        instrumental = t % 10 < 3
        for i, instrument in enumerate(("vocals", "accompaniment")):
            silent = instrumental and instrument == "vocals"
            rows.append({"track_id": f"catalogue/track-{t:04d}", "instrument": instrument, "uri": str(audio),
                         "source_uri": str(audio), "duration_s": 3.0, "sample_rate": 44100,
                         "channels": 2, "codec": "wav", "bitrate": "128k", "sample_format": "s16",
                         "model": "spleeter:2stems@sha256:0123", "peak": 0.1 + (t % 9) / 10, "rms": 0.01 + (t % 7) / 50,
                         "run_id": "20260101T000000Z-abcdef", "processed_at": now,
                         "loudness_lufs": -30.0 + (t % 20) - 10 * i, "loudness_range_lu": 3.0 + t % 8,
                         "true_peak_dbtp": -6.0 + (t % 6), "vocal_activity": 0.0 if silent else (t % 10) / 10,
                         "instrumental": instrumental})
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=METADATA_SCHEMA), buffer)
    storage.publish_bytes(buffer.getvalue(), f"{layout.metadata('20260101T000000Z-abcdef')}-00000-of-00001.parquet")
    storage.publish_bytes(b'{"files": 1}', layout.commit_marker("20260101T000000Z-abcdef"))
    failures = [{"track_id": f"bad-{n}", "source_uri": f"/music/bad-{n}.mp3", "stage": "decode",
                 "error_type": "AudioError", "message": f"/music/bad-{n}.mp3: not decodable audio",
                 "run_id": "20260101T000000Z-abcdef"} for n in range(20)]
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(failures, schema=FAILURE_SCHEMA), buffer)
    storage.publish_bytes(buffer.getvalue(), f"{layout.failures('20260101T000000Z-abcdef')}-00000-of-00001.parquet")


def test_a_thousand_rows_render_in_seconds(tmp_path):
    audio = demo.make_track(tmp_path / "short.wav", seconds=3.0, seed=4)
    thousand_rows(tmp_path / "out", audio)
    started = time.monotonic()
    page = Path(write_report(str(tmp_path / "out"), str(tmp_path / "report"), sample=3))
    written = time.monotonic() - started
    with browser.chromium() as driver:
        state = browser.open_page(driver, page)
        text = driver.find_element("tag name", "body").text
        rows = browser.table_rows(driver)
    print(f"\n1,000 metadata rows: report written in {written:.2f} s, loaded by Chromium in {state.load_seconds:.2f} s")
    assert state.console_errors == [] and state.broken() == []
    assert len(state.images) == 6 and len(state.audio) == 9  # every distribution measured
    assert NOT_MEASURED not in text
    assert "30% (150 of 500)" in text
    assert ["decode", "AudioError", "{source}: not decodable audio", "20"] == rows[-1][:4]
    assert "not recorded" in text  # a run without a summary: skipped and wall time unknown


def test_a_gcs_output(tmp_path, checkpoint_2stems):
    folder = tmp_path / "catalogue"
    demo.make_track(folder / "a.wav", seconds=5.0, seed=6)
    manifest = write_manifest(folder / "manifest.csv", [("a", "a.wav", "x"), ("gone", "missing.wav", "y")])
    with services.gcs_emulator() as gcs:
        out = gcs.url("out")
        assert run(["--manifest", str(manifest), "--output", out, "--checkpoint", str(checkpoint_2stems)]).exit_status == 1
        page = Path(write_report(out, str(tmp_path / "report"), sample=2))
    with browser.chromium() as driver:
        state = browser.open_page(driver, page)
        text = driver.find_element("tag name", "body").text
        rows = browser.table_rows(driver)
    assert state.console_errors == [] and state.broken() == []
    assert len(state.audio) == 3  # the one track done: its mix and two stems, cut from the emulator's objects
    assert out in text and ["decode", "AudioError", "{source}: no such file", "1", "gone"] in rows


def test_an_s3_output_through_the_command(tmp_path, checkpoint_2stems):
    folder = tmp_path / "catalogue"
    demo.make_track(folder / "a.wav", seconds=5.0, seed=7)
    manifest = write_manifest(folder / "manifest.csv", [("a", "a.wav", "x")])
    with services.s3_server("catalogue") as s3:
        try:
            assert run(["--manifest", str(manifest), "--output", "s3://catalogue/out", "--checkpoint",
                        str(checkpoint_2stems), *s3.beam_options()]).exit_status == 0
        finally:
            FileSystems.set_options(PipelineOptions([]))
        # Beam's s3 options on the command line, as a user gives them.
        done = subprocess.run([BEAMSPLITTER, "report", "s3://catalogue/out", "-o", str(tmp_path / "report"),
                               *s3.beam_options()], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "report" / "index.html").read_text()
    assert page.count("<audio ") == 3 and "s3://catalogue/out" in page
    assert sorted(p.name for p in (tmp_path / "report" / "previews").iterdir()) == ["0000-0.mp3", "0000-1.mp3",
                                                                                      "0000-2.mp3"]
