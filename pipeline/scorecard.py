"""An evaluation's results: Parquet tables, the terminal summary and the SDR figure.

Aggregation is SiSEC's: a track's figure is the median over its frames (NaN
frames left out), an instrument's the median of its tracks' figures.

``frames.parquet``: one row per (track, instrument, frame); ``tracks.parquet``:
one row per (track, instrument), the medians over frames, with ``frames`` the
number of frames that had metrics. Metrics in dB, NaN where a frame was silent.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from models.bsseval import METRICS, Metrics, median_over_frames, median_over_tracks
from transforms.catalogue import storage

FRAMES_FILE, TRACKS_FILE, FIGURE_FILE = "frames.parquet", "tracks.parquet", "sdr.png"
_SCORES = [(name, pa.float64()) for name in METRICS]
FRAME_SCHEMA = pa.schema([("track", pa.string()), ("instrument", pa.string()), ("frame", pa.int32()),
                          ("time_s", pa.float64()), *_SCORES, ("model", pa.string())])
TRACK_SCHEMA = pa.schema([("track", pa.string()), ("instrument", pa.string()), ("frames", pa.int32()),
                          *_SCORES, ("model", pa.string())])
SUMMARY_ORDER = ("sdr", "sir", "isr", "sar")  # as SiSEC tables list them


@dataclass(frozen=True)
class TrackScores:
    track_id: str
    instruments: tuple[str, ...]
    metrics: Metrics


class Scorecard:
    def __init__(self, scores: list[TrackScores], model_id: str, sample_rate: int):
        self.scores, self.model_id, self.sample_rate = scores, model_id, sample_rate
        self.instruments = scores[0].instruments

    def frames(self) -> pa.Table:
        columns = {name: [] for name in FRAME_SCHEMA.names}
        for score in self.scores:
            m = score.metrics
            for i, instrument in enumerate(score.instruments):
                columns["track"] += [score.track_id] * m.n_frames
                columns["instrument"] += [instrument] * m.n_frames
                columns["frame"] += range(m.n_frames)
                columns["time_s"] += list(m.frame_starts() / self.sample_rate)
                for name in METRICS:
                    columns[name] += getattr(m, name)[i].tolist()
        columns["model"] = [self.model_id] * len(columns["track"])
        return pa.table(columns, schema=FRAME_SCHEMA)

    def tracks(self) -> pa.Table:
        columns = {name: [] for name in TRACK_SCHEMA.names}
        for score in self.scores:
            medians = median_over_frames(score.metrics)
            counted = np.sum(~np.isnan(score.metrics.sdr), axis=1)
            for i, instrument in enumerate(score.instruments):
                columns["track"].append(score.track_id)
                columns["instrument"].append(instrument)
                columns["frames"].append(int(counted[i]))
                for name in METRICS:
                    columns[name].append(float(medians[name][i]))
        columns["model"] = [self.model_id] * len(columns["track"])
        return pa.table(columns, schema=TRACK_SCHEMA)

    def medians(self) -> dict[str, dict[str, float]]:
        """instrument -> metric -> median over tracks of the medians over frames."""
        per_track = {name: np.stack([median_over_frames(s.metrics)[name] for s in self.scores])
                     for name in METRICS}
        return {instrument: {name: float(median_over_tracks(per_track[name])[i]) for name in METRICS}
                for i, instrument in enumerate(self.instruments)}

    def summary(self) -> str:
        width = max(10, *(len(i) for i in self.instruments))
        lines = [f"{self.model_id}: BSSEval v4, median over 1 s frames then over {len(self.scores)} track(s), dB",
                 f"{'instrument':<{width}}" + "".join(f"{name.upper():>8}" for name in SUMMARY_ORDER)]
        for instrument, values in self.medians().items():
            lines.append(f"{instrument:<{width}}" + "".join(f"{values[name]:>8.2f}" for name in SUMMARY_ORDER))
        return "\n".join(lines)

    def figure_png(self) -> bytes:
        """``figure()`` as PNG bytes."""
        buffer = io.BytesIO()
        self.figure().savefig(buffer, format="png")
        return buffer.getvalue()

    def figure(self):
        """Per instrument: the distribution of frame SDRs (box) and each track's median (dots)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(1.6 * len(self.instruments) + 2.5, 4.5), dpi=100)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        frames, medians = [], []
        for i in range(len(self.instruments)):
            sdr = np.concatenate([s.metrics.sdr[i] for s in self.scores])
            frames.append(sdr[np.isfinite(sdr)])
            track = np.array([median_over_frames(s.metrics)["sdr"][i] for s in self.scores])
            medians.append(track[np.isfinite(track)])
        positions = np.arange(1, len(self.instruments) + 1)
        axes.boxplot(frames, positions=positions, showfliers=False, widths=0.5)
        for x, values in zip(positions, medians):
            axes.plot(np.full(len(values), x, float), values, "o", color="tab:blue", alpha=0.7, markersize=4)
        axes.set_xticks(positions, self.instruments)
        axes.set_ylabel("SDR (dB), 1 s frames")
        # The checkpoint digest shortened as in the stems' folder names, and the legend on a line of its
        # own: the figure of two instruments is narrow.
        model = re.sub(r"@sha256:([0-9a-f]{12})[0-9a-f]*", r"@\1", self.model_id)
        axes.set_title(f"{model}, {len(self.scores)} track(s)\nboxes: 1 s frames, dots: track medians", fontsize=9)
        axes.grid(axis="y", alpha=0.3)
        figure.tight_layout()
        return figure

    def write(self, output: str) -> list[str]:
        """Write the two tables and the figure under ``output`` (local, gs:// or s3://); returns their URIs."""
        written = []
        for name, content, mime_type in ((FRAMES_FILE, _parquet(self.frames()), "application/vnd.apache.parquet"),
                                         (TRACKS_FILE, _parquet(self.tracks()), "application/vnd.apache.parquet"),
                                         (FIGURE_FILE, self.figure_png(), "image/png")):
            uri = storage.join(output, name)
            storage.publish_bytes(content, uri, mime_type)
            written.append(uri)
        return written


def _parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()
