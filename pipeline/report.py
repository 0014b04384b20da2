"""``beamsplitter report``: one self-contained HTML page on what a catalogue output holds.

Three separate steps: ``read_output`` gathers what the runs left under the
output prefix (local, gs:// or s3://: run summaries, landed metadata, failure
tables); ``build_report`` turns it into a small data model (``Report``), drawing
its figures and cutting its previews into the report folder; ``render`` is a
pure function from that model to HTML, escaping every catalogue string. The page
needs no network: its images and previews are files beside it, its style inline.
"""

from __future__ import annotations

import datetime
import html
import io
import math
import os
import random
import shutil
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from models import decoding, encoding
from models.errors import BeamsplitterError, InputError
from models.bsseval import median_over_tracks
from pipeline.scorecard import FIGURE_FILE, TRACKS_FILE
from transforms.catalogue import storage
from transforms.catalogue.layout import Layout, commit_of, marker_commit

PAGE = "index.html"
FIGURES, PREVIEWS = "figures", "previews"
PREVIEW_SECONDS = 30.0
PREVIEW_RATE = 44_100
NOT_MEASURED = "not measured by this run"
SCORE_ORDER = ("sdr", "sir", "isr", "sar")  # BSSEval's scores, as the page lists them
# Metadata columns drawn as distributions per instrument: (column, axis label, to dB first). Loudness,
# true peak and vocal activity are only there when the run measured them.
DISTRIBUTIONS = (
    ("peak", "sample peak (dBFS)", True),
    ("rms", "RMS level (dBFS)", True),
    ("loudness_lufs", "integrated loudness (LUFS)", False),
    ("loudness_range_lu", "loudness range (LU)", False),
    ("true_peak_dbtp", "true peak (dBTP)", False),
    ("vocal_activity", "vocal activity (share of the track's 1 s frames)", False),
)
# Columns that hold one value per track, repeated on each of its stems' rows: drawn once, from this stem.
TRACK_COLUMNS = {"vocal_activity": "vocals"}


class ReportError(BeamsplitterError):
    stage = "report"


# --- the data model ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFigures:
    """One run's figures; skipped and wall time are None for a run that left no summary (it ended before
    writing one, or ran before summaries were kept): its other figures then come from its tables."""

    run_id: str
    model: str
    done: int
    skipped: int | None
    failed_by_stage: dict
    audio_seconds: float
    wall_seconds: float | None

    @property
    def failed(self) -> int:
        return sum(self.failed_by_stage.values())

    @property
    def speed(self) -> float | None:
        """Seconds of audio separated per second of wall time."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds else None


@dataclass(frozen=True)
class FailureGroup:
    stage: str
    error_type: str
    message: str  # each track's own source and id replaced by {source} and {track}
    track_ids: tuple[str, ...]


@dataclass(frozen=True)
class Distribution:
    column: str
    label: str
    image: str | None  # path under the report folder; None: no run measured it
    count: int = 0


@dataclass(frozen=True)
class Preview:
    label: str  # "mix" or the instrument
    file: str | None  # path under the report folder
    error: str | None = None


@dataclass(frozen=True)
class SampleTrack:
    model: str
    track_id: str
    duration_s: float
    previews: tuple[Preview, ...]
    scores: dict = field(default_factory=dict)  # instrument -> SDR (dB), from the evaluation


@dataclass(frozen=True)
class Evaluation:
    folder: str
    tracks: int
    medians: dict  # instrument -> metric -> median over tracks (dB)
    figure: str | None
    joined: int  # the catalogue's tracks it scored


@dataclass(frozen=True)
class Report:
    output: str
    generated_at: str
    runs: tuple[RunFigures, ...]
    tracks: int
    stems: int
    failures: tuple[FailureGroup, ...]
    distributions: tuple[Distribution, ...]
    instrumental: tuple[int, int] | None  # (instrumental tracks, tracks measured); None: not measured
    sample: tuple[SampleTrack, ...]
    seed: int
    evaluation: Evaluation | None = None


# --- reading the output ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Output:
    prefix: str
    models: tuple[str, ...]
    summaries: tuple[tuple[str, dict], ...]  # (model folder, the run's summary)
    metadata: pa.Table  # landed rows, the latest per (model, track, instrument), with column model_folder
    failures: pa.Table


def read_output(prefix: str) -> Output:
    """What the runs under ``prefix`` left: their summaries, landed metadata and failure tables."""
    prefix = prefix.rstrip("/")
    storage.check_reachable(prefix)
    metadata_root, failures_root = storage.join(prefix, "metadata"), storage.join(prefix, "failures")
    found = storage.find(metadata_root, "*/**")
    models = tuple(sorted({path[len(metadata_root) + 1:].split("/", 1)[0] for path in found}))
    summaries, tables = [], []
    for model in models:
        layout = Layout(prefix, model)
        for path in storage.find(*layout.run_summaries()):
            summary = storage.read_json(path)
            if isinstance(summary, dict) and "run_id" in summary:
                summaries.append((model, summary))
        landed = {marker_commit(marker) for marker in storage.find(*layout.commit_markers())}
        for path in storage.find(layout.metadata_folder(), "run-*.parquet"):
            if commit_of(path) in landed:
                table = _parquet(path)
                tables.append(table.append_column("model_folder", pa.array([model] * len(table), pa.string())))
    failure_files = storage.find(failures_root, "run-*.parquet")
    if not models and not failure_files:
        raise InputError(f"{prefix}: no catalogue output here (no metadata/ or failures/ of a `beamsplitter run`)")
    failures = _concat([_parquet(path) for path in failure_files])
    return Output(prefix, models, tuple(summaries), _latest(_concat(tables)), failures)


def _parquet(uri: str) -> pa.Table:
    return pq.read_table(io.BytesIO(storage.read_bytes(uri)))


def _concat(tables: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})


def _latest(table: pa.Table) -> pa.Table:
    """A redone track's stems as last written: one row per (model, track, instrument)."""
    if not table.num_rows:
        return table
    keys = zip(*(table.column(name).to_pylist() for name in ("model_folder", "track_id", "instrument")))
    times = table.column("processed_at").to_pylist()
    latest: dict = {}
    for i, key in enumerate(keys):
        if key not in latest or times[i] >= times[latest[key]]:
            latest[key] = i
    return table.take(sorted(latest.values()))


