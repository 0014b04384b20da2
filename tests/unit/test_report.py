"""The report page as a pure function of its data model, its grouping of failures, and its command's errors."""

from __future__ import annotations

import html.parser
import subprocess
import sys
from pathlib import Path

import pyarrow as pa

from pipeline.report import (NOT_MEASURED, Distribution, Evaluation, FailureGroup, Preview, Report, RunFigures,
                             SampleTrack, failure_groups, render, runs_of, Output)
from transforms.write import FAILURE_SCHEMA

BEAMSPLITTER = str(Path(sys.executable).parent / "beamsplitter")
HOSTILE = "it's \"<script>alert('x')</script>\" [live] & café <img src=x onerror=alert(1)>"


class Page(html.parser.HTMLParser):
    def __init__(self, text: str):
        super().__init__()
        self.tags, self.attributes, self.text = [], [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes += attrs

    def handle_data(self, data):
        self.text.append(data)


def report(**changes) -> Report:
    fields = dict(
        output=f"gs://bucket/{HOSTILE}", generated_at="2026-01-01 00:00 UTC",
        runs=(RunFigures("20260101T000000Z-abc", "2stems-0123", 3, 1, {"decode": 1}, 3600.0, 120.0),
              RunFigures("20260102T000000Z-def", "2stems-0123", 2, None, {}, 1800.0, None)),
        tracks=5, stems=10,
        failures=(FailureGroup("decode", "AudioError", "{source}: no such file", (HOSTILE, "b")),),
        distributions=(Distribution("peak", "sample peak (dBFS)", "figures/peak.png", 10),
                       Distribution("loudness_lufs", "integrated loudness (LUFS)", None)),
        instrumental=(1, 4),
        sample=(SampleTrack("2stems-0123", HOSTILE, 6.0, (Preview("mix", "previews/0000-0.mp3"),
                                                            Preview("vocals", None, "a.wav: no such file")),
                            {"vocals": 7.25}),),
        seed=3,
        evaluation=Evaluation("eval", 2, {"vocals": {"sdr": 7.0, "sir": 9.0, "isr": 8.0, "sar": 6.5}}, None, 1))
    return Report(**{**fields, **changes})


def test_every_catalogue_string_is_text():
    page = Page(render(report()))
    assert page.tags.count("script") == 0 and page.tags.count("img") == 1  # the histogram only
    assert not any(name.startswith("on") for name, _ in page.attributes)
    text = "".join(page.text)
    assert text.count(HOSTILE) >= 3  # the sample's heading, the failure's ids, the output in the title and header


def test_the_page_says_what_was_not_measured_and_holds_the_figures():
    text = "".join(Page(render(report())).text)
    assert f"integrated loudness (LUFS){NOT_MEASURED}" in text
    assert "25% (1 of 4)" in text and "vocals · SDR 7.25 dB" in text and "a.wav: no such file" in text
    assert "30.0x" in text  # an hour of audio in 120 s
    assert "all runs" in text and "not recorded" in text  # the second run left no summary
    assert "instrumentals" in "".join(Page(render(report(instrumental=None))).text)
    assert NOT_MEASURED in "".join(Page(render(report(instrumental=None, distributions=()))).text)


def test_no_file_or_address_outside_the_pages_folder():
    page = Page(render(report()))
    sources = [value for name, value in page.attributes if name in ("src", "href")]
    assert sources == ["figures/peak.png", "previews/0000-0.mp3"]


def test_alike_failures_are_grouped_by_message():
    rows = [{"track_id": f"t{n}", "source_uri": f"/music/t{n}.mp3", "stage": "decode", "error_type": "AudioError",
             "message": f"/music/t{n}.mp3: not decodable audio", "run_id": "r1"} for n in range(3)]
    rows.append({"track_id": "pop/one", "source_uri": "x.wav", "stage": "validate", "error_type": "InputError",
                 "message": "duplicate track_id 'pop/one' (first at row 1)", "run_id": "r1"})
    groups = failure_groups(pa.Table.from_pylist(rows, schema=FAILURE_SCHEMA))
    assert groups == (FailureGroup("decode", "AudioError", "{source}: not decodable audio", ("t0", "t1", "t2")),
                      FailureGroup("validate", "InputError", "duplicate track_id {track} (first at row 1)",
                                   ("pop/one",)))
    summaryless = runs_of(Output("out", (), (), pa.table({}), pa.Table.from_pylist(rows, schema=FAILURE_SCHEMA)))
    assert summaryless == (RunFigures("r1", "-", 0, None, {"decode": 3, "validate": 1}, 0.0, None),)


def test_the_command_refuses_what_is_not_an_output(tmp_path):
    for args, message in (([str(tmp_path)], f"error: {tmp_path}: no catalogue output here"),
                          ([str(tmp_path), "--evaluation", str(tmp_path)], f"error: --evaluation {tmp_path}: no "),
                          ([str(tmp_path), "--sample", "-1"], "error: --sample -1: give 0 or more tracks"),
                          ([str(tmp_path), "--sampel", "3"], "error: report: unknown argument --sampel")):
        done = subprocess.run([BEAMSPLITTER, "report", *args, "-o", str(tmp_path / "report")], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(message) and len(done.stderr.splitlines()) == 1, done.stderr
