"""Configurations, the U-Net's variables, checkpoint I/O and SavedModel export."""

import json

import numpy as np
import pytest
import tensorflow as tf

from models.checkpoint import random_weights, read_weights, write_checkpoint
from models.config import embedded_names, load_config
from models.errors import ConfigError, ModelError
from models.export import export_saved_model
from models.separator import Separator
from models.training import initial_weights
from models.unet import he_uniform, kernel_fans, variable_shapes


def test_embedded_configurations():
    assert embedded_names() == [f"spleeter:{n}{s}" for n in ("2stems", "4stems", "5stems") for s in ("", "-16kHz")]
    five = load_config("spleeter:5stems-16kHz")
    assert five.instruments == ("vocals", "piano", "drums", "bass", "other")
    assert (five.F, five.softmax, five.conv_activation, five.model_dir) == (1536, True, "ELU", "5stems")
    two = load_config("spleeter:2stems")
    assert (two.F, two.softmax, two.conv_activation, two.deconv_activation) == (1024, False, "LeakyReLU", "ReLU")


def test_unknown_and_malformed_configurations(tmp_path):
    with pytest.raises(ConfigError, match="unknown model configuration 'spleeter:3stems'.*spleeter:4stems"):
        load_config("spleeter:3stems")
    with pytest.raises(ConfigError, match="neither an embedded name"):
        load_config(str(tmp_path / "nope.json"))
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ConfigError, match="broken.json: cannot read JSON"):
        load_config(str(tmp_path / "broken.json"))
    params = dict(load_config("spleeter:2stems").raw)
    del params["frame_step"]
    (tmp_path / "nostep.json").write_text(json.dumps(params))
    with pytest.raises(ConfigError, match="missing field 'frame_step'"):
        load_config(str(tmp_path / "nostep.json"))
    params.update(frame_step=1024, F=1000, mask_extension="wild")
    (tmp_path / "bad.json").write_text(json.dumps(params))
    with pytest.raises(ConfigError, match="mask_extension must be one of.*F must be"):
        load_config(str(tmp_path / "bad.json"))


def test_own_json_configuration(tmp_path):
    params = load_config("spleeter:4stems").raw | {"instrument_list": ["lead", "rest"]}
    (tmp_path / "duo.json").write_text(json.dumps(params))
    config = load_config(str(tmp_path / "duo.json"))
    assert config.name == "duo" and config.instruments == ("lead", "rest")


def test_variables_match_the_released_checkpoint(checkpoint_2stems):
    reader = tf.train.load_checkpoint(str(checkpoint_2stems / "model"))
    released = {k: tuple(v) for k, v in reader.get_variable_to_shape_map().items() if k != "global_step"}
    assert variable_shapes(load_config("spleeter:2stems")) == released


@pytest.mark.parametrize("layer, channels_in", [("Conv2D", 2), ("Conv2DTranspose", 512)])
def test_kernels_are_drawn_as_keras_draws_them(layer, channels_in):
    """Keras' He-uniform fan-in of a Conv2D kernel and of a Conv2DTranspose one ([kh, kw, out, in]),
    whose fan-in Keras takes from its output channels: both initialisers draw within Keras' limit."""
    import keras
    from keras.src.initializers.random_initializers import compute_fans

    built = getattr(keras.layers, layer)(256, 5, kernel_initializer="he_uniform")
    built.build((None, 64, 64, channels_in))
    shape = tuple(built.kernel.shape)
    assert kernel_fans(shape) == compute_fans(shape)
    limit = np.sqrt(6.0 / compute_fans(shape)[0])
    for kernel in (built.kernel.numpy(), he_uniform(shape, np.random.default_rng(0))):
        assert 0.99 * limit < np.abs(kernel).max() <= limit

    # The networks' own kernels, fresh (training) and random (tests, at scale 1), follow the same rule.
    config = load_config("spleeter:2stems")
    for weights in (initial_weights(config, seed=0), random_weights(config, seed=0, scale=1.0)):
        for name in ("conv2d_1/kernel", "conv2d_transpose_1/kernel"):  # [5, 5, 16, 32], [5, 5, 128, 512]
            kernel = weights[name]
            limit = np.sqrt(6.0 / compute_fans(kernel.shape)[0])
            assert 0.99 * limit < np.abs(kernel).max() <= limit * (1 + 1e-6), name


def test_checkpoint_round_trip_and_clear_errors(tmp_path, checkpoint_2stems):
    config = load_config("spleeter:4stems")
    weights = random_weights(config, seed=1)
    write_checkpoint(tmp_path / "4stems", weights)
    loaded = read_weights(tmp_path / "4stems", config)
    assert all(np.array_equal(loaded[k], weights[k]) for k in weights)

    with pytest.raises(ModelError, match="no variable 'conv2d_14/kernel' needed by spleeter:4stems"):
        read_weights(checkpoint_2stems, config)
    bent = dict(weights, **{"conv2d_3/bias": np.zeros(7, np.float32)})
    write_checkpoint(tmp_path / "bent", bent)
    with pytest.raises(ModelError, match=r"'conv2d_3/bias' has shape \(7,\), spleeter:4stems needs \(128,\)"):
        read_weights(tmp_path / "bent", config)
    with pytest.raises(ModelError, match="not a Spleeter checkpoint"):
        read_weights(tmp_path, config)


def test_softmax_masks_share_the_input():
    config = load_config("spleeter:5stems")
    separator = Separator(config, random_weights(config, seed=2))
    magnitude = np.random.default_rng(0).random((1, config.T, config.F, 2)).astype(np.float32)
    estimates = separator.estimate(magnitude)
    assert estimates.shape == (5, 1, config.T, config.F, 2)
    np.testing.assert_allclose(estimates.sum(axis=0), magnitude, rtol=1e-4, atol=1e-6)
    # and the random model is not degenerate: the instruments get different shares
    assert np.std(estimates.mean(axis=(1, 2, 3, 4))) > 1e-3


@pytest.mark.slow  # a SavedModel exported and served
def test_saved_model_serves_the_same_estimates(tmp_path):
    config = load_config("spleeter:2stems-16kHz")
    separator = Separator(config, random_weights(config, seed=3))
    export_saved_model(separator, str(tmp_path / "saved"))
    served = tf.saved_model.load(str(tmp_path / "saved")).signatures["serving_default"]
    magnitude = np.random.default_rng(1).random((2, config.T, config.F, 2)).astype(np.float32)
    outputs = served(magnitude=tf.constant(magnitude))
    assert sorted(outputs) == ["accompaniment", "vocals"]
    expected = separator.estimate(magnitude)
    for i, name in enumerate(config.instruments):
        np.testing.assert_allclose(outputs[name].numpy(), expected[i], rtol=1e-5, atol=1e-6)