def runs_of(output: Output) -> tuple[RunFigures, ...]:
    """Every run's figures: from its summary, else from the rows and failures it wrote."""
    runs = {}
    for model, s in output.summaries:
        try:
            runs[s["run_id"]] = RunFigures(str(s["run_id"]), model, int(s["done"]), int(s["skipped"]),
                                           {str(k): int(v) for k, v in s["failed_by_stage"].items()},
                                           float(s["audio_seconds"]), float(s["wall_seconds"]))
        except (KeyError, TypeError, ValueError, AttributeError):  # not a summary: the run's tables tell
            continue
    done: dict = defaultdict(dict)  # run -> (model, track) -> seconds
    if output.metadata.num_rows:
        columns = ("run_id", "model_folder", "track_id", "duration_s")
        for run_id, model, track_id, seconds in zip(*(output.metadata.column(c).to_pylist() for c in columns)):
            done[run_id][(model, track_id)] = seconds or 0.0
    failed: dict = defaultdict(lambda: defaultdict(int))
    if output.failures.num_rows:
        for run_id, stage in zip(output.failures.column("run_id").to_pylist(), output.failures.column("stage").to_pylist()):
            failed[run_id][stage] += 1
    for run_id in sorted((set(done) | set(failed)) - set(runs)):
        tracks = done.get(run_id, {})
        models = sorted({model for model, _ in tracks})
        runs[run_id] = RunFigures(run_id, ", ".join(models) or "-", len(tracks), None, dict(failed.get(run_id, {})),
                                  float(sum(tracks.values())), None)
    return tuple(runs[run_id] for run_id in sorted(runs))


def failure_groups(failures: pa.Table) -> tuple[FailureGroup, ...]:
    """Failures with one cause together, most tracks first: a message names its track's own source and id,
    which are set aside so that alike failures read alike."""
    if not failures.num_rows:
        return ()
    groups: dict = defaultdict(list)
    columns = ("track_id", "source_uri", "stage", "error_type", "message")
    for track_id, source, stage, error_type, message in zip(*(failures.column(c).to_pylist() for c in columns)):
        message = message or ""
        if source:
            message = message.replace(source, "{source}")
        if track_id and len(track_id) > 2:
            message = message.replace(repr(track_id), "{track}").replace(track_id, "{track}")
        groups[(stage or "", error_type or "", message)].append(track_id or "")
    found = [FailureGroup(*key, tuple(dict.fromkeys(ids))) for key, ids in groups.items()]
    return tuple(sorted(found, key=lambda g: (-len(g.track_ids), g.stage, g.message)))


