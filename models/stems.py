"""One track's separated chunks, in order, into one audio file per instrument.

The one stem writer of ``beamsplitter separate`` and of the catalogue job:

    chunk stems [n_instruments, span, 2], in chunk order
      -> overlap-add (models/chunking.py) -> the samples that became final
      -> one streaming encoder per instrument, each writing under a temporary name
      -> close(): every stem renamed into place, or abort(): every stem removed,
         those already renamed included.

So a stem exists under its final name only when the whole track was
separated; a track that fails part-way leaves nothing behind. Each stem's
peak and energy are measured on the way, for the catalogue's metadata; with
``measure=True`` its loudness too (by its encoder: models/loudness.py) and,
for models with a vocals stem, the track's vocal activity
(models/vocal_activity.py).
"""

from __future__ import annotations

import numpy as np

from models.chunking import ChunkGeometry, OverlapAdd
from models.encoding import EncodeOptions, Encoder
from models.ffmpeg_process import DEFAULT_STALL_TIMEOUT
from models.loudness import Loudness
from models.vocal_activity import VocalActivity, is_instrumental

VOCALS = "vocals"


class StemWriter:
    """Writes ``outputs`` (instrument -> local path, in the model's instrument order) from one track's chunks.

    Not thread-safe: one thread feeds a writer.
    """

    def __init__(self, outputs: dict[str, str], geometry: ChunkGeometry, sample_rate: int,
                 encoding: EncodeOptions, stall_timeout: float = DEFAULT_STALL_TIMEOUT, measure: bool = False):
        self.outputs = dict(outputs)
        self.joiner = OverlapAdd(geometry)
        self.encoders: dict[str, Encoder] = {}
        try:
            for name, path in self.outputs.items():
                self.encoders[name] = Encoder(path, sample_rate, encoding.codec, encoding.bitrate,
                                              encoding.sample_format, stall_timeout, measure_loudness=measure)
        except BaseException:
            self.abort()
            raise
        self.peak = dict.fromkeys(self.outputs, 0.0)
        self.energy = dict.fromkeys(self.outputs, 0.0)
        self.n_samples: int | None = None  # the track's length, once its last chunk is in
        self.channels = 2
        self.vocal_activity = VocalActivity(sample_rate) if measure and VOCALS in self.outputs else None

    def add(self, index: int, stems: np.ndarray, n_samples: int | None = None) -> int:
        """Chunk ``index``'s stems; ``n_samples`` (the track's length) with the last chunk.

        Returns how many samples per stem became final.
        """
        try:
            final = self.joiner.add(index, stems, n_samples)
            self.channels = final.shape[-1]
            for name, samples in zip(self.outputs, final):
                self.encoders[name].write(samples)
                if samples.size:
                    self.peak[name] = max(self.peak[name], float(np.abs(samples).max()))
                    self.energy[name] += float(np.square(samples, dtype=np.float64).sum())
            if self.vocal_activity is not None and final.shape[1]:
                self.vocal_activity.add(final[list(self.outputs).index(VOCALS)], final.sum(axis=0))
        except BaseException:
            self.abort()
            raise
        if n_samples is not None:
            self.n_samples = n_samples
        return final.shape[1]

    def rms(self, name: str) -> float:
        """Root mean square of stem ``name`` over the track (full scale 1.0)."""
        return float(np.sqrt(self.energy[name] / max(1, (self.n_samples or 0) * self.channels)))

    def loudness(self, name: str) -> Loudness | None:
        """Stem ``name``'s loudness, once ``close()`` has published it; None unless measured."""
        return self.encoders[name].loudness

    def vocal_presence(self) -> tuple[float | None, bool | None]:
        """``(vocal_activity, instrumental)`` of the track; ``(None, None)`` unless measured."""
        share = self.vocal_activity.share() if self.vocal_activity is not None else None
        return share, is_instrumental(share)

    def close(self) -> None:
        """Finish every stem and move it to its final name; on any error, remove them all."""
        try:
            for encoder in self.encoders.values():
                encoder.close()
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Remove every stem of the track, published or not."""
        for encoder in self.encoders.values():
            encoder.abort()
