"""The training records: one ``tf.train.Example`` per crop, written by Beam, read by ``tf.data``.

A record holds the crop's key (``<row>/<chunk>/<crop>``), the mixture's mean
power over the crop (``mix_power``, which the tensorflow-transform step turns
into a level relative to the whole training set) and one magnitude
spectrogram per source, ``mix`` and every instrument: float32 ``[T, F, 2]``
stored as raw little-endian bytes (parsing raw bytes is several times faster
than a float list of 100k+ values).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from models.config import SeparationConfig
from models.errors import InputError

KEY = "key"
MIX = "mix"
MIX_POWER = "mix_power"


def mean_power(magnitude: np.ndarray) -> float:
    return float(np.mean(np.square(magnitude, dtype=np.float64)))


def encode(key: str, spectrograms: dict[str, np.ndarray]) -> bytes:
    """``spectrograms``: ``mix`` and each instrument, float32 ``[T, F, 2]``."""
    feature = {
        KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[key.encode()])),
        MIX_POWER: tf.train.Feature(float_list=tf.train.FloatList(value=[mean_power(spectrograms[MIX])])),
    }
    for name, value in spectrograms.items():
        data = np.ascontiguousarray(value, dtype="<f4").tobytes()
        feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def sources(config: SeparationConfig) -> tuple[str, ...]:
    if MIX in config.instruments:
        raise InputError(f"{config.name}: an instrument cannot be called {MIX!r}")
    return (MIX,) + config.instruments


def parser(config: SeparationConfig):
    """A function ``serialized -> dict`` of ``key``, ``mix_power`` and ``[T, F, 2]`` float32 spectrograms."""
    names = sources(config)
    spec = {KEY: tf.io.FixedLenFeature([], tf.string), MIX_POWER: tf.io.FixedLenFeature([], tf.float32)}
    spec.update({name: tf.io.FixedLenFeature([], tf.string) for name in names})
    shape = (config.T, config.F, config.n_channels)

    def parse(serialized):
        example = tf.io.parse_single_example(serialized, spec)
        for name in names:
            example[name] = tf.reshape(tf.io.decode_raw(example[name], tf.float32, little_endian=True), shape)
        return example

    return parse