# --- figures and previews ------------------------------------------------------------------------------


def column_values(table: pa.Table, column: str, to_db: bool) -> dict[str, np.ndarray]:
    """instrument -> the finite values of ``column`` (in dB of full scale when ``to_db``); {} when absent."""
    if column not in table.column_names or not table.num_rows:
        return {}
    try:
        values = pc.cast(table.column(column), pa.float64()).to_numpy(zero_copy_only=False).astype(float)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return {}
    if to_db:
        with np.errstate(divide="ignore"):
            values = 20 * np.log10(values)
    instruments = np.array(table.column("instrument").to_pylist(), dtype=object)
    found = {}
    for instrument in sorted(set(instruments)):
        kept = values[(instruments == instrument) & np.isfinite(values)]
        if kept.size:
            found[instrument] = kept
    return found


def histogram_png(values: dict[str, np.ndarray], label: str) -> bytes:
    """One histogram per instrument, side by side, on one value axis."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(2.6 * len(values) + 0.8, 2.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(values), sharex=True, squeeze=False)[0]
    low = min(float(v.min()) for v in values.values())
    high = max(float(v.max()) for v in values.values())
    bins = np.linspace(low, high if high > low else low + 1, 31)
    for ax, (instrument, data) in zip(axes, values.items()):
        ax.hist(data, bins=bins, color="tab:blue", alpha=0.8)
        ax.set_title(f"{instrument} ({data.size})", fontsize=9)
        ax.set_xlabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("stems", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def instrumental_share(table: pa.Table) -> tuple[int, int] | None:
    """(instrumental tracks, tracks measured), a track counted once per model; None when none was measured."""
    if "instrumental" not in table.column_names or not table.num_rows:
        return None
    verdicts: dict = {}
    columns = ("model_folder", "track_id", "instrumental")
    for model, track_id, instrumental in zip(*(table.column(c).to_pylist() for c in columns)):
        if instrumental is not None:
            verdicts[(model, track_id)] = verdicts.get((model, track_id), False) or _truth(instrumental)
    return (sum(verdicts.values()), len(verdicts)) if verdicts else None


def _truth(value) -> bool:
    return value.strip().lower() in ("true", "1", "yes") if isinstance(value, str) else bool(value)


def cut_preview(uri: str, start: float, destination: str) -> None:
    """``PREVIEW_SECONDS`` of ``uri`` from ``start``, as a small stereo MP3 at ``destination``.

    Decoded as the job decodes a catalogue's sources (files only: no playlist or protocol in a
    source reaches other files or hosts; the stall timeout), and encoded by the stems' encoder.
    """
    try:
        with storage.local_copy(uri) as path:
            samples = decoding.load(path, PREVIEW_RATE, start, PREVIEW_SECONDS)
        if not len(samples):
            raise ReportError(f"{uri}: no audio from {start:.1f} s on")
        encoding.save(destination, samples, PREVIEW_RATE, codec="mp3", bitrate="96k")
    except ReportError:
        raise
    except BeamsplitterError as exc:
        raise ReportError(f"{uri}: no preview ({exc})") from None


def sample_tracks(table: pa.Table, n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` (model, track) pairs drawn with ``seed``: the same output and seed, the same sample."""
    if not table.num_rows or n <= 0:
        return []
    pairs = sorted(set(zip(table.column("model_folder").to_pylist(), table.column("track_id").to_pylist())))
    return sorted(random.Random(seed).sample(pairs, min(n, len(pairs))), key=lambda p: (p[1], p[0]))


