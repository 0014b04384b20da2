"""The training set's full-pass statistics, with tensorflow-transform.

Training needs two things that depend on the whole training set:

* which crops are silent: a crop whose mixture is more than ``min_level_db``
  below the training set's mean power (intros, fade-outs, gaps between
  songs) teaches the masks nothing and only dilutes the batches. The
  reference is a dataset-wide mean (``tft.mean``), so the threshold follows
  the dataset's own loudness instead of an absolute level;
* how many crops are kept, which makes an epoch's step count.

The transform graph maps a crop's ``mix_power`` to its ``level_db`` (relative
to that reference) and ``keep``; the training input pipeline applies it to
every record it reads, and the Beam job counts its ``keep`` over the set.
Only the crops' mean powers go through tensorflow-transform: the
spectrograms themselves go straight to the records.
"""

from __future__ import annotations

import functools
import math

import apache_beam as beam
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from models.examples import MIX_POWER

LEVEL_DB = "level_db"
KEEP = "keep"
REFERENCE_DB = "reference_db"
# Digital silence has zero power; this floor puts it some 200 dB down rather than at -inf.
POWER_FLOOR = 1e-20

RAW_METADATA = dataset_metadata.DatasetMetadata(
    schema_utils.schema_from_feature_spec({MIX_POWER: tf.io.FixedLenFeature([], tf.float32)}))


def _db(power):
    return 10.0 * tf.math.log(tf.maximum(power, POWER_FLOOR)) / math.log(10.0)


def preprocessing_fn(inputs, min_level_db: float):
    power = inputs[MIX_POWER]
    reference = tft.mean(power)
    level = _db(power) - _db(reference)
    return {
        LEVEL_DB: level,
        KEEP: tf.cast(level >= min_level_db, tf.int64),
        REFERENCE_DB: tf.fill(tf.shape(power), _db(reference)),
    }


class AnalyzeCropLevels(beam.PTransform):
    """Crops' ``mix_power`` -> ``(levels, transform_fn)``: each crop's transformed features, and the graph.

    Must be applied inside ``tft_beam.Context(temp_dir=...)``.
    """

    def __init__(self, min_level_db: float):
        super().__init__()
        self.min_level_db = min_level_db

    def expand(self, powers):
        fn = functools.partial(preprocessing_fn, min_level_db=self.min_level_db)
        inputs = powers | "AsInstances" >> beam.Map(lambda power: {MIX_POWER: power})
        (levels, _), transform_fn = (inputs, RAW_METADATA) | tft_beam.AnalyzeAndTransformDataset(fn)
        return levels, transform_fn


class LevelStats(beam.CombineFn):
    """Transformed crops -> ``{"crops", "kept", "reference_db"}``."""

    def create_accumulator(self):
        return 0, 0, None

    def add_input(self, accumulator, levels):
        crops, kept, reference = accumulator
        return crops + 1, kept + int(levels[KEEP]), float(levels[REFERENCE_DB])

    def merge_accumulators(self, accumulators):
        crops = kept = 0
        reference = None
        for c, k, r in accumulators:
            crops, kept, reference = crops + c, kept + k, r if r is not None else reference
        return crops, kept, reference

    def extract_output(self, accumulator):
        crops, kept, reference = accumulator
        return {"crops": crops, "kept": kept, "reference_db": reference}


def keep_filter(transform_dir: str):
    """``example -> bool``: the exported transform graph's ``keep``, for ``tf.data.Dataset.filter``."""
    layer = tft.TFTransformOutput(transform_dir).transform_features_layer()

    def keep(example):
        levels = layer({MIX_POWER: tf.reshape(example[MIX_POWER], [1])})
        return levels[KEEP][0] > 0

    return keep
