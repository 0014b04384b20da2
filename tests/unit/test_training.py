"""Training maths: Spleeter's losses, fresh weights, the train step and its batch norm, crops, records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from models import crops, examples, spectral
from models.checkpoint import read_weights, write_checkpoint
from models.config import SeparationConfig, load_config
from models.errors import ConfigError
from models.separator import Separator
from models.training import (Trainer, TrainingParams, initial_weights, l1_mask_loss, weighted_l1_mask_loss)
from models.unet import variable_shapes

SMALL = {"T": 64, "F": 64, "batch_size": 2, "learning_rate": 1e-3,
         "model": {"type": "unet.unet", "params": {"conv_n_filters": [4, 8, 8, 16, 16, 32]}}}


def small_config(**overrides) -> SeparationConfig:
    params = json.loads((Path(__file__).parents[2] / "models" / "configs" / "2stems.json").read_text())
    params.update(SMALL, **overrides)
    return SeparationConfig.from_dict(params, "small")


def batch(config: SeparationConfig, size: int = 2, seed: int = 0):
    """Mixtures that are the sum of their random non-negative targets, as magnitudes roughly are."""
    rng = np.random.default_rng(seed)
    shape = (size, config.T, config.F, config.n_channels)
    targets = np.stack([rng.gamma(2.0, 1.0, shape) * (k + 1) for k in range(len(config.instruments))])
    return targets.sum(axis=0).astype(np.float32), targets.astype(np.float32)


def test_l1_mask_loss_is_the_sum_over_instruments_of_the_mean_absolute_error():
    rng = np.random.default_rng(1)
    estimates, targets = rng.normal(size=(2, 3, 8, 4, 2)), rng.normal(size=(2, 3, 8, 4, 2))
    expected = sum(np.mean(np.abs(estimates[i] - targets[i])) for i in range(2))
    assert float(l1_mask_loss(tf.constant(estimates), tf.constant(targets))) == pytest.approx(expected, rel=1e-12)
    assert float(l1_mask_loss(tf.constant(targets), tf.constant(targets))) == 0.0
    weight = targets.mean(axis=(2, 3, 4), keepdims=True)
    weighted = sum(np.mean(weight[i] * np.abs(estimates[i] - targets[i])) for i in range(2))
    assert float(weighted_l1_mask_loss(tf.constant(estimates), tf.constant(targets))) == pytest.approx(weighted)


def test_training_params_come_from_spleeter_configurations():
    params = TrainingParams.of(load_config("spleeter:4stems"))
    assert (params.learning_rate, params.batch_size, params.loss_type, params.optimizer) == (1e-4, 4, "L1_mask", "Adam")
    assert (params.chunk_duration, params.n_chunks_per_song, params.save_checkpoints_steps) == (20.0, 2, 300)
    with pytest.raises(ConfigError, match="loss_type must be one of L1_mask, weighted_L1_mask"):
        TrainingParams.of(small_config(loss_type="L2"))
    with pytest.raises(ConfigError, match="shorter than T=64 frames"):
        TrainingParams.of(small_config(chunk_duration=1.0))


def test_fresh_weights_start_like_spleeters_layers():
    config = small_config()
    weights = initial_weights(config, seed=3)
    assert set(weights) == set(variable_shapes(config))
    kernel = weights["conv2d_1/kernel"]  # 5x5, 4 input channels: He-uniform limit sqrt(6 / 100)
    assert np.abs(kernel).max() <= np.sqrt(6 / 100) and np.abs(kernel).max() > 0.9 * np.sqrt(6 / 100)
    assert np.all(weights["batch_normalization_3/gamma"] == 1) and np.all(weights["batch_normalization_3/beta"] == 0)
    assert np.all(weights["batch_normalization_3/moving_variance"] == 1)
    assert np.all(weights["conv2d_2/bias"] == 0)
    assert np.array_equal(initial_weights(config, seed=3)["conv2d/kernel"], weights["conv2d/kernel"])
    assert not np.array_equal(initial_weights(config, seed=4)["conv2d/kernel"], weights["conv2d/kernel"])


@pytest.fixture(scope="module")
def trained():
    """A small network trained 20 steps on one batch: ``(trainer, start weights, batch, loss before)``.

    It starts from non-trivial moving statistics, as a released checkpoint
    could hold them, which training must keep.
    """
    config = small_config()
    start = initial_weights(config, seed=0)
    rng = np.random.default_rng(5)
    for name in start:
        if name.endswith("moving_mean"):
            start[name] = rng.normal(0, 0.1, start[name].shape).astype(np.float32)
        elif name.endswith("moving_variance"):
            start[name] = rng.uniform(0.5, 2, start[name].shape).astype(np.float32)
    trainer = Trainer(config, start, TrainingParams.of(config))
    mix, targets = batch(config)
    before = trainer.loss(mix, targets)
    losses = [trainer.step(mix, targets) for _ in range(20)]
    assert losses[0] == pytest.approx(before, rel=1e-5)  # a step reports the loss it descended from
    return trainer, start, (mix, targets), before


@pytest.mark.slow  # training steps
def test_steps_lower_the_loss_and_leave_batch_norm_statistics_alone(trained):
    trainer, start, (mix, targets), before = trained
    after = trainer.loss(mix, targets)
    assert after < 0.8 * before, (before, after)
    assert trainer.global_step == 20
    for name, value in trainer.weights().items():
        kind = name.rsplit("/", 1)[1]
        if kind.startswith("moving_") or name.startswith("batch_normalization_5/") \
                or name.startswith("batch_normalization_17/"):
            # The statistics, and the batch norm after each U-Net's last encoder
            # convolution (which feeds nothing in Spleeter's graph), stay as loaded.
            assert np.array_equal(value, start[name]), name
        else:
            assert not np.array_equal(value, start[name]), name


@pytest.mark.slow  # training steps
def test_bf16_training_descends_as_fp32_does_and_keeps_float32_weights():
    """``train --precision bf16``: bfloat16 convolutions, forward and backward, over float32 variables."""
    config = small_config()
    start = initial_weights(config, seed=0)
    mix, targets = batch(config)
    losses = {}
    for precision in ("fp32", "bf16"):
        trainer = Trainer(config, start, TrainingParams.of(config), precision=precision)
        losses[precision] = [trainer.step(mix, targets) for _ in range(15)] + [trainer.loss(mix, targets)]
        weights = trainer.weights()
        assert all(value.dtype == np.float32 for value in weights.values())
        assert not np.array_equal(weights["conv2d_transpose_3/kernel"], start["conv2d_transpose_3/kernel"])
    fp32, bf16 = losses["fp32"], losses["bf16"]
    assert bf16[0] != fp32[0]  # the convolutions really ran in bfloat16 ...
    assert bf16[0] == pytest.approx(fp32[0], rel=0.02)  # ... to bfloat16's 8 bits of mantissa
    assert bf16[-1] < 0.8 * bf16[0], bf16
    assert bf16[-1] == pytest.approx(fp32[-1], rel=0.1), (fp32, bf16)


@pytest.mark.slow  # training steps
def test_the_written_checkpoint_computes_what_training_optimised(trained, tmp_path):
    """Inference from the written checkpoint gives the estimates, hence the loss, that training saw."""
    trainer, _, (mix, targets), _ = trained
    write_checkpoint(tmp_path, trainer.weights(), trainer.global_step)
    separator = Separator(trainer.config, read_weights(tmp_path, trainer.config))
    inferred = float(l1_mask_loss(tf.constant(separator.estimate(mix)), tf.constant(targets)))
    assert inferred == pytest.approx(trainer.loss(mix, targets), rel=1e-6)
    assert int(tf.train.load_checkpoint(str(tmp_path / "model")).get_tensor("global_step")) == 20


def test_chunks_sit_where_spleeter_puts_them():
    rate = 100
    # 60 s, two chunks of 20 s between half-second margins: at 0.5 s and 60 - 20 - 0.5 s.
    assert crops.chunk_spans(60 * rate, rate, 20.0, 2) == [(50, 2050), (3950, 5950)]
    assert crops.chunk_spans(60 * rate, rate, 20.0, 3) == [(50, 2050), (2000, 4000), (3950, 5950)]
    assert crops.chunk_spans(60 * rate, rate, 20.0, 1) == [(2000, 4000)]
    # Too short for two distinct chunks: one, the whole track.
    assert crops.chunk_spans(15 * rate, rate, 20.0, 2) == [(0, 1500)]


def test_crops_are_synchronized_reproducible_and_cut_from_the_right_frames():
    config = small_config()
    sampling = crops.CropSampling(chunk_duration=20.0, n_chunks=1, crops_per_chunk=3, seed=7)
    rng = np.random.default_rng(0)
    mix = rng.normal(0, 0.1, (3 * config.sample_rate, 2)).astype(np.float32)
    sources = {"mix": mix, "vocals": 0.25 * mix, "accompaniment": 0.75 * mix}
    made = list(crops.crops(sources, config, sampling, "song"))
    assert [key for key, _ in made] == ["song/0/0", "song/0/1", "song/0/2"]
    whole = spectral.magnitude(spectral.stft(mix, config.frame_length, config.frame_step), config.F).numpy()
    for _, spectrograms in made:
        assert spectrograms["mix"].shape == (config.T, config.F, 2)
        # The same frames from every source.
        np.testing.assert_allclose(spectrograms["vocals"], 0.25 * spectrograms["mix"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(spectrograms["accompaniment"], 0.75 * spectrograms["mix"], rtol=1e-5, atol=1e-6)
        # A run of T whole frames of the track's own STFT.
        errors = [np.abs(whole[s:s + config.T] - spectrograms["mix"]).max() for s in range(len(whole) - config.T + 1)]
        assert min(errors) < 1e-4
    again = list(crops.crops(sources, config, sampling, "song"))
    assert all(np.array_equal(a[1]["mix"], b[1]["mix"]) for a, b in zip(made, again))
    other = list(crops.crops(sources, config, crops.CropSampling(20.0, 1, 3, seed=8), "song"))
    assert not all(np.array_equal(a[1]["mix"], b[1]["mix"]) for a, b in zip(made, other))
    too_short = {name: s[: config.frame_length] for name, s in sources.items()}
    assert list(crops.crops(too_short, config, sampling, "short")) == []


def test_augmentation_stretches_time_and_shifts_pitch_alike_for_every_source():
    magnitude = np.zeros((10, 200, 2))
    magnitude[:, 40] = 1.0
    np.testing.assert_array_equal(crops.pitch_shift(magnitude, 0.0), magnitude)
    octave_up = crops.pitch_shift(magnitude, 12.0)
    assert octave_up.shape == magnitude.shape and np.argmax(octave_up[0, :, 0]) == 80
    down = crops.pitch_shift(magnitude, -12.0)
    assert np.argmax(down[0, :, 0]) == 20 and np.all(down[:, 100:] == 0)
    ramp = np.arange(11, dtype=float)[:, None, None] * np.ones((1, 3, 2))
    np.testing.assert_allclose(crops.time_stretch(ramp, 21)[:, 0, 0], np.arange(21) / 2)
    config = small_config()
    rng = np.random.default_rng(4)
    mix = rng.normal(0, 0.1, (3 * config.sample_rate, 2)).astype(np.float32)
    augmented = list(crops.crops({"mix": mix, "vocals": 0.5 * mix}, config,
                                 crops.CropSampling(20.0, 1, 2, seed=1, augment=True), "song"))
    plain = list(crops.crops({"mix": mix, "vocals": 0.5 * mix}, config, crops.CropSampling(20.0, 1, 2, seed=1), "song"))
    assert len(augmented) == 2
    for (_, a), (_, p) in zip(augmented, plain):
        assert a["mix"].shape == (config.T, config.F, 2)
        np.testing.assert_allclose(a["vocals"], 0.5 * a["mix"], rtol=1e-5, atol=1e-6)
        assert not np.allclose(a["mix"], p["mix"])


def test_records_round_trip():
    config = small_config()
    rng = np.random.default_rng(2)
    spectrograms = {name: rng.random((config.T, config.F, 2), dtype=np.float32)
                    for name in ("mix", "vocals", "accompaniment")}
    parsed = examples.parser(config)(tf.constant(examples.encode("song/0/1", spectrograms)))
    assert parsed["key"].numpy() == b"song/0/1"
    assert float(parsed["mix_power"]) == pytest.approx(np.mean(spectrograms["mix"].astype(np.float64) ** 2), rel=1e-6)
    for name, value in spectrograms.items():
        np.testing.assert_array_equal(parsed[name].numpy(), value)


def test_training_manifests_in_every_format(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from models.errors import InputError
    from transforms.catalogue.training_manifest import read_training_manifest

    instruments = ("vocals", "accompaniment")
    (tmp_path / "train.jsonl").write_text(
        '{"mixture": "a/mix.wav", "vocals_path": "a/v.wav", "accompaniment_path": "gs://bucket/a/acc.wav"}\n'
        '{"mixture": "/abs/mix.wav", "vocals_path": "v.wav", "accompaniment_path": "acc.wav", "duration": 3}\n')
    first, second = read_training_manifest(str(tmp_path / "train.jsonl"), instruments)
    assert (first.row, first.name, first.mix) == (1, "a/mix.wav", str(tmp_path / "a" / "mix.wav"))
    assert first.sources() == (("mix", str(tmp_path / "a" / "mix.wav")), ("vocals", str(tmp_path / "a" / "v.wav")),
                               ("accompaniment", "gs://bucket/a/acc.wav"))
    assert (second.mix, second.stems[1][1]) == ("/abs/mix.wav", str(tmp_path / "acc.wav"))
    pq.write_table(pa.table({"mix_path": ["m.wav"], "vocals_path": ["v.wav"], "accompaniment_path": ["a.wav"]}),
                   tmp_path / "train.parquet")
    assert read_training_manifest(str(tmp_path / "train.parquet"), instruments)[0].mix == str(tmp_path / "m.wav")
    (tmp_path / "bad.csv").write_text("mix_path,vocals_path,accompaniment_path\nm.wav,,a.wav\nm.wav,v.wav,ftp://x/a.wav\n")
    with pytest.raises(InputError) as failure:
        read_training_manifest(str(tmp_path / "bad.csv"), instruments)
    assert "bad.csv row 1: empty vocals_path" in str(failure.value)
    assert "bad.csv row 2: unsupported scheme ftp://" in str(failure.value)