def previews_of(table: pa.Table, pairs: list[tuple[str, str]], folder: str) -> list[SampleTrack]:
    """Each sampled track's mix (its manifest source) and stems, cut from the middle of the track."""
    wanted = set(pairs)
    rows = defaultdict(list)
    for row in table.select(["model_folder", "track_id", "instrument", "uri", "source_uri", "duration_s"]).to_pylist():
        if (row["model_folder"], row["track_id"]) in wanted:
            rows[(row["model_folder"], row["track_id"])].append(row)
    os.makedirs(os.path.join(folder, PREVIEWS), exist_ok=True)
    sample = []
    for number, (model, track_id) in enumerate(pairs):
        stems = sorted(rows[(model, track_id)], key=lambda r: r["instrument"])
        duration = max((r["duration_s"] or 0.0) for r in stems)
        start = max(0.0, duration / 2 - PREVIEW_SECONDS / 2)
        previews = []
        for index, (label, uri) in enumerate([("mix", stems[0]["source_uri"])]
                                             + [(r["instrument"], r["uri"]) for r in stems]):
            name = f"{PREVIEWS}/{number:04d}-{index}.mp3"  # never the track's id: any text can be one
            try:
                cut_preview(uri, start, os.path.join(folder, name))
                previews.append(Preview(label, name))
            except BeamsplitterError as exc:
                previews.append(Preview(label, None, str(exc)))
        sample.append(SampleTrack(model, track_id, duration, tuple(previews)))
    return sample


def read_evaluation(folder: str) -> pa.Table:
    uri = storage.join(folder.rstrip("/"), TRACKS_FILE)
    if not storage.exists(uri):
        raise InputError(f"--evaluation {folder}: no {TRACKS_FILE} (give the folder `beamsplitter evaluate -o` wrote)")
    return _parquet(uri)


def evaluation_of(folder: str, scores: pa.Table, catalogue_tracks: set[str], report_folder: str) -> Evaluation:
    # SiSEC's figure, as `evaluate` prints it: the median over tracks of each track's median over frames.
    metrics = [name for name in SCORE_ORDER if name in scores.column_names]
    instruments = np.array(scores.column("instrument").to_pylist(), dtype=object)
    values = {name: np.array([math.nan if v is None else v for v in scores.column(name).to_pylist()], np.float64)
              for name in metrics}
    medians = {instrument: {name: float(median_over_tracks(values[name][instruments == instrument]))
                            for name in metrics}
               for instrument in sorted(set(instruments))}
    figure = None
    source = storage.join(folder.rstrip("/"), FIGURE_FILE)
    if storage.exists(source):
        figure = f"{FIGURES}/evaluation-{FIGURE_FILE}"
        with open(os.path.join(report_folder, figure), "wb") as out:
            out.write(storage.read_bytes(source))
    tracks = set(scores.column("track").to_pylist())
    return Evaluation(folder, len(tracks), medians, figure, len(tracks & catalogue_tracks))


def scores_by_track(scores: pa.Table) -> dict[str, dict[str, float]]:
    found: dict = defaultdict(dict)
    for track, instrument, sdr in zip(*(scores.column(c).to_pylist() for c in ("track", "instrument", "sdr"))):
        found[track][instrument] = sdr
    return found


def build_report(output: Output, folder: str, sample: int = 5, seed: int = 0,
                 evaluation: str | None = None, scores: pa.Table | None = None) -> Report:
    """The report's model; its figures and previews are written under ``folder`` on the way.

    ``scores``: the table of ``evaluation``, the folder `evaluate` wrote (``read_evaluation``)."""
    for sub in (FIGURES, PREVIEWS):  # a report written here before leaves none of its files
        shutil.rmtree(os.path.join(folder, sub), ignore_errors=True)
    os.makedirs(os.path.join(folder, FIGURES), exist_ok=True)
    table = output.metadata
    distributions = []
    for column, label, to_db in DISTRIBUTIONS:
        values = column_values(table, column, to_db)
        if column in TRACK_COLUMNS:
            values = {k: v for k, v in values.items() if k == TRACK_COLUMNS[column]}
        image = None
        if values:
            image = f"{FIGURES}/{column}.png"
            with open(os.path.join(folder, image), "wb") as out:
                out.write(histogram_png(values, label))
        distributions.append(Distribution(column, label, image, sum(v.size for v in values.values())))
    tracks = set(table.column("track_id").to_pylist()) if table.num_rows else set()
    picked = previews_of(table, sample_tracks(table, sample, seed), folder)
    if scores is not None:
        joined = scores_by_track(scores)
        picked = [SampleTrack(t.model, t.track_id, t.duration_s, t.previews, joined.get(t.track_id, {}))
                  for t in picked]
    pairs = set(zip(table.column("model_folder").to_pylist(), table.column("track_id").to_pylist())) if table.num_rows else set()
    return Report(
        output=output.prefix,
        generated_at=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        runs=runs_of(output), tracks=len(pairs), stems=table.num_rows,
        failures=failure_groups(output.failures), distributions=tuple(distributions),
        instrumental=instrumental_share(table), sample=tuple(picked), seed=seed,
        evaluation=evaluation_of(evaluation, scores, tracks, folder) if scores is not None else None)


