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

from dataclasses import dataclass

import numpy as np

from models.chunking import ChunkGeometry, OverlapAdd
from models.encoding import EncodeOptions, Encoder
from models.errors import InputError
from models.ffmpeg_process import DEFAULT_STALL_TIMEOUT
from models.loudness import Loudness
from models.vocal_activity import VocalActivity, is_instrumental

VOCALS = "vocals"
OTHERS_PREFIX = "no_"  # --two-stems X: X and no_X, as Demucs names them


@dataclass(frozen=True)
class StemSelection:
    """The stems a run writes: each ``names[i]`` is the mix masked by the sum of the masks of the model's
    instruments ``groups[i]`` (indices into its instrument list), with one inverse STFT.

    ``--stems a,b``: one instrument per stem, in the model's order; ``--two-stems X``: ``X`` and ``no_X``, the
    mix masked by the sum of every other instrument's mask. The masks need every instrument's estimate, so
    the network runs whole; an unasked stem costs nothing after its mask.
    """

    names: tuple[str, ...]
    groups: tuple[tuple[int, ...], ...]

    @classmethod
    def all_of(cls, instruments) -> "StemSelection":
        return cls(tuple(instruments), tuple((i,) for i in range(len(instruments))))

    @classmethod
    def of(cls, instruments, stems: str | None = None, two_stems: str | None = None,
           option: str = "--stems", two_option: str = "--two_stems") -> "StemSelection":
        """The selection that ``--stems`` (names separated by commas) or ``--two-stems`` asks of a model with
        ``instruments`` (all of them when neither is given); an InputError naming the option, the bad name and
        the model's instruments for an unknown one, or when both options are given."""
        instruments = tuple(instruments)
        if stems is not None and two_stems is not None:
            raise InputError(f"{option} and {two_option} exclude each other: give one")
        if two_stems is not None:
            if two_stems not in instruments:
                raise InputError(f"{two_option} {two_stems}: not an instrument of the model "
                                 f"(its instruments: {', '.join(instruments)})")
            rest = tuple(i for i, name in enumerate(instruments) if name != two_stems)
            return cls((two_stems, OTHERS_PREFIX + two_stems), ((instruments.index(two_stems),), rest))
        if stems is None:
            return cls.all_of(instruments)
        asked = [name.strip() for name in stems.split(",")]
        unknown = [name for name in asked if name not in instruments]
        if unknown or not asked:
            raise InputError(f"{option} {stems}: {', '.join(repr(n) for n in unknown) or 'no stem'} "
                             f"{'is' if len(unknown) < 2 else 'are'} not an instrument of the model "
                             f"(its instruments: {', '.join(instruments)})")
        return cls(tuple(name for name in instruments if name in asked),
                   tuple((i,) for i, name in enumerate(instruments) if name in asked))

    def covers_mix(self, n_instruments: int) -> bool:
        """Whether the stems add up to the whole mix as the model splits it (every instrument's mask, once)."""
        return sorted(i for group in self.groups for i in group) == list(range(n_instruments))

    def measures_vocals(self, n_instruments: int) -> bool:
        """Whether vocal presence can be measured from these stems: the vocals stem itself, and the mix."""
        return VOCALS in self.names and self.covers_mix(n_instruments)


def stem_names(instruments) -> frozenset:
    """Every stem name a model's runs may write: its instruments, and ``no_X`` for each."""
    return frozenset(instruments) | {OTHERS_PREFIX + name for name in instruments}


class StemWriter:
    """Writes ``outputs`` (stem name -> local path) from one track's chunks.

    The chunks' stems come in the order of ``names`` (default: ``outputs``' own), of which ``outputs`` may
    be a part: a run completing a track encodes only the stems it lacks. ``whole_mix``: whether ``names``
    add up to the mix (``StemSelection.covers_mix``); vocal presence is measured only then, from the
    vocals stem and their sum. Not thread-safe: one thread feeds a writer.
    """

    def __init__(self, outputs: dict[str, str], geometry: ChunkGeometry, sample_rate: int,
                 encoding: EncodeOptions, stall_timeout: float = DEFAULT_STALL_TIMEOUT, measure: bool = False,
                 names: tuple[str, ...] | None = None, whole_mix: bool = True):
        self.outputs = dict(outputs)
        self.names = tuple(outputs) if names is None else tuple(names)
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
        measures_vocals = measure and whole_mix and VOCALS in self.names
        self.vocal_activity = VocalActivity(sample_rate) if measures_vocals else None
        # The stems joined: those encoded, and all of them where the mix is measured.
        self.joined = self.names if measures_vocals else tuple(name for name in self.names if name in self.outputs)
        self.rows = [self.names.index(name) for name in self.joined]

    def add(self, index: int, stems: np.ndarray, n_samples: int | None = None) -> int:
        """Chunk ``index``'s stems (``[len(names), span, 2]``); ``n_samples`` (the track's length) with the last chunk.

        Returns how many samples per stem became final.
        """
        try:
            if len(self.rows) != len(stems):
                stems = stems[self.rows]
            final = self.joiner.add(index, stems, n_samples)
            self.channels = final.shape[-1]
            for name, samples in zip(self.joined, final):
                if name not in self.encoders:
                    continue
                self.encoders[name].write(samples)
                if samples.size:
                    self.peak[name] = max(self.peak[name], float(np.abs(samples).max()))
                    self.energy[name] += float(np.square(samples, dtype=np.float64).sum())
            if self.vocal_activity is not None and final.shape[1]:
                self.vocal_activity.add(final[self.joined.index(VOCALS)], final.sum(axis=0))
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
