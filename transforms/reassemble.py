"""ReassembleTracks: a track's separated chunks back into stem files, then its completion record."""

from __future__ import annotations

import datetime
import json
import os
import tempfile

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from models import audio
from models.chunking import ChunkGeometry, OverlapAdd
from models.config import load_config
from models.engine import EncodeOptions
from models.errors import BeamsplitterError
from transforms import storage
from transforms.layout import Layout
from transforms.manifest import Failure

FAILURES = "failures"


class _Assemble(beam.DoFn):
    def __init__(self, layout: Layout, model: str, model_id: str, encoding: EncodeOptions, run_id: str,
                 batch: str):
        self.layout, self.model, self.model_id = layout, model, model_id
        self.encoding, self.run_id, self.batch = encoding, run_id, batch
        self.done = Metrics.counter("beamsplitter", "tracks_done")
        self.seconds = Metrics.counter("beamsplitter", "audio_seconds")

    def setup(self):
        self.config = load_config(self.model)
        self.geometry = ChunkGeometry.of(self.config)

    def process(self, keyed):
        track_id, chunks = keyed
        # The group holds the whole separated track: memory grows with the
        # longest track, about 21 MB per instrument and minute.
        chunks = sorted(chunks, key=lambda c: c.index)
        # A track whose decoding failed part-way lacks its last chunk: DecodeChunks
        # reported it, and nothing of it is published.
        if chunks[-1].last and [c.index for c in chunks] == list(range(len(chunks))):
            track = chunks[0].track
            try:
                rows = self._write_track(track, chunks)
            except BeamsplitterError as exc:
                yield beam.pvalue.TaggedOutput(FAILURES, Failure.of(track_id, track.uri, exc))
            else:
                self.done.inc()
                self.seconds.inc(int(round(rows[0]["duration_s"])))
                yield from rows

    def _write_track(self, track, chunks):
        config, codec = self.config, self.encoding.codec
        joiner = OverlapAdd(self.geometry)
        with tempfile.TemporaryDirectory(prefix="beamsplitter-") as scratch:
            encoders = {name: audio.Encoder(os.path.join(scratch, f"{name}.{codec}"), config.sample_rate, codec,
                                            self.encoding.bitrate, self.encoding.sample_format)
                        for name in config.instruments}
            peak = dict.fromkeys(config.instruments, 0.0)
            energy = dict.fromkeys(config.instruments, 0.0)
            try:
                for chunk in chunks:
                    final = joiner.add(chunk.index, chunk.stems, chunk.n_samples if chunk.last else None)
                    for name, samples in zip(config.instruments, final):
                        encoders[name].write(samples)
                        if samples.size:
                            peak[name] = max(peak[name], float(np.abs(samples).max()))
                            energy[name] += float(np.square(samples, dtype=np.float64).sum())
                for encoder in encoders.values():
                    encoder.close()
            except BaseException:
                for encoder in encoders.values():
                    encoder.abort()
                raise
            n_samples = chunks[-1].n_samples
            uris = {name: self.layout.stem(track.track_id, name, codec) for name in config.instruments}
            for name, uri in uris.items():
                storage.publish_file(encoders[name].path, uri)
        processed_at = datetime.datetime.now(datetime.timezone.utc)
        duration = n_samples / config.sample_rate
        rows = [{
            "track_id": track.track_id, "instrument": name, "uri": uri, "source_uri": track.uri,
            "duration_s": duration, "sample_rate": config.sample_rate, "channels": config.n_channels,
            "codec": codec, "model": self.model_id, "peak": peak[name],
            "rms": float(np.sqrt(energy[name] / max(1, n_samples * config.n_channels))),
            "run_id": self.run_id, "processed_at": processed_at,
        } for name, uri in uris.items()]
        for row in rows:  # the manifest's own columns, renamed where they clash with ours
            row.update({(f"manifest_{k}" if k in row else k): v for k, v in track.extra.items()})
        record = {
            "track_id": track.track_id, "source_uri": track.uri, "source_fingerprint": chunks[0].fingerprint,
            "model": self.model_id, "stems": uris, "run_id": self.run_id, "metadata_batch": self.batch,
            "metadata": [dict(row, processed_at=processed_at.isoformat()) for row in rows],
        }
        # Written last: its presence is what makes the track count as done.
        storage.publish_bytes(json.dumps(record, indent=1).encode(), self.layout.record(track.track_id))
        storage.remove_partials(self.layout.track_dir(track.track_id))
        return rows


class ReassembleTracks(beam.PTransform):
    """``((track_id, index), SeparatedChunk)`` -> metadata rows (dicts), plus a ``failures`` output."""

    def __init__(self, layout: Layout, model: str, model_id: str, encoding: EncodeOptions, run_id: str,
                 batch: str):
        super().__init__()
        self.assemble = _Assemble(layout, model, model_id, encoding, run_id, batch)

    def expand(self, separated):
        return (separated
                | "ByTrack" >> beam.Map(lambda kv: (kv[0][0], kv[1]))
                | "GroupChunks" >> beam.GroupByKey()
                | "Assemble" >> beam.ParDo(self.assemble).with_outputs(FAILURES, main="metadata"))