def write_report(prefix: str, folder: str, sample: int = 5, seed: int = 0, evaluation: str | None = None) -> str:
    """``beamsplitter report``: the page on the output at ``prefix``, written to the local ``folder``;
    returns the page's path."""
    if not storage.is_local(folder):
        raise InputError(f"-o {folder}: give a local folder (the page is opened from disk)")
    if sample < 0:
        raise InputError(f"--sample {sample}: give 0 or more tracks")
    scores = read_evaluation(evaluation) if evaluation else None  # refused before any work
    report = build_report(read_output(prefix), folder, sample, seed, evaluation, scores)
    page = os.path.join(folder, PAGE)
    storage.publish_bytes(render(report).encode(), page, "text/html")
    return page


# --- the page ----------------------------------------------------------------------------------------


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.3f} h"


def _optional(value, form: str = "{}") -> str:
    return "not recorded" if value is None else form.format(value)


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1150px;color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0}th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}tr.total td{font-weight:600;background:#fafafa}
.muted{color:#777}.ids{max-height:8em;overflow:auto;font-family:ui-monospace,monospace;font-size:.9em}
.track{border:1px solid #ddd;border-radius:6px;padding:.6em .9em;margin:.8em 0}
.track h3{margin:.1em 0 .4em;font-family:ui-monospace,monospace;font-size:1em;word-break:break-all}
.players{display:flex;flex-wrap:wrap;gap:.8em}.player{display:flex;flex-direction:column;font-size:.9em}
audio{width:260px;height:36px}img{max-width:100%}.figure{margin:.6em 0}
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:6px;padding:.5em 1em;min-width:9em}
.card b{display:block;font-size:1.4em}
"""


def render(report: Report) -> str:
    """The whole page: every catalogue string escaped, every file it names relative to it."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>beamsplitter report: {_e(report.output)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Catalogue report</h1><p class=\"muted\">{_e(report.output)} &middot; written {_e(report.generated_at)}</p>",
        _render_totals(report),
        _render_runs(report.runs),
        _render_failures(report.failures),
        _render_distributions(report),
        _render_sample(report),
    ]
    if report.evaluation:
        parts.append(_render_evaluation(report.evaluation))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _render_totals(report: Report) -> str:
    runs = report.runs
    audio = sum(r.audio_seconds for r in runs)
    timed = [r for r in runs if r.wall_seconds]
    speed = sum(r.audio_seconds for r in timed) / sum(r.wall_seconds for r in timed) if timed else None
    cards = [("runs", len(runs)), ("tracks with stems", report.tracks), ("stems", report.stems),
             ("tracks done", sum(r.done for r in runs)), ("failed", sum(r.failed for r in runs)),
             ("audio separated", _hours(audio)), ("throughput", _optional(speed, "{:.1f}x realtime"))]
    if report.instrumental:
        instrumental, measured = report.instrumental
        cards.append(("instrumentals", f"{instrumental / measured:.0%} ({instrumental} of {measured})"))
    else:
        cards.append(("instrumentals", NOT_MEASURED))
    return ('<div class="cards">' + "".join(f'<div class="card"><b>{_e(value)}</b>{_e(name)}</div>'
                                            for name, value in cards) + "</div>")


def _render_runs(runs: tuple[RunFigures, ...]) -> str:
    stages = sorted({stage for r in runs for stage in r.failed_by_stage})
    head = ["run", "model", "done", "skipped", "failed", *(f"failed: {s}" for s in stages), "audio", "wall",
            "throughput"]
    rows = []
    for r in runs:
        cells = [(r.run_id, ""), (r.model, ""), (r.done, "n"), (_optional(r.skipped), "n"), (r.failed, "n"),
                 *((r.failed_by_stage.get(s, 0), "n") for s in stages), (_hours(r.audio_seconds), "n"),
                 (_optional(r.wall_seconds, "{:.1f} s"), "n"), (_optional(r.speed, "{:.1f}x"), "n")]
        rows.append("<tr>" + "".join(f'<td class="{c}">{_e(v)}</td>' for v, c in cells) + "</tr>")
    if len(runs) > 1:
        timed = [r for r in runs if r.wall_seconds]
        wall = sum(r.wall_seconds for r in timed)
        cells = [("all runs", ""), ("", ""), (sum(r.done for r in runs), "n"),
                 (sum(r.skipped or 0 for r in runs), "n"), (sum(r.failed for r in runs), "n"),
                 *((sum(r.failed_by_stage.get(s, 0) for r in runs), "n") for s in stages),
                 (_hours(sum(r.audio_seconds for r in runs)), "n"), (f"{wall:.1f} s" if timed else "not recorded", "n"),
                 (f"{sum(r.audio_seconds for r in timed) / wall:.1f}x" if wall else "not recorded", "n")]
        rows.append('<tr class="total">' + "".join(f'<td class="{c}">{_e(v)}</td>' for v, c in cells) + "</tr>")
    return ("<h2>Runs</h2><table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>" + "".join(rows)
            + "</table><p class=\"muted\">Throughput: seconds of audio separated per second of the run's wall time. "
              "Skipped: tracks already done by an earlier run.</p>")


def _render_failures(groups: tuple[FailureGroup, ...]) -> str:
    if not groups:
        return "<h2>Failures</h2><p>No track failed.</p>"
    rows = "".join(
        f"<tr><td>{_e(g.stage)}</td><td>{_e(g.error_type)}</td><td>{_e(g.message)}</td>"
        f'<td class="n">{len(g.track_ids)}</td><td><div class="ids">'
        + "<br>".join(_e(t) if t else '<span class="muted">(no track id)</span>' for t in g.track_ids)
        + "</div></td></tr>" for g in groups)
    return ("<h2>Failures</h2><table><tr><th>stage</th><th>error</th><th>message</th><th>tracks</th>"
            f"<th>track ids</th></tr>{rows}</table>")


def _render_distributions(report: Report) -> str:
    parts = ["<h2>Stems</h2>"]
    for d in report.distributions:
        if d.image:
            parts.append(f'<div class="figure"><h3>{_e(d.label)}</h3><img src="{_e(d.image)}" '
                         f'alt="{_e(d.label)}, per instrument ({d.count} stems)"></div>')
        else:
            parts.append(f'<div class="figure"><h3>{_e(d.label)}</h3><p class="muted">{NOT_MEASURED}</p></div>')
    return "\n".join(parts)


def _render_sample(report: Report) -> str:
    parts = [f"<h2>Sample of {len(report.sample)} tracks</h2>"
             f'<p class="muted">Drawn with seed {report.seed}; {PREVIEW_SECONDS:g} s previews from the middle of each '
             "track, the mix as the manifest gave it and each stem.</p>"]
    for track in report.sample:
        players = []
        for p in track.previews:
            score = track.scores.get(p.label)
            label = _e(p.label) + (f" &middot; SDR {score:.2f} dB" if score is not None else "")
            body = (f'<audio controls preload="metadata" src="{_e(p.file)}"></audio>' if p.file
                    else f'<span class="muted">{_e(p.error)}</span>')
            players.append(f'<div class="player"><span>{label}</span>{body}</div>')
        parts.append(f'<div class="track"><h3>{_e(track.track_id)}</h3><p class="muted">{_e(track.model)} &middot; '
                     f"{track.duration_s:.1f} s</p><div class=\"players\">{''.join(players)}</div></div>")
    return "\n".join(parts)


def _render_evaluation(ev: Evaluation) -> str:
    metrics = sorted({m for values in ev.medians.values() for m in values}, key=SCORE_ORDER.index)
    rows = "".join(f"<tr><td>{_e(instrument)}</td>" + "".join(f'<td class="n">{v[m]:.2f}</td>' for m in metrics)
                   + "</tr>" for instrument, v in ev.medians.items())
    figure = f'<img src="{_e(ev.figure)}" alt="SDR per instrument">' if ev.figure else ""
    return (f"<h2>Evaluation</h2><p>{_e(ev.folder)}: {ev.tracks} tracks scored (BSSEval v4, median over 1 s frames "
            f"then over tracks, dB); {ev.joined} of them are tracks of this output.</p>"
            "<table><tr><th>instrument</th>" + "".join(f"<th>{m.upper()}</th>" for m in metrics) + f"</tr>{rows}</table>"
            + figure)
