"""DecodeCrops: a training track's mixture and stems -> its training records, decoded in parallel workers."""

from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from models import examples
from models.config import SeparationConfig
from models.crops import CropSampling, crops
from models.errors import BeamsplitterError, InputError
from transforms.catalogue import storage
from transforms.catalogue.manifest import FAILURES
from transforms.catalogue.training_manifest import TrainingTrack


class Crop(NamedTuple):
    key: str
    mix_power: float
    record: bytes  # the serialized tf.train.Example (models.examples)


def load_sources(track: TrainingTrack, sample_rate: int) -> dict[str, np.ndarray]:
    """Mixture and stems, float32 ``[n, 2]``; a stem whose length differs from the mixture's is an error."""
    sources = {name: storage.load_audio(uri, sample_rate) for name, uri in track.sources()}
    n_mix = len(sources[examples.MIX])
    for name, uri in track.stems:
        if len(sources[name]) != n_mix:
            raise InputError(f"{uri}: {len(sources[name])} samples at {sample_rate} Hz, but the mixture "
                             f"{track.mix} has {n_mix}; a stem must be exactly as long as its mixture")
    return sources


class _DecodeCrops(beam.DoFn):
    def __init__(self, params: dict, name: str, sampling: CropSampling, manifest_uri: str):
        self.params = params
        self.name = name
        self.sampling = sampling
        self.manifest_uri = manifest_uri

    def setup(self):
        self.config = SeparationConfig.from_dict(self.params, self.name)
        self.tracks = Metrics.counter("beamsplitter", "training_tracks")
        self.crops = Metrics.counter("beamsplitter", "training_crops")

    def process(self, track: TrainingTrack):
        try:
            sources = load_sources(track, self.config.sample_rate)
        except BeamsplitterError as exc:
            yield beam.pvalue.TaggedOutput(FAILURES, (track.row, f"{self.manifest_uri} row {track.row}: {exc}"))
            return
        self.tracks.inc()
        for key, spectrograms in crops(sources, self.config, self.sampling, track.name):
            self.crops.inc()
            yield Crop(key, examples.mean_power(spectrograms[examples.MIX]), examples.encode(key, spectrograms))


class DecodeCrops(beam.PTransform):
    """``TrainingTrack`` -> ``Crop`` for each of its crops, plus a ``failures`` output of ``(row, message)``."""

    def __init__(self, config: SeparationConfig, sampling: CropSampling, manifest_uri: str):
        super().__init__()
        # The configuration travels as its JSON fields: a configuration file
        # given on the driver need not exist on the workers.
        self.fn = _DecodeCrops(dict(config.raw), config.name, sampling, manifest_uri)

    def expand(self, tracks):
        return tracks | beam.ParDo(self.fn).with_outputs(FAILURES, main="crops")
